"""Ranking metrics of reranked lists: against logged positives, and among permutations.

All functions take lists as *candidate positions* (``[B, L]`` ints into each
request's candidates, as the environments' actions are) together with what they
are judged against, and return one value per request so callers can average,
bootstrap or compare them per request.

Log-based metrics follow the reranking papers' protocol (GoalRank: H@L, NDCG@L,
P@L, F1@L against the logged positives of the request). Choices made here, since
the papers leave them open:

* a request whose candidates hold no logged positive cannot be scored against
  the logs: its value is NaN, and :func:`nanmean` style averages skip it;
* ``H@L`` is the share of the request's positives that the list holds, capped by
  the list length: ``|list & P| / min(L, |P|)`` (1 = as many hits as possible);
* ``NDCG@L`` uses binary gains and the ideal order of ``min(L, |P|)`` hits.
"""

from __future__ import annotations

import numpy as np


def _check(lists: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lists, relevant = np.asarray(lists), np.asarray(relevant, dtype=bool)
    if lists.ndim != 2 or relevant.ndim != 2 or lists.shape[0] != relevant.shape[0]:
        raise ValueError(
            f"lists must be [B, L] and relevant [B, N] for the same B; got {lists.shape} "
            f"and {relevant.shape}"
        )
    if lists.size and (lists.min() < 0 or lists.max() >= relevant.shape[1]):
        raise ValueError(
            f"lists hold positions outside 0..{relevant.shape[1] - 1} (the candidates)"
        )
    return lists, relevant


def hits(lists: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Relevance of each listed candidate, bool ``[B, L]``.

    Args:
        lists: Candidate positions, ``[B, L]``.
        relevant: Whether each candidate is a logged positive, bool ``[B, N]``.
    """
    lists, relevant = _check(lists, relevant)
    return np.take_along_axis(relevant, lists, axis=1)


def log_metrics(lists: np.ndarray, relevant: np.ndarray) -> dict[str, np.ndarray]:
    """``H@L``, ``NDCG@L``, ``P@L``, ``F1@L`` per request (NaN without positives).

    Args:
        lists: Candidate positions, ``[B, L]``.
        relevant: Whether each candidate is a logged positive, bool ``[B, N]``.

    Returns:
        Name -> float ``[B]``.
    """
    found = hits(lists, relevant)
    length = found.shape[1]
    positives = relevant.sum(axis=1).astype(float)
    count = found.sum(axis=1).astype(float)
    scorable = positives > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        discount = 1.0 / np.log2(np.arange(length) + 2.0)
        dcg = (found * discount).sum(axis=1)
        ideal = np.cumsum(discount)[np.minimum(positives, length).astype(int) - 1]
        precision = count / length
        recall = count / positives
        f1 = np.where(count > 0, 2 * precision * recall / (precision + recall), 0.0)
        result = {
            "hit": count / np.minimum(positives, length),
            "ndcg": dcg / ideal,
            "precision": precision,
            "f1": f1,
        }
    return {name: np.where(scorable, value, np.nan) for name, value in result.items()}


def permutation_percentile(value: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """Share of sampled lists of each request that ``value`` beats or ties, ``[B]``.

    ``HR@k%`` (DeGRe's metric) is the share of requests whose list is in the top
    ``k%`` of permutations: ``(permutation_percentile(...) >= 1 - k / 100).mean()``.

    Args:
        value: The agent's list value per request, ``[B]``.
        sampled: Values of random lists of the same requests, ``[B, M]``.
    """
    value, sampled = np.asarray(value), np.asarray(sampled)
    if sampled.ndim != 2 or value.shape != sampled.shape[:1]:
        raise ValueError(
            f"value must be [B] and sampled [B, M]; got {value.shape}, {sampled.shape}"
        )
    return (sampled <= value[:, None]).mean(axis=1)


def intra_list_diversity(lists_items: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """Mean pairwise cosine distance of the items in each list, ``[B]``.

    Args:
        lists_items: Item indices, ``[B, L]`` (``L >= 2``).
        item_vectors: Item representations, ``[I, d]`` (e.g. genre flags).
    """
    vectors = np.asarray(item_vectors, dtype=float)[np.asarray(lists_items)]
    norms = np.linalg.norm(vectors, axis=2, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    similarity = unit @ unit.transpose(0, 2, 1)
    length = similarity.shape[1]
    if length < 2:
        raise ValueError("diversity needs lists of at least 2 items")
    off_diagonal = similarity.sum(axis=(1, 2)) - np.trace(similarity, axis1=1, axis2=2)
    return 1.0 - off_diagonal / (length * (length - 1))


def coverage(lists_items: np.ndarray, candidate_items: np.ndarray) -> float:
    """Distinct items shown over distinct items offered across all requests."""
    return len(np.unique(lists_items)) / len(np.unique(candidate_items))
