"""Raw data loaders and the ratings-to-reranking-requests pipeline."""
