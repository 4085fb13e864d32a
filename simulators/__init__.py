"""User-click simulators and the data they are learned from.

This layer imports neither :mod:`rerank_env` nor :mod:`agents`.
"""
