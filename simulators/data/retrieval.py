"""Candidate retrievers: the upstream stage whose top-N a reranker reorders.

A retriever is fitted on the *training split only* and then scores every item for a
request from the user's history *before the request time*, so it never sees the
future. Three are provided:

* :class:`ImplicitALS`: matrix factorisation for implicit feedback (Hu, Koren and
  Volinsky, 2008) fitted by alternating least squares; a request's user vector is
  folded in from its history with the item factors held fixed, so users' newest
  interactions count even though the factors were learned on training data.
* :class:`ItemKNN`: item-item cosine similarity on training co-occurrences, a
  request's score is the summed similarity of an item to the history.
* :class:`Popularity`: training interaction counts (a reference point only).

Each retriever's :meth:`~Retriever.top_k` retrieves the best items of a batch of
:class:`RetrievalRequests` (history items and items not yet available excluded),
a chunk of requests at a time on a few threads; :class:`ImplicitALS` scores in
float32 and certifies each row's ranking in float64 (the float64 ranking, faster).
"""

from __future__ import annotations

import typing
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from simulators.data.top_k import (
    RetrievalRequests,
    TopK,
    chunked_top_k,
    history_matrix,
    scored_top_k,
    top_items,
)


class Retriever(Protocol):
    """What the request builder needs from a retriever."""

    name: str

    def fit(self, user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> None:
        """Fit on training interactions given as parallel user and item index arrays."""

    def score(self, histories: sp.csr_matrix) -> np.ndarray:
        """Score every item for each row of a binary request-by-item history matrix.

        Returns:
            float32 ``[requests, items]`` scores, higher is better.
        """

    def score_prefixes(self, items: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """:meth:`score` of the histories ``items[starts[r]:ends[r]]`` (one per request).

        The request builder's form: a request's history is a prefix of its user's
        time-ordered items, and consecutive requests of a user extend it.
        """

    def top_k(
        self,
        requests: RetrievalRequests,
        size: int,
        score_items: np.ndarray,
        *,
        progress: bool = False,
        workers: int | None = None,
    ) -> TopK:
        """The ``size`` best items of every request, and the scores of some given items.

        Args:
            requests: The requests, with what each may retrieve.
            size: Items kept per request.
            score_items: Items to report the scores of, int ``[R, S]`` (e.g. each
                request's logged slate), scored before masking.
            progress: Show a progress bar over the chunks of requests.
            workers: Threads (default: one per core, at most 4).

        Returns:
            ``(top, top_scores, item_scores)``: int64 ``[R, size]`` best items first
            (ties by lower index), their float32 scores, and the float32 scores of
            ``score_items``. Excluded items score -inf.
        """

    def item_representations(self, n_items: int) -> np.ndarray:
        """The retriever's own item vectors, float32 ``[n_items, d]`` (``d = 0``: none).

        What a downstream reranker may read of the retriever (ALS: its item factors).
        """

    def user_representations(self, n_users: int) -> np.ndarray:
        """The retriever's own user vectors, float32 ``[n_users, d]`` (``d = 0``: none).

        Fitted on the training interactions only (ALS: its user factors; a user with
        none has a zero vector).
        """


class ImplicitALS:
    """Implicit-feedback matrix factorisation by alternating least squares.

    Every observed interaction has confidence ``1 + alpha`` and preference 1; all
    other pairs have confidence 1 and preference 0.

    Args:
        factors: Latent dimension.
        regularization: L2 weight on the factors.
        alpha: Confidence of observed interactions above unobserved ones.
        iterations: ALS sweeps (users then items).
        seed: Seed of the factor initialisation.
    """

    name = "mf"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 50.0,
        alpha: float = 10.0,
        iterations: int = 10,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.item_factors: np.ndarray | None = None
        self.user_factors: np.ndarray | None = None

    def fit(self, user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> None:
        """Fit user and item factors (float32 ``item_factors`` and ``user_factors``).

        ``user_factors`` are solved once more against the final item factors, so each
        is the user's least-squares fit to them (what :meth:`fold_in_prefixes` gives
        for the user's whole training history).
        """
        rng = np.random.default_rng(self.seed)
        by_user = sp.csr_matrix(
            (np.ones(len(user), dtype=np.float64), (user, item)), shape=(n_users, n_items)
        )
        by_item = by_user.T.tocsr()
        item_factors = rng.normal(0.0, 0.01, size=(n_items, self.factors))
        for _ in range(self.iterations):
            user_factors = self._solve(item_factors, by_user)
            item_factors = self._solve(user_factors, by_item)
        self.item_factors = item_factors.astype(np.float32)
        self.user_factors = self._solve(item_factors, by_user).astype(np.float32)

    def _solve(self, fixed: np.ndarray, rows: sp.csr_matrix) -> np.ndarray:
        # Closed-form least squares for every row given the other side's factors.
        # Thousands of tiny products and solves: a multi-threaded BLAS only adds
        # hand-off cost, and on a busy machine its spinning threads made builds 10-30x
        # slower (measured), so one thread.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._solve_rows(fixed, rows)

    def _solve_rows(self, fixed: np.ndarray, rows: sp.csr_matrix, batch: int = 1024) -> np.ndarray:
        gram = fixed.T @ fixed + self.regularization * np.eye(self.factors)
        out = np.zeros((rows.shape[0], self.factors))
        filled = np.flatnonzero(np.diff(rows.indptr) > 0)
        # The solves are batched (one LAPACK call per matrix either way, but without
        # numpy's per-call overhead, which was most of a fit's time).
        for group in np.array_split(filled, max(1, -(-len(filled) // batch))):
            lhs = np.empty((len(group), self.factors, self.factors))
            rhs = np.empty((len(group), self.factors, 1))
            for k, row in enumerate(group):
                observed = fixed[rows.indices[rows.indptr[row] : rows.indptr[row + 1]]]
                lhs[k] = gram + self.alpha * observed.T @ observed
                rhs[k, :, 0] = (1.0 + self.alpha) * observed.sum(axis=0)
            out[group] = np.linalg.solve(lhs, rhs)[..., 0]
        return out

    def score(self, histories: sp.csr_matrix) -> np.ndarray:
        """Fold each history into a user vector and score every item."""
        if self.item_factors is None:
            raise RuntimeError("ImplicitALS.score() called before fit()")
        item_factors = self.item_factors.astype(np.float64)
        users = self._solve(item_factors, histories)
        return item_scores(users, item_factors)

    def score_prefixes(self, items: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """:meth:`score` of prefix histories, in time linear in the items they add.

        Same result as :meth:`score` up to float summation order (see
        :meth:`fold_in_prefixes`).
        """
        users = self.fold_in_prefixes(items, starts, ends)
        return item_scores(users, self.item_factors.astype(np.float64))

    def fold_in_prefixes(
        self, items: np.ndarray, starts: np.ndarray, ends: np.ndarray
    ) -> np.ndarray:
        """Float64 user vectors ``[R, factors]`` of the histories ``items[starts[r]:ends[r]]``.

        The fold-in solves ``(G + alpha Q^T Q) p = (1 + alpha) Q^T 1`` for a history's
        item factors ``Q``: both sums are additive over the history. A request that
        extends the previous one's history (same start, later end: the next slate of
        the same user) adds only its new items' terms to the running sums, instead
        of recomputing ``Q^T Q`` over a history of up to tens of thousands of items;
        the solves are then batched.
        """
        if self.item_factors is None:
            raise RuntimeError("ImplicitALS.fold_in_prefixes() called before fit()")
        factors = self.item_factors.astype(np.float64)
        k = self.factors
        continues = np.zeros(len(starts), dtype=bool)
        continues[1:] = (starts[1:] == starts[:-1]) & (ends[1:] >= ends[:-1])
        added_from = np.where(continues, np.r_[0, ends[:-1]], starts)
        # Each request's added terms: a batched product where the request adds the
        # usual slate's worth of items, one product each otherwise (segment starts).
        gram_added = np.zeros((len(starts), k, k))  # the added terms, then running sums
        sum_added = np.zeros((len(starts), k))
        added = ends - added_from
        with threadpool_limits(limits=1, user_api="blas"):
            common = np.bincount(added).argmax() if len(added) else 0
            same = np.flatnonzero(added == common)
            if common > 0 and len(same):
                block = factors[items[added_from[same, None] + np.arange(common)]]
                gram_added[same] = np.matmul(block.transpose(0, 2, 1), block)
                sum_added[same] = block.sum(axis=1)
            for row in np.flatnonzero((added != common) & (added > 0)):
                block = factors[items[added_from[row] : ends[row]]]
                gram_added[row] = block.T @ block
                sum_added[row] = block.sum(axis=0)
            # Running sums within each run of continuing requests (one cumsum per run:
            # a cumsum over the whole chunk minus offsets would cancel digits).
            bounds = np.r_[np.flatnonzero(~continues), len(starts)]
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                np.cumsum(gram_added[lo:hi], axis=0, out=gram_added[lo:hi])
                np.cumsum(sum_added[lo:hi], axis=0, out=sum_added[lo:hi])
            lhs = factors.T @ factors + self.regularization * np.eye(k) + self.alpha * gram_added
            return np.linalg.solve(lhs, (1.0 + self.alpha) * sum_added[..., None])[..., 0]

    def item_representations(self, n_items: int) -> np.ndarray:
        """The fitted item factors, float32 ``[n_items, factors]``.

        Raises:
            RuntimeError: Before :meth:`fit`.
        """
        if self.item_factors is None:
            raise RuntimeError("ImplicitALS.item_representations() before fit()")
        return self.item_factors

    def user_representations(self, n_users: int) -> np.ndarray:
        """The fitted user factors, float32 ``[n_users, factors]``.

        Raises:
            RuntimeError: Before :meth:`fit`.
        """
        if self.user_factors is None:
            raise RuntimeError("ImplicitALS.user_representations() before fit()")
        return self.user_factors

    def top_k(
        self,
        requests: RetrievalRequests,
        size: int,
        score_items: np.ndarray,
        *,
        progress: bool = False,
        workers: int | None = None,
    ) -> TopK:
        """:meth:`Retriever.top_k`, scored in float32 and certified in float64.

        The product of a chunk's user vectors with every item's factors is most of
        retrieval's time at ML-25M size; in float32 it is several times faster. Each
        row's ``size + margin`` best items by the float32 scores are re-scored in
        float64, and the row's ranking is kept only where a bound on the float32
        error proves that no other item can reach its ``size``-th float64 score (so
        the result is the float64 ranking, up to float64 summation order); the rare
        rows it cannot prove are scored in float64 in full.
        """
        if self.item_factors is None:
            raise RuntimeError("ImplicitALS.top_k() called before fit()")
        # The largest |factor| of any item per latent dimension (the error bound),
        # computed once per call rather than per chunk.
        largest = np.abs(self.item_factors).max(axis=0)
        return chunked_top_k(
            requests,
            size,
            score_items,
            lambda rows, items: self._certified_top_k(requests, rows, size, items, largest),
            progress=progress,
            workers=workers,
        )

    def _certified_top_k(
        self,
        requests: RetrievalRequests,
        rows: slice,
        size: int,
        score_items: np.ndarray,
        largest_factors: np.ndarray,
        margin: int = 14,
    ) -> TopK:
        """:meth:`top_k` of requests ``rows`` (see there)."""
        factors32 = typing.cast(np.ndarray, self.item_factors)
        starts, ends = requests.history_starts[rows], requests.history_ends[rows]
        empty = ends == starts
        users = self.fold_in_prefixes(requests.items, starts, ends)
        scores = users.astype(np.float32) @ factors32.T
        scores[empty] = requests.fallback
        requests.mask(rows, scores)
        wide = min(size + margin, scores.shape[1])
        top = top_items(scores, wide)
        top_scores32 = np.take_along_axis(scores, top, axis=1)
        exact = self._exact_scores(requests, users, empty, top)
        exact[np.isneginf(top_scores32)] = -np.inf
        # The float64 ranking of the candidates: by score, ties by lower index.
        order = np.lexsort((top, -exact), axis=1)
        top = np.take_along_axis(top, order, axis=1)[:, :size]
        exact = np.take_along_axis(exact, order, axis=1)[:, :size]
        # Error of a float32 dot product of k terms (inputs rounded once, any order of
        # summation): at most (k + 2) u sum |user_i factor_i| with u = 2^-24; doubled.
        k = users.shape[1]
        bound = 2 * (k + 2) * 2.0**-24 * (np.abs(users) @ largest_factors)
        bound[empty] = 0.0  # the fallback is exact
        # No item outside the candidates scores above threshold + bound in float64.
        outside_best = (top_scores32[:, -1].astype(np.float64) + bound).astype(np.float32)
        key = exact[:, -1]
        certified = (key > -np.inf) & ((outside_best < key) | (wide == scores.shape[1]))
        uncertified = np.flatnonzero(~certified)
        if len(uncertified):  # scored in float64 in full, as the other retrievers are
            full = item_scores(users[uncertified], factors32.astype(np.float64))
            full[empty[uncertified]] = requests.fallback
            requests.mask(rows.start + uncertified, full)
            top[uncertified] = top_items(full, size)
            exact[uncertified] = np.take_along_axis(full, top[uncertified], axis=1)
        return top, exact, self._exact_scores(requests, users, empty, score_items)

    def _exact_scores(
        self, requests: RetrievalRequests, users: np.ndarray, empty: np.ndarray, items: np.ndarray
    ) -> np.ndarray:
        """Float64 scores of ``items[r]`` for user ``r``, as float32 (fallback where empty)."""
        factors = typing.cast(np.ndarray, self.item_factors)
        exact = np.einsum("rk,rik->ri", users, factors[items].astype(np.float64))
        exact = exact.astype(np.float32)
        exact[empty] = requests.fallback[items[empty]]
        return exact


def item_scores(users: np.ndarray, item_factors: np.ndarray, block: int = 8192) -> np.ndarray:
    """``(users @ item_factors.T)`` in float64, returned as float32, a block of items at a time.

    Each score is still one dot product over the factors, and the numbers matched
    the one product's bit for bit wherever checked (every pipeline array on
    ML-100K, a 2,048 x 59,047 product); but the one float64 product of a chunk of
    requests with 59,000 items is a gigabyte written once and converted again,
    while blocks that stay in cache made it 3-5 times faster.
    """
    out = np.empty((len(users), len(item_factors)), dtype=np.float32)
    transposed = np.ascontiguousarray(item_factors.T)
    for first in range(0, len(users), 256):
        rows = slice(first, first + 256)
        for start in range(0, len(item_factors), block):
            items = slice(start, start + block)
            out[rows, items] = users[rows] @ transposed[:, items]
    return out


class _ScoresEveryItem:
    """What a retriever without item vectors or a faster path has: full scoring."""

    def score_prefixes(self, items: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def item_representations(self, n_items: int) -> np.ndarray:
        """No item vectors: float32 ``[n_items, 0]``."""
        return np.zeros((n_items, 0), dtype=np.float32)

    def user_representations(self, n_users: int) -> np.ndarray:
        """No user vectors: float32 ``[n_users, 0]``."""
        return np.zeros((n_users, 0), dtype=np.float32)

    def top_k(
        self,
        requests: RetrievalRequests,
        size: int,
        score_items: np.ndarray,
        *,
        progress: bool = False,
        workers: int | None = None,
    ) -> TopK:
        """:meth:`Retriever.top_k`, every item scored in full."""
        return chunked_top_k(
            requests,
            size,
            score_items,
            lambda rows, items: scored_top_k(self.score_prefixes, requests, rows, size, items),
            progress=progress,
            workers=workers,
        )


class ItemKNN(_ScoresEveryItem):
    """Item-item cosine nearest neighbours on training co-occurrences.

    Args:
        neighbors: Similarities kept per item (the rest are set to zero).
        shrink: Added to the cosine denominator to damp pairs seen rarely.
    """

    name = "itemknn"

    def __init__(self, neighbors: int = 100, shrink: float = 10.0) -> None:
        self.neighbors = neighbors
        self.shrink = shrink
        self.similarity: np.ndarray | None = None

    def fit(self, user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> None:
        """Compute the pruned item-item similarity matrix."""
        matrix = sp.csr_matrix(
            (np.ones(len(user), dtype=np.float32), (user, item)), shape=(n_users, n_items)
        )
        co_counts = (matrix.T @ matrix).toarray()
        norms = np.sqrt(np.diag(co_counts))
        similarity = co_counts / (np.outer(norms, norms) + self.shrink)
        np.fill_diagonal(similarity, 0.0)
        if self.neighbors < n_items:
            # Keep each item's top neighbours (column-wise: similarity of j to item i).
            cutoff = np.partition(similarity, n_items - self.neighbors, axis=0)[
                n_items - self.neighbors
            ]
            similarity[similarity < cutoff[None, :]] = 0.0
        self.similarity = similarity.astype(np.float32)

    def score(self, histories: sp.csr_matrix) -> np.ndarray:
        """Sum each item's similarity to the items of every history."""
        if self.similarity is None:
            raise RuntimeError("ItemKNN.score() called before fit()")
        return np.asarray(histories.astype(np.float32) @ self.similarity, dtype=np.float32)

    def score_prefixes(self, items: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """:meth:`score` of the histories ``items[starts[r]:ends[r]]``."""
        if self.similarity is None:
            raise RuntimeError("ItemKNN.score_prefixes() called before fit()")
        return self.score(history_matrix(items, starts, ends, len(self.similarity)))


class Popularity(_ScoresEveryItem):
    """Score items by their number of training interactions (same list for everyone)."""

    name = "pop"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> None:
        """Count training interactions per item."""
        self.counts = np.bincount(item, minlength=n_items).astype(np.float32)

    def score(self, histories: sp.csr_matrix) -> np.ndarray:
        """Return the popularity of every item for every history."""
        if self.counts is None:
            raise RuntimeError("Popularity.score() called before fit()")
        return np.broadcast_to(self.counts, (histories.shape[0], len(self.counts))).copy()

    def score_prefixes(self, items: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The popularity of every item, once per request."""
        if self.counts is None:
            raise RuntimeError("Popularity.score_prefixes() called before fit()")
        return np.broadcast_to(self.counts, (len(starts), len(self.counts))).copy()


def make_retriever(
    name: str,
    *,
    factors: int = 64,
    regularization: float = 50.0,
    alpha: float = 10.0,
    iterations: int = 10,
    neighbors: int = 100,
    seed: int = 0,
) -> Retriever:
    """Build a retriever by name: ``"mf"``, ``"itemknn"`` or ``"pop"``."""
    if name == "mf":
        return ImplicitALS(factors, regularization, alpha, iterations, seed)
    if name == "itemknn":
        return ItemKNN(neighbors)
    if name == "pop":
        return Popularity()
    raise ValueError(f"unknown retriever {name!r}; expected 'mf', 'itemknn' or 'pop'")
