"""RLlib: the masked observation form, the registry, and PPO beating random held-out."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

from rerank_env.rllib import RLlibObservation, make_rllib_env

TINY = {"num_candidates": 10, "slate_length": 4}


def test_the_masked_observation_holds_the_state_and_the_mask() -> None:
    env = make_rllib_env(TINY)
    space = env.observation_space
    assert set(space.spaces) == {"observations", "action_mask"}
    obs, _ = env.reset(seed=0)
    assert space.contains(obs)
    first = obs["observations"].copy()
    obs, *_ = env.step(3)
    assert obs["action_mask"][3] == 0 and obs["action_mask"].sum() == 9
    # The placed indicator and the step one-hot change; the features do not.
    changed = np.flatnonzero(obs["observations"] != first)
    tail = 10 + 4 + 1  # placed [N] + step one-hot [L + 1]
    assert changed.min() >= len(first) - tail and space.contains(obs)
    with pytest.raises(ValueError, match="features='dense'"):
        make_rllib_env({**TINY, "features": "indices"})
    with pytest.raises(ValueError, match="stepwise rerank-env env"):
        RLlibObservation(gym.make("SlateRerankList-v0", **TINY).unwrapped)


@pytest.mark.slow
def test_rllib_ppo_with_two_env_runners_beats_random_held_out() -> None:
    """Eight iterations of 1,000 steps, six passes each, lift held-out clicks.

    Measured at these settings (about 20 s of training on 2 idle cores): 1.413 for
    random, 1.449-1.465 after 8 iterations over five runs (and 12 iterations, or a
    learning rate of 3e-3, or 10 passes did no better). RLlib's default MLP over the
    flattened observation learns slowly from the retriever's vectors; it learned
    faster (1.54) when the observations carried the simulator's own vectors. RLlib's
    default of 30 passes per batch is slower and learns less per second here.
    """
    if not os.environ.get("CI"):  # under CI the extra is installed: a failure, not a skip
        pytest.importorskip("ray.rllib")
    import ray
    import torch

    from rerank_env.rllib import ppo_config, register

    assert "SlateRerank-v0" in register()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = ppo_config(
            TINY, num_env_runners=2, train_batch_size=1000, learning_rate=1e-3
        ).training(num_epochs=6)
        algo = config.build_algo()
        for _ in range(8):
            algo.train()
        module = algo.get_module()
        env = make_rllib_env({**TINY, "split": "test"})
        rng = np.random.default_rng(0)

        def held_out(policy: str, episodes: int = 200) -> float:
            rewards = []
            for episode in range(episodes):
                obs, _ = env.reset(seed=episode)
                done = False
                while not done:
                    if policy == "random":
                        action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
                    else:
                        batch = {"obs": {k: torch.as_tensor(v)[None] for k, v in obs.items()}}
                        with torch.no_grad():
                            logits = module.forward_inference(batch)["action_dist_inputs"][0]
                        action = int(logits.argmax())
                        assert obs["action_mask"][action] == 1  # the mask is obeyed
                    obs, _, terminated, truncated, info = env.step(action)
                    done = terminated or truncated
                rewards.append(info["eval_reward"])
            return float(np.mean(rewards))

        ppo, random = held_out("ppo"), held_out("random")
        assert ppo > random + 0.025, (ppo, random)
    finally:
        ray.shutdown()
