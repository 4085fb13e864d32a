"""Cold start (withheld items) and reordered candidate lists."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import rerank_env  # noqa: F401  (registers the environments)
from agents.base import Agent, complete_by_scores
from agents.baselines import InitialOrder
from agents.evaluation import order_agreement
from agents.glorank import GloRank, GloRankConfig
from rerank_env import ColdStartConfig, make_task
from simulators.data.errors import ConfigError

COLD = ColdStartConfig(fraction=0.2, seed=3)


@pytest.fixture(scope="module")
def cold_task():
    return make_task(num_candidates=10, slate_length=4, cold_start=COLD)


def _items_of(task, requests):
    pool = task.pool
    return {
        "candidates": task.candidates_np[requests],
        "histories": pool.histories[requests],
        "logged": pool.logged_items[requests],
    }


def test_withheld_items_leave_training_requests_and_stay_in_test(cold_task, small_task) -> None:
    withheld = cold_task.withheld_items
    assert withheld.sum() == round(0.2 * cold_task.pool.n_items)
    assert not withheld.flags.writeable
    for split in ("train", "valid"):
        for name, items in _items_of(cold_task, cold_task.requests(split)).items():
            assert not withheld[items[items >= 0]].any(), (split, name)
    # Test requests are those of the task without cold start.
    test = small_task.requests("test")
    np.testing.assert_array_equal(cold_task.requests("test"), test)
    for name, items in _items_of(cold_task, test).items():
        np.testing.assert_array_equal(items, _items_of(small_task, test)[name], err_msg=name)
    assert len(cold_task.cold_start_requests("test")) > 0.5 * len(test)
    assert len(small_task.cold_start_requests("test")) == 0


def test_training_requests_keep_their_other_items_in_order(cold_task, task) -> None:
    pool, original = cold_task.pool, task.pool
    withheld = cold_task.withheld_items
    rows = cold_task.requests("train")
    n = pool.num_candidates
    for row in rows[:300]:
        candidates = pool.candidates[row]
        assert len(set(candidates.tolist())) == n
        kept = original.candidates[row][~withheld[original.candidates[row]]]
        np.testing.assert_array_equal(candidates[: len(kept)], kept)
        # Top-ups are neither in the list already nor in the history.
        history = original.histories[row, : original.history_lengths[row]]
        assert not np.isin(candidates[len(kept) :], history).any()
        scores = pool.candidate_scores[row]
        kept_scores = original.candidate_scores[row][~withheld[original.candidates[row]]]
        np.testing.assert_array_equal(scores[: len(kept)], kept_scores)
        assert (scores[len(kept) :] == kept_scores.min()).all()
        logged = original.logged_items[row]
        keep = ~withheld[logged]
        np.testing.assert_array_equal(pool.logged_items[row, : keep.sum()], logged[keep])
        np.testing.assert_array_equal(
            pool.logged_clicks[row, : keep.sum()], original.logged_clicks[row][keep]
        )
        assert not pool.logged_clicks[row, keep.sum() :].any()
        assert pool.history_lengths[row] == (pool.histories[row] >= 0).sum()


def test_agents_see_content_only_for_withheld_items_and_the_tokenizer_skips_them(
    cold_task, small_task
) -> None:
    withheld = cold_task.withheld_items
    content = cold_task.pool.item_features.shape[1]
    np.testing.assert_array_equal(cold_task.item_table[~withheld], small_task.item_table[~withheld])
    learned = small_task.item_table[withheld, content:]
    assert np.abs(cold_task.item_table[withheld, content:] - learned).max() > 0.1
    # The tokenizer was fitted without them: not the bundle's codes, still unique.
    ids = cold_task.tokenizer
    assert len(np.unique(ids.codes, axis=0)) == len(ids.codes)
    assert not np.array_equal(ids.codes, small_task.semantic_ids)
    # A withheld item's code shares its first level with items that were fitted on.
    assert np.isin(ids.codes[withheld, 0], ids.codes[~withheld, 0]).mean() > 0.9


def test_withheld_items_never_appear_in_a_training_batch(cold_task, monkeypatch) -> None:
    seen: list[np.ndarray] = []
    original = type(cold_task).slate_batch

    def recording(self, requests, lists):
        batch = original(self, requests, lists)
        seen.append(batch.items.cpu().numpy())
        return batch

    import agents.glorank.agent as glorank_agent

    tokens = glorank_agent.candidate_tokens

    def recording_tokens(task, requests):
        seen.append(task.candidates_np[np.asarray(requests)])
        seen.append(task.pool.histories[np.asarray(requests)])
        return tokens(task, requests)

    monkeypatch.setattr(type(cold_task), "slate_batch", recording)
    monkeypatch.setattr(glorank_agent, "candidate_tokens", recording_tokens)
    config = GloRankConfig.tiny(train_requests=300, sft_requests=64, ppo_iterations=3)
    GloRank(config).fit(cold_task)
    items = np.concatenate([batch.reshape(-1) for batch in seen])
    assert len(items) > 1000
    assert not cold_task.withheld_items[items[items >= 0]].any()


def test_cold_start_environments_and_bad_configs(cold_task) -> None:
    env = gym.make("SlateRerank-v0", num_candidates=10, slate_length=4, cold_start=COLD)
    task = env.unwrapped.task
    np.testing.assert_array_equal(task.withheld_items, cold_task.withheld_items)
    assert task.description["cold_start"] == dataclasses.asdict(COLD)
    other = make_task(num_candidates=10, slate_length=4, cold_start=ColdStartConfig(0.2, seed=4))
    assert not np.array_equal(other.withheld_items, cold_task.withheld_items)
    for bad in (0.0, 0.9, True):
        with pytest.raises(ConfigError, match="fraction"):
            ColdStartConfig(fraction=bad)
    with pytest.raises(ConfigError, match="splits"):
        ColdStartConfig(splits=("train", "test"))
    with pytest.raises(ConfigError, match="ColdStartConfig"):
        make_task(cold_start={"fraction": 0.1})
    with pytest.raises(ConfigError, match="bool mask"):
        cold_task.pool.withholding(np.zeros(3, dtype=bool))


def test_reordered_candidates_keep_items_scores_and_rewards(small_task) -> None:
    rng = np.random.default_rng(0)
    order = np.argsort(rng.random((small_task.n_requests, small_task.num_candidates)), axis=1)
    view = small_task.with_candidate_order(order)
    requests = small_task.requests("test")[:50]
    np.testing.assert_array_equal(
        view.candidates_np[requests],
        np.take_along_axis(small_task.candidates_np, order, 1)[requests],
    )
    lists = np.tile(np.arange(small_task.slate_length), (len(requests), 1))
    # The same items, placed in the same slots, get the same reward.
    moved = np.argsort(order[requests], axis=1)  # where each original position went
    same_lists = np.take_along_axis(moved, lists, axis=1)
    np.testing.assert_allclose(
        view.expected_reward(requests, same_lists).numpy(),
        small_task.expected_reward(requests, lists).numpy(),
        rtol=1e-6,
    )
    assert view.tokenizer is small_task.tokenizer or np.array_equal(
        view.semantic_ids, small_task.semantic_ids
    )
    with pytest.raises(ValueError, match="permutation"):
        small_task.with_candidate_order(np.zeros_like(order))
    with pytest.raises(ValueError, match="order must be"):
        small_task.with_candidate_order(order[:5])


class _FirstPositions(Agent):
    """Lists the first L candidates in the order given: as order-bound as can be."""

    name = "first-positions"

    def config(self) -> dict:
        return {}

    def rank(self, task, requests, prefixes=None):
        scores = np.tile(-np.arange(task.num_candidates, dtype=float), (len(requests), 1))
        return complete_by_scores(scores, task.slate_length, prefixes)


def test_order_agreement_tells_score_bound_from_position_bound_agents(small_task) -> None:
    requests = small_task.requests("test")[:200]
    by_score = order_agreement(InitialOrder(), small_task, requests, seed=1)
    by_position = order_agreement(_FirstPositions(), small_task, requests, seed=1)
    assert by_score["same_list"] > 0.95 and by_score["same_items"] > 0.95
    assert by_position["same_list"] < 0.1 and by_position["same_items"] < 0.7
    plain = small_task.expected_reward(requests, InitialOrder().rank(small_task, requests), "eval")
    assert by_score["reward_eval_shuffled"] == pytest.approx(plain.mean().item(), rel=1e-3)
