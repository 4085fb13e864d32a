"""Raw data loaders and the ratings-to-reranking-requests pipeline.

Typical use::

    from simulators.data import load_rerank_data

    data = load_rerank_data("ml-100k")  # built once, then read from the cache
    print(data.summary())
    test = data.split_indices("test")
    candidates = data.candidates[test]  # [requests, N] in the retriever's order
"""

from simulators.data.datasets import cache_path, load_rerank_data
from simulators.data.errors import (
    CacheError,
    ConfigError,
    DataError,
    DataFormatError,
    DataNotFoundError,
)
from simulators.data.movielens import MovieLensData, load_ml1m, load_ml100k, load_movielens
from simulators.data.open_bandit import OpenBanditData, load_open_bandit
from simulators.data.paths import cache_dir, find_dataset_dir
from simulators.data.pipeline import RerankData, build_rerank_data
from simulators.data.pipeline_config import PipelineConfig

__all__ = [
    "CacheError",
    "ConfigError",
    "DataError",
    "DataFormatError",
    "DataNotFoundError",
    "MovieLensData",
    "OpenBanditData",
    "PipelineConfig",
    "RerankData",
    "build_rerank_data",
    "cache_dir",
    "cache_path",
    "find_dataset_dir",
    "load_ml100k",
    "load_ml1m",
    "load_movielens",
    "load_open_bandit",
    "load_rerank_data",
]
