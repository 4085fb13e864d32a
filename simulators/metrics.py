"""Target-rank metrics: where one target item lands in each ranked list.

The GR2 protocol (and the pipeline's pre-ranker statistics) scores a ranking by
the position of a single held-out item, the *target*. With ``rank`` the 0-based
position of the target in the list (``rank = -1`` when the list does not hold it):

* ``Recall@k = 1[0 <= rank < k]`` (one target, so recall and hit rate agree);
* ``NDCG@k = 1[0 <= rank < k] / log2(rank + 2)`` (the ideal DCG of one relevant
  item at the top is 1, so no normalisation is needed).

Every function is batched over requests and returns one value per request, so
callers average, bootstrap or compare them as they need. ``k`` may exceed the
list length: an absent target scores 0 for every ``k``.
"""

from __future__ import annotations

import numpy as np

ABSENT = -1
"""The rank :func:`target_ranks` gives a target that is not in its list."""


def target_ranks(lists: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each request's target in its list, ``-1`` where absent.

    Args:
        lists: Ranked lists, integer ``[B, L]`` (item ids or candidate positions,
            best first).
        targets: The target of each request in the same id space, integer ``[B]``.

    Returns:
        int64 ``[B]``: the first position of ``targets[b]`` in ``lists[b]``, or
        :data:`ABSENT` (-1).

    Raises:
        ValueError: If the shapes do not match or the values are not integers.
    """
    lists, targets = np.asarray(lists), np.asarray(targets)
    if lists.ndim != 2 or targets.ndim != 1 or len(lists) != len(targets):
        raise ValueError(
            f"target_ranks: lists must be [B, L] and targets [B] for the same B; got "
            f"lists {lists.shape} and targets {targets.shape} (pass one target per list)"
        )
    for name, values in (("lists", lists), ("targets", targets)):
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"target_ranks: {name} must hold integer ids, got dtype {values.dtype}"
            )
    found = lists == targets[:, None]
    return np.where(found.any(axis=1), found.argmax(axis=1), ABSENT).astype(np.int64)


def _checked(ranks: np.ndarray, k: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The ranks as an array and whether each one is within the top ``k``."""
    ranks = np.asarray(ranks)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name}: k must be an integer >= 1, got {k!r}")
    if ranks.size and not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(
            f"{name}: ranks must be integer positions (see target_ranks), got dtype {ranks.dtype}"
        )
    if ranks.size and ranks.min() < ABSENT:
        raise ValueError(
            f"{name}: ranks must be >= 0, or {ABSENT} for an absent target; got {ranks.min()}"
        )
    return ranks, (ranks >= 0) & (ranks < k)


def recall_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """``Recall@k`` of each request's target: 1.0 if ``0 <= rank < k``, else 0.0.

    Args:
        ranks: 0-based target positions, ``-1`` where absent (:func:`target_ranks`).
        k: List cut-off, >= 1 (may exceed the list length).

    Returns:
        float64 array shaped like ``ranks``.
    """
    _, hit = _checked(ranks, k, "recall_at_k")
    return hit.astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """``NDCG@k`` of each request's target: ``1 / log2(rank + 2)`` if ``0 <= rank < k``, else 0.

    Args:
        ranks: 0-based target positions, ``-1`` where absent (:func:`target_ranks`).
        k: List cut-off, >= 1 (may exceed the list length).

    Returns:
        float64 array shaped like ``ranks``.
    """
    ranks, hit = _checked(ranks, k, "ndcg_at_k")
    # Absent targets (-1) are clamped before the log only to avoid a division by 0.
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
