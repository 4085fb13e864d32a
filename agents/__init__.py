"""Rerankers, baselines, evaluation, and the ``rerank-env`` command line.

This is the top layer: it may import :mod:`rerank_env` and :mod:`simulators`. The
command line lives here because ``compare`` needs every layer.
"""
