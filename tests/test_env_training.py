"""A short sb3-contrib MaskablePPO run on SlateRerank-v0 beats the random policy.

Trained with dense rewards (SlateRerankDense-v0: the same list reward, per slot),
judged on the list reward of held-out test requests. In one check with 8,192 steps
and seeds 0/1/2 the margin over random was 0.063 / 0.064 / 0.074 expected clicks;
sparse rewards at the same budget gave 0.019 (seed 0).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import MaskablePPO

import rerank_env  # noqa: F401  (registers the environments)


def _mean_reward(env, requests, policy) -> float:
    rewards = []
    for request in requests:
        obs, _ = env.reset(seed=0, options={"request": int(request)})
        terminated = False
        while not terminated:
            obs, reward, terminated, _, _ = env.step(policy(obs))
        rewards.append(reward)
    return float(np.mean(rewards))


def test_maskable_ppo_beats_random_on_held_out_requests() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is faster and steadier
    try:
        _train_and_compare()
    finally:
        torch.set_num_threads(threads)


def _train_and_compare() -> None:
    kwargs = {"num_candidates": 20}
    model = MaskablePPO(
        "MultiInputPolicy",
        gym.make("SlateRerankDense-v0", **kwargs),
        n_steps=512,
        batch_size=128,
        learning_rate=1e-3,
        gamma=1.0,
        seed=0,
    )
    model.learn(total_timesteps=8192)
    test_env = gym.make("SlateRerank-v0", split="test", **kwargs)
    requests = test_env.unwrapped.task.requests("test")[:300]
    rng = np.random.default_rng(0)

    def ppo(obs):
        mask = obs["action_mask"].astype(bool)
        return int(model.predict(obs, action_masks=mask, deterministic=True)[0])

    def random(obs):
        return int(rng.choice(np.flatnonzero(obs["action_mask"])))

    trained = _mean_reward(test_env, requests, ppo)
    baseline = np.mean([_mean_reward(test_env, requests, random) for _ in range(3)])
    assert trained > baseline + 0.03, (trained, baseline)
