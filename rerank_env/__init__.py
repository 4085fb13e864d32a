"""Gymnasium environments for slate reranking.

This layer may import :mod:`simulators`, never :mod:`agents`.
"""

__version__ = "0.1.0"
