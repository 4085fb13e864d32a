"""Ranking metrics: hand-computed cases and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.metrics import (
    coverage,
    intra_list_diversity,
    log_metrics,
    permutation_percentile,
)
from simulators.metrics import ABSENT, ndcg_at_k, recall_at_k, target_ranks


def test_log_metrics_by_hand() -> None:
    relevant = np.zeros((3, 5), dtype=bool)
    relevant[0, [1, 4]] = True  # two positives
    relevant[1, [0, 1, 2, 3]] = True  # more positives than slots
    lists = np.array([[4, 0, 1], [0, 1, 4], [0, 1, 2]])  # request 2: no positives at all
    m = log_metrics(lists, relevant)
    discount = 1 / np.log2(np.arange(3) + 2)
    assert m["hit"][0] == 1.0 and m["hit"][1] == pytest.approx(2 / 3)
    assert m["ndcg"][0] == pytest.approx((discount[0] + discount[2]) / discount[:2].sum())
    assert m["ndcg"][1] == pytest.approx(discount[:2].sum() / discount.sum())
    assert m["precision"][0] == pytest.approx(2 / 3) and m["precision"][1] == pytest.approx(2 / 3)
    recall = 2 / 4
    assert m["f1"][1] == pytest.approx(2 * (2 / 3) * recall / (2 / 3 + recall))
    assert all(np.isnan(m[name][2]) for name in m)


def test_log_metrics_refuse_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same B"):
        log_metrics(np.zeros((2, 3), dtype=int), np.zeros((3, 5), dtype=bool))
    with pytest.raises(ValueError, match="outside 0..4"):
        log_metrics(np.array([[5, 0, 1]]), np.zeros((1, 5), dtype=bool))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_log_metrics_are_bounded_and_the_ideal_list_scores_one(seed) -> None:
    rng = np.random.default_rng(seed)
    relevant = rng.random((8, 12)) < 0.3
    relevant[:, 0] = True  # every request scorable
    lists = np.stack([rng.permutation(12)[:4] for _ in range(8)])
    m = log_metrics(lists, relevant)
    for value in m.values():
        assert ((value >= 0) & (value <= 1 + 1e-12)).all()
    ideal = np.stack([np.argsort(~row, kind="stable")[:4] for row in relevant])
    best = log_metrics(ideal, relevant)
    np.testing.assert_allclose(best["ndcg"], 1.0)
    np.testing.assert_allclose(best["hit"], 1.0)
    assert (best["ndcg"] >= m["ndcg"] - 1e-12).all()


def test_permutation_percentile_and_hr_at_k() -> None:
    sampled = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    pct = permutation_percentile(np.array([3.5, 5.0]), sampled)
    np.testing.assert_allclose(pct, [0.75, 1.0])
    assert ((pct >= 0.99).mean()) == 0.5  # HR@1%
    with pytest.raises(ValueError, match="value must be"):
        permutation_percentile(np.zeros(3), sampled)


def test_diversity_and_coverage() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert intra_list_diversity(np.array([[0, 1]]), vectors)[0] == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[0, 2]]), vectors)[0] == pytest.approx(1.0)
    assert intra_list_diversity(np.array([[0, 1, 2]]), vectors)[0] == pytest.approx(2 / 3)
    assert coverage(np.array([[0, 1], [0, 2]]), np.arange(6)) == pytest.approx(0.5)


def _brute_force_target_metrics(lists: np.ndarray, targets: np.ndarray, k: int):
    """One request at a time, straight from the formulas in simulators/metrics.py."""
    ranks, recall, ndcg = [], [], []
    for items, target in zip(lists.tolist(), targets.tolist(), strict=True):
        rank = items.index(target) if target in items else -1
        ranks.append(rank)
        recall.append(1.0 if 0 <= rank < k else 0.0)
        ndcg.append(1.0 / math.log2(rank + 2) if 0 <= rank < k else 0.0)
    return np.array(ranks), np.array(recall), np.array(ndcg)


@pytest.mark.parametrize("k", [1, 3, 5, 12])  # 12: longer than the lists
def test_target_rank_metrics_match_a_brute_force_loop(k: int) -> None:
    rng = np.random.default_rng(k)
    lists = np.stack([rng.permutation(20)[:8] for _ in range(200)])
    targets = rng.integers(0, 20, size=200)  # often absent from the 8 listed items
    ranks, recall, ndcg = _brute_force_target_metrics(lists, targets, k)
    assert (ranks == -1).any() and (ranks >= 0).any()
    np.testing.assert_array_equal(target_ranks(lists, targets), ranks)
    np.testing.assert_array_equal(recall_at_k(ranks, k), recall)
    np.testing.assert_allclose(ndcg_at_k(ranks, k), ndcg, rtol=0, atol=1e-15)


def test_target_rank_metrics_edge_cases() -> None:
    lists = np.array([[3, 1, 2], [4, 5, 6]])
    ranks = target_ranks(lists, np.array([2, 9]))
    assert ranks.tolist() == [2, ABSENT]
    # An absent target scores 0 even where k exceeds the list length.
    assert recall_at_k(ranks, 10).tolist() == [1.0, 0.0]
    assert ndcg_at_k(ranks, 10).tolist() == [0.5, 0.0]
    assert recall_at_k(ranks, 2).tolist() == [0.0, 0.0]
    assert recall_at_k(np.zeros(0, dtype=np.int64), 5).shape == (0,)
    assert target_ranks(np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: target_ranks(np.zeros(3, dtype=int), np.zeros(3, dtype=int)), r"\[B, L\]"),
        (lambda: target_ranks(np.zeros((2, 3), dtype=int), np.zeros(3, dtype=int)), "same B"),
        (lambda: target_ranks(np.zeros((2, 3)), np.zeros(2, dtype=int)), "integer ids"),
        (lambda: recall_at_k(np.array([0, 1]), 0), "k must be an integer >= 1"),
        (lambda: ndcg_at_k(np.array([0, 1]), 2.0), "k must be an integer >= 1"),
        (lambda: ndcg_at_k(np.array([0.0, 1.0]), 2), "integer positions"),
        (lambda: recall_at_k(np.array([0, -2]), 2), "got -2"),
    ],
)
def test_target_rank_metrics_reject_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
