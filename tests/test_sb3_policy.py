"""SlatePolicy: SB3's actor-critic with a pointer over SlateRerank-v0's candidates."""

from __future__ import annotations

import tempfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.vec_env import DummyVecEnv

import rerank_env  # noqa: F401  (registers the environments)
from agents.sb3 import SB3Agent
from agents.sb3_policy import PLACED_LOGIT, SlatePolicy

SMALL = {"num_candidates": 10, "slate_length": 4}


def _env(**kwargs):
    return gym.make("SlateRerank-v0", **{**SMALL, **kwargs})


def _policy(env, **extractor) -> SlatePolicy:
    torch.manual_seed(0)
    kwargs = {"dim": 16, "encoder_layers": 1, "heads": 2, **extractor}
    return SlatePolicy(
        env.observation_space,
        env.action_space,
        lambda _: 1e-3,
        features_extractor_kwargs=kwargs,
    ).eval()


def _probabilities(policy: SlatePolicy, observation: dict) -> np.ndarray:
    tensor, _ = policy.obs_to_tensor(observation)
    with torch.no_grad():
        return policy.get_distribution(tensor).distribution.probs.numpy()


def test_placed_candidates_get_no_probability_and_values_are_finite() -> None:
    env = _env()
    policy = _policy(env)
    observation, _ = env.reset(seed=0)
    for action in (4, 0):
        observation, *_ = env.step(action)
    probabilities = _probabilities(policy, observation)[0]
    assert probabilities[[4, 0]].max() < 1e-12
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    tensor, _ = policy.obs_to_tensor(observation)
    with torch.no_grad():
        features = policy.extract_features(tensor)
        assert features.shape == (1, 10 + 2 * 16)
        assert features[0, [4, 0]].eq(PLACED_LOGIT).all()
        assert torch.isfinite(policy.predict_values(tensor)).all()


def test_one_network_scores_every_candidate_wherever_it_stands() -> None:
    # Without the initial-rank embedding, permuting the candidates permutes the
    # action probabilities: each candidate's logit does not depend on its position.
    env = _env()
    policy = _policy(env, initial_order=False)
    observation, _ = env.reset(seed=3)
    observation, *_ = env.step(2)
    permutation = np.random.default_rng(0).permutation(10)
    inverse = np.argsort(permutation)
    permuted = dict(observation)
    for key in ("candidates", "initial_scores", "action_mask"):
        permuted[key] = observation[key][permutation]
    permuted["slate"] = np.where(observation["slate"] >= 0, inverse[observation["slate"]], -1)
    np.testing.assert_allclose(
        _probabilities(policy, permuted)[0],
        _probabilities(policy, observation)[0][permutation],
        atol=1e-5,
    )
    # With it (the default), position matters.
    ordered = _policy(env)
    assert not np.allclose(
        _probabilities(ordered, permuted)[0], _probabilities(ordered, observation)[0][permutation]
    )


def test_rollout_buffer_observations_decode_like_live_ones() -> None:
    # SB3's buffer one-hot encodes the Discrete step as [B, 1, L + 1]; live as [B, L + 1].
    env = _env()
    policy = _policy(env)
    observation, _ = env.reset(seed=1)
    observation, *_ = env.step(5)
    tensor, _ = policy.obs_to_tensor(observation)
    buffered = {**tensor, "step": tensor["step"].reshape(1, 1)}
    with torch.no_grad():
        torch.testing.assert_close(
            policy.extract_features(tensor), policy.extract_features(buffered)
        )


def test_refuses_index_observations_and_other_action_spaces() -> None:
    indices = _env(features="indices")
    with pytest.raises(ValueError, match="features='dense'"):
        _policy(indices)
    lists = gym.make("SlateRerankList-v0", **SMALL)
    with pytest.raises(ValueError, match="needs the observation keys"):
        SlatePolicy(lists.observation_space, gym.spaces.Discrete(10), lambda _: 1e-3)
    env = _env()
    with pytest.raises(ValueError, match="Discrete"):
        SlatePolicy(env.observation_space, gym.spaces.MultiDiscrete([10, 10]), lambda _: 1e-3)
    with pytest.raises(ValueError, match="critic's hidden sizes"):
        SlatePolicy(env.observation_space, env.action_space, lambda _: 1e-3, net_arch={"pi": [64]})


def test_maskable_ppo_trains_it_and_sb3_agent_finds_it_by_name(
    small_task, tmp_path, monkeypatch
) -> None:
    envs = DummyVecEnv([lambda: _env(reward_mode="dense") for _ in range(2)])
    model = MaskablePPO(
        SlatePolicy,
        envs,
        n_steps=32,
        batch_size=32,
        n_epochs=2,
        seed=0,
        policy_kwargs={"features_extractor_kwargs": {"dim": 16, "encoder_layers": 1}},
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(64)
    after = list(model.policy.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert all(changed), "every weight, encoder and critic alike, gets a gradient"
    agent = SB3Agent(
        "MaskablePPO",
        policy="SlatePolicy",
        total_timesteps=64,
        n_envs=2,
        algorithm_kwargs={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
    )
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    agent.fit(small_task)
    assert not list(tmp_path.iterdir()), "SB3's default logger would leave SB3-<date>/ here"
    assert isinstance(agent.modules["policy"], SlatePolicy)
    lists = agent.rank(small_task, small_task.requests("test")[:8])
    assert lists.shape == (8, small_task.slate_length)
    assert all(len(set(row)) == len(row) for row in lists.tolist())
