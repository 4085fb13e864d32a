"""Top-k retrieval of batches of requests, the machinery every retriever shares.

:class:`RetrievalRequests` describes the requests (prefix histories, request
times, which items each may retrieve); :func:`chunked_top_k` runs a retriever's
per-chunk top-k on a few threads; :func:`top_items` is the exact, total-order
top-k of a score matrix. The retrievers themselves live in
:mod:`simulators.data.retrieval`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from simulators.progress import progress_bar

#: ``(top, top_scores, item_scores)`` of a batch of requests (see
#: :meth:`simulators.data.retrieval.Retriever.top_k`).
TopK = tuple[np.ndarray, np.ndarray, np.ndarray]

#: A retriever's ``score_prefixes(items, starts, ends)``: float32 ``[R, I]`` scores.
ScorePrefixes = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def history_matrix(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_items: int
) -> sp.csr_matrix:
    """Binary request-by-item matrix of the histories ``items[starts[r]:ends[r]]``."""
    lengths = ends - starts
    indptr = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    flat = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    data = np.ones(indptr[-1], dtype=np.float64)
    return sp.csr_matrix((data, items[flat], indptr), shape=(len(starts), n_items))


@dataclass(frozen=True)
class RetrievalRequests:
    """Requests to retrieve for: prefix histories, request times, what may be retrieved.

    Request ``r``'s history is ``items[history_starts[r]:history_ends[r]]``. History
    items and items not yet available at the request time are never retrieved.
    Rows with an empty history (a user's first slate) are scored by ``fallback``,
    since ALS fold-in and item-kNN give them all-equal scores.

    Attributes:
        items: The users' time-ordered items, int64 ``[M]``.
        history_starts: int64 ``[R]``.
        history_ends: int64 ``[R]``.
        time: Request time, int64 ``[R]``.
        available_from: Time from which each item can be retrieved (its first
            training rating; the int64 maximum for never), int64 ``[I]``.
        fallback: Scores of every item for an empty history (training
            popularity), float32 ``[I]``.
    """

    items: np.ndarray
    history_starts: np.ndarray
    history_ends: np.ndarray
    time: np.ndarray
    available_from: np.ndarray
    fallback: np.ndarray

    def __len__(self) -> int:
        """Number of requests."""
        return len(self.history_starts)

    def histories(self, rows: slice | np.ndarray) -> sp.csr_matrix:
        """Binary request-by-item history matrix of requests ``rows``."""
        starts, ends = self.history_starts[rows], self.history_ends[rows]
        return history_matrix(self.items, starts, ends, len(self.fallback))

    def mask(self, rows: slice | np.ndarray, scores: np.ndarray) -> None:
        """Set to -inf the scores of history items and of unavailable items, in place."""
        unavailable = self.available_from[None, :] > self.time[rows, None]
        np.copyto(scores, -np.inf, where=unavailable)
        scores[self.histories(rows).nonzero()] = -np.inf


def full_scores(
    score_prefixes: ScorePrefixes, requests: RetrievalRequests, rows: slice
) -> np.ndarray:
    """Scores of every item for requests ``rows`` (before masking), float32 ``[rows, I]``.

    Args:
        score_prefixes: The retriever's ``score_prefixes``.
        requests: The requests.
        rows: Which of them.
    """
    starts, ends = requests.history_starts[rows], requests.history_ends[rows]
    scores = score_prefixes(requests.items, starts, ends)
    scores[ends == starts] = requests.fallback
    return scores


def scored_top_k(
    score_prefixes: ScorePrefixes,
    requests: RetrievalRequests,
    rows: slice,
    size: int,
    score_items: np.ndarray,
) -> TopK:
    """Top-k of requests ``rows`` by scoring every item in full with ``score_prefixes``.

    The plain form of :meth:`~simulators.data.retrieval.Retriever.top_k` for one
    chunk (the item-kNN and popularity retrievers use it).
    """
    scores = full_scores(score_prefixes, requests, rows)
    logged_scores = np.take_along_axis(scores, score_items, axis=1)
    requests.mask(rows, scores)
    top = top_items(scores, size)
    return top, np.take_along_axis(scores, top, axis=1), logged_scores


def top_items(scores: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` best items per row, best first; ties by lower index.

    A total order, so the result never depends on the CPU's code path: the same as
    ``np.argsort(-scores, axis=1, kind="stable")[:, :size]`` for NaN-free scores, in
    linear time (``torch.topk``), which at 59,000 items is about 60 times faster than
    the sort (most of the pipeline's time otherwise).
    """
    import torch  # noqa: PLC0415  (the data package imports torch only where it helps)

    if size >= scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")[:, :size]
    values, columns = torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), size + 1, dim=1)
    # Where the next best item ties with the size-th, topk's choice among the tied
    # items is arbitrary: those rows (rare) are sorted in full; elsewhere the set is
    # exact and only needs the order.
    partial = (values[:, size] == values[:, size - 1]).numpy()
    columns = np.sort(columns[:, :size].numpy(), axis=1)
    order = np.argsort(-np.take_along_axis(scores, columns, axis=1), axis=1, kind="stable")
    columns = np.take_along_axis(columns, order, axis=1)
    rows = np.flatnonzero(partial)
    if len(rows):
        columns[rows] = np.argsort(-scores[rows], axis=1, kind="stable")[:, :size]
    return columns


def chunks_by_history(
    starts: np.ndarray, ends: np.ndarray, rows: int = 2048, entries: int = 1 << 24
) -> Iterator[slice]:
    """Consecutive request slices of at most ``rows`` requests and ``entries`` history items.

    At ML-25M size one heavy user's histories hold tens of millions of items and all
    of them close to a billion, so history matrices are built a slice at a time (a
    slice holds at least one request).
    """
    total = np.cumsum(ends - starts)
    start = 0
    while start < len(starts):
        before = total[start - 1] if start else 0
        stop = int(np.searchsorted(total, before + entries, side="right"))
        stop = min(max(stop, start + 1), start + rows)
        yield slice(start, stop)
        start = stop


def chunked_top_k(
    requests: RetrievalRequests,
    size: int,
    score_items: np.ndarray,
    chunk_top_k: Callable[[slice, np.ndarray], TopK],
    *,
    progress: bool = False,
    workers: int | None = None,
) -> TopK:
    """Top-k of all requests, from ``chunk_top_k(rows, score_items[rows])`` per chunk.

    The driver of every :meth:`~simulators.data.retrieval.Retriever.top_k`.

    Chunks of requests are independent and run on ``workers`` threads (default: one
    per core, at most 4; each holds a chunk's scores, about 0.5 GB at ML-25M size):
    most of a chunk's work is numpy and torch calls that release the GIL, half of
    it single-threaded, so threads keep the cores busy. The result does not depend
    on the number of threads (tested).
    """
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    n = len(requests)
    top = np.empty((n, size), dtype=np.int64)
    top_scores = np.empty((n, size), dtype=np.float32)
    item_scores_out = np.empty(score_items.shape, dtype=np.float32)
    chunks = list(chunks_by_history(requests.history_starts, requests.history_ends))

    def retrieve(rows: slice) -> None:
        top[rows], top_scores[rows], item_scores_out[rows] = chunk_top_k(rows, score_items[rows])

    # Minutes at ML-25M size (4M requests): worth a bar of its own.
    bar = progress_bar(description="retrieving candidates", enabled=progress, total=len(chunks))
    # One BLAS thread per worker, set here once: threadpoolctl's limits are
    # process-wide, so the retrievers' own one-thread sections then nest safely.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(retrieve, chunks):
            bar.update(1)
    bar.close()
    return top, top_scores, item_scores_out
