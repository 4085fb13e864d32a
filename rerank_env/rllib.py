"""``SlateRerank-v0`` for RLlib: masked observations and a PPO config.

RLlib's action-masking RL module (``ActionMaskingTorchRLModule``, the one RLlib's own
example ships) reads a ``Dict`` observation with two entries: ``"observations"``, what
its networks see, and ``"action_mask"``, the valid actions. :class:`RLlibObservation`
turns the env's observation into that form; :func:`register` registers every
rerank-env id with ``ray.tune.registry.register_env`` so ``PPOConfig().environment(
"SlateRerank-v0", env_config={...})`` builds it on every env runner; :func:`ppo_config`
is a ready PPO configuration. Install with ``pip install -e ".[rllib]"`` (RLlib pins
its own gymnasium version; see docs/environments.md).

Example::

    from rerank_env.rllib import ppo_config
    algo = ppo_config({"num_candidates": 10, "slate_length": 4}, num_env_runners=2).build_algo()
    for _ in range(10):
        result = algo.train()
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import rerank_env


class RLlibObservation(gym.ObservationWrapper):
    """``{"observations": float32 [D], "action_mask": float32 [N]}`` for RLlib's masking.

    ``observations`` concatenates the user's features, every candidate's features
    (``[N, d]`` flattened), the initial scores, which candidates are already placed
    (``1 - action_mask``) and the step one-hot (``L + 1`` entries): the networks see
    the whole state; the mask is applied to their logits by the RL module.

    Args:
        env: A stepwise rerank-env environment with ``features="dense"``.

    Raises:
        ValueError: The env's observations are not dense stepwise ones.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Dict) or "action_mask" not in space.spaces:
            raise ValueError(
                "RLlibObservation wraps a stepwise rerank-env env (SlateRerank-v0 and its "
                f"variants), whose observations hold an action_mask; got {space}"
            )
        if space["candidates"].dtype != np.float32:
            raise ValueError(
                "RLlibObservation needs features='dense' (the networks read features, not "
                "indices); make the env with features='dense'"
            )
        self._n = space["action_mask"].n
        self._steps = space["step"].n
        parts = [space["user"], space["candidates"], space["initial_scores"]]
        low = [np.asarray(p.low, np.float32).ravel() for p in parts]
        high = [np.asarray(p.high, np.float32).ravel() for p in parts]
        low += [np.zeros(self._n + self._steps, np.float32)]
        high += [np.ones(self._n + self._steps, np.float32)]
        self.observation_space = spaces.Dict(
            {
                "observations": spaces.Box(np.concatenate(low), np.concatenate(high)),
                "action_mask": spaces.Box(0.0, 1.0, (self._n,), np.float32),
            }
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        """The masked form of one observation."""
        mask = np.asarray(observation["action_mask"], np.float32)
        step = np.zeros(self._steps, np.float32)
        step[int(observation["step"])] = 1.0
        flat = np.concatenate(
            [
                np.asarray(observation["user"], np.float32).ravel(),
                np.asarray(observation["candidates"], np.float32).ravel(),
                np.asarray(observation["initial_scores"], np.float32).ravel(),
                1.0 - mask,
                step,
            ]
        )
        return {"observations": flat, "action_mask": mask}


def make_rllib_env(env_config: dict[str, Any] | None = None, env_id: str = "SlateRerank-v0"):
    """An env runner's environment: ``env_id`` with ``env_config`` as its keyword arguments.

    RLlib passes its ``EnvContext`` (a dict with worker attributes); only its items
    are used.
    """
    kwargs = dict(env_config or {})
    if kwargs.get("features", "dense") != "dense":
        raise ValueError(f"RLlib needs features='dense', got {kwargs['features']!r}")
    return RLlibObservation(gym.make(env_id, **kwargs).unwrapped)


def register(env_ids: tuple[str, ...] | None = None) -> list[str]:
    """Register rerank-env ids (default: every stepwise one) with Ray Tune's registry.

    Returns the ids registered. Call it in the driver before building an algorithm;
    Ray ships the registry to the env runners.
    """
    from ray.tune.registry import register_env  # noqa: PLC0415  (an optional extra)

    ids = env_ids or tuple(
        env_id
        for env_id in sorted(rerank_env.VARIANTS)
        if gym.spec(env_id).entry_point == "rerank_env.env:SlateRerankEnv"
    )
    for env_id in ids:
        register_env(env_id, lambda config, env_id=env_id: make_rllib_env(config, env_id))
    return list(ids)


def ppo_config(
    env_config: dict[str, Any] | None = None,
    *,
    env_id: str = "SlateRerank-v0",
    num_env_runners: int = 2,
    hidden: tuple[int, ...] = (128, 128),
    seed: int = 0,
    train_batch_size: int = 2000,
    learning_rate: float = 3e-4,
) -> Any:
    """An RLlib ``PPOConfig`` with the masking RL module on ``env_id``.

    Args:
        env_config: The environment's keyword arguments.
        env_id: A stepwise rerank-env id (registered here).
        num_env_runners: Env runners (processes) sampling in parallel.
        hidden: The policy and value networks' hidden layers.
        seed: RLlib's seed (env runners seed their envs from it).
        train_batch_size: Env steps per training iteration.
        learning_rate: Adam's step size.
    """
    from ray.rllib.algorithms.ppo import PPOConfig  # noqa: PLC0415
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec  # noqa: PLC0415
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import (  # noqa: PLC0415
        ActionMaskingTorchRLModule,
    )

    register((env_id,))
    return (
        PPOConfig()
        .environment(env_id, env_config=dict(env_config or {}))
        .env_runners(num_env_runners=num_env_runners)
        .training(train_batch_size_per_learner=train_batch_size, lr=learning_rate)
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=ActionMaskingTorchRLModule,
                model_config={"fcnet_hiddens": list(hidden), "head_fcnet_hiddens": []},
            )
        )
        .debugging(seed=seed)
    )


__all__ = ["RLlibObservation", "make_rllib_env", "ppo_config", "register"]
