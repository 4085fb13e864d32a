"""Agent interface and reference baselines: valid lists, batch = step-wise, quality."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rerank_env  # noqa: F401  (registers the environments)
from agents.base import Agent, InvalidListError, checked_rank, complete_by_scores
from agents.baselines import (
    BeamSearchAgent,
    InitialOrder,
    OracleAgent,
    PointwiseGreedy,
    RandomAgent,
)
from rerank_env import make_task


@pytest.fixture(scope="module")
def pointwise(task):
    return PointwiseGreedy(epochs=5).fit(task)


def _agents(pointwise):
    return [InitialOrder(), RandomAgent(seed=0), pointwise, BeamSearchAgent(width=4)]


def test_every_agent_returns_valid_lists_and_completes_prefixes(task, pointwise) -> None:
    requests = task.sample_requests("test", 64, np.random.default_rng(0))
    prefixes = np.full((64, 6), -1)
    prefixes[:, :2] = [[7, 3]]
    for agent in _agents(pointwise):
        lists = checked_rank(agent, task, requests)
        assert lists.shape == (64, 6)
        completed = checked_rank(agent, task, requests, prefixes)
        assert (completed[:, :2] == [7, 3]).all()


def test_step_wise_policy_gives_the_batch_lists(task, pointwise) -> None:
    env = gym.make("SlateRerank-v0", split="test")
    for agent in [InitialOrder(), pointwise, BeamSearchAgent(width=4)]:
        policy = agent.policy(env)
        obs, info = env.reset(seed=1)
        placed = []
        for _ in range(6):
            action, _ = policy.predict(obs, action_masks=obs["action_mask"])
            placed.append(int(action))
            obs, *_ = env.step(action)
        batch = checked_rank(agent, env.unwrapped.task, np.array([info["request"]]))
        assert placed == batch[0].tolist(), agent.name


def test_policy_drives_the_vector_env(task) -> None:
    envs = gym.make_vec("SlateRerank-v0", num_envs=8, split="test")
    policy = InitialOrder().policy(envs)
    obs, _ = envs.reset(seed=0)
    for _ in range(6):
        actions, _ = policy.predict(obs)
        obs, rewards, terminated, _, info = envs.step(actions)
    assert terminated.all()
    np.testing.assert_array_equal(obs["slate"], np.tile(np.arange(6), (8, 1)))


def test_quality_ordering_of_the_references(small_task, pointwise) -> None:
    task = small_task
    requests = task.requests("test")[:40]
    value = {}
    for agent in [InitialOrder(), RandomAgent(seed=0), BeamSearchAgent(width=8), OracleAgent()]:
        lists = checked_rank(agent, task, requests)
        value[agent.name] = float(task.expected_reward(requests, lists).mean())
    assert value["oracle"] >= value["beam-8"] - 1e-6
    assert value["beam-8"] >= 0.98 * value["oracle"]
    assert value["beam-8"] > max(value["initial-order"], value["random"])
    with pytest.raises(ValueError, match=r"P\(50, 6\) = 11,441,304,000 lists"):
        OracleAgent().rank(make_task(), requests[:1])


def test_pointwise_greedy_beats_random_on_logged_positives(task, pointwise) -> None:
    from agents.metrics import log_metrics

    requests = task.requests("test")
    pool = task.pool
    relevant = task.logged_positives(requests)
    expected = np.array(  # the slow obvious way
        [
            np.isin(task.candidates_np[r], pool.logged_items[r][pool.logged_clicks[r]])
            for r in requests
        ]
    )
    np.testing.assert_array_equal(relevant, expected)
    ndcg = {}
    for agent in [pointwise, RandomAgent(seed=0)]:
        lists = checked_rank(agent, task, requests)
        ndcg[agent.name] = np.nanmean(log_metrics(lists, relevant)["ndcg"])
    assert ndcg["pointwise-greedy"] > ndcg["random"] + 0.01


class _Broken(Agent):
    name = "broken"

    def __init__(self, lists):
        self.lists = lists

    def rank(self, task, requests, prefixes=None):
        return self.lists


def test_invalid_lists_name_the_agent_the_request_and_the_problem(task) -> None:
    requests = np.array([5, 9])
    good = np.tile(np.arange(6), (2, 1))
    cases = [
        (good[:, :5], r"shape \(2, 5\) for 2 requests"),
        (good.astype(float), "float64 lists"),
        (
            np.array([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 3, 5]]),
            "request 9: .* lists candidate 3 twice",
        ),
        (
            np.array([[0, 1, 2, 3, 4, 50], [0, 1, 2, 3, 4, 5]]),
            "request 5: .* position 50, not a candidate",
        ),
    ]
    for lists, message in cases:
        with pytest.raises(InvalidListError, match=f"agent 'broken'.*{message}"):
            checked_rank(_Broken(lists), task, requests)
    prefixes = np.full((2, 6), -1)
    prefixes[:, 0] = 9
    with pytest.raises(InvalidListError, match=r"does not start with the given prefix \[9\]"):
        checked_rank(_Broken(good), task, requests, prefixes)


def test_complete_by_scores_skips_placed_candidates() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    prefixes = np.array([[0, 3, -1]])
    np.testing.assert_array_equal(complete_by_scores(scores, 3, prefixes), [[0, 3, 1]])
    np.testing.assert_array_equal(complete_by_scores(scores, 3, None), [[0, 1, 2]])
