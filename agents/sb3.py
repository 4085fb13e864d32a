"""Any Stable-Baselines3 / sb3-contrib algorithm as a reranker.

:class:`SB3Agent` trains an SB3 algorithm on ``SlateRerank-v0`` (one candidate per
step) over the same task as the other agents, then ranks batches of requests by
running its policy slot by slot on batched observations.

Invalid actions: ``MaskablePPO`` (sb3-contrib) masks placed candidates, which is
the intended use. Algorithms without masking (PPO, A2C, DQN, ...) would pick placed
candidates, which the environment refuses; they run only with
``invalid_actions="remap"``, which wraps the environment in
:class:`RemapInvalidActions`: action ``a`` means the ``(a mod V)``-th still
available candidate (``V`` of them). That changes the action semantics, so it is
opt-in and recorded in the agent's config.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import re
import sys
import types
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat, Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.base import TrainableAgent, UnsupportedTaskError, empty_prefixes
from agents.common.config import AgentConfig
from agents.common.distributed import DataParallel
from agents.common.telemetry import TrainingLogger
from agents.common.training import preserved_global_rng
from agents.sb3_policy import POLICIES
from rerank_env.core import episode_arrays
from rerank_env.env import SlateRerankEnv
from rerank_env.task import RerankTask
from simulators.base import PAD, isolated_torch_rng
from simulators.data.errors import ConfigError
from simulators.progress import progress_bar

InvalidActions = Literal["mask", "remap"]

#: Algorithms looked up by name: stable_baselines3 first, then sb3_contrib.
_ALGORITHM_MODULES = ("stable_baselines3", "sb3_contrib")


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The SB3 or sb3-contrib algorithm class called ``name`` (e.g. ``"MaskablePPO"``)."""
    for module_name in _ALGORITHM_MODULES:
        module = importlib.import_module(module_name)
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, BaseAlgorithm):
            return found
    known = sorted(
        attr
        for module_name in _ALGORITHM_MODULES
        for attr, value in vars(importlib.import_module(module_name)).items()
        if isinstance(value, type) and issubclass(value, BaseAlgorithm)
    )
    raise ValueError(f"unknown SB3 algorithm {name!r}; available: {known}")


def remap_actions(actions: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Action ``a`` of each row as the ``(a mod V)``-th available candidate of its mask."""
    actions = np.asarray(actions, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks, dtype=bool).reshape(len(actions), -1)
    available = masks.sum(axis=1)
    rank = actions % available
    # The k-th True of each row: first index where the running count exceeds k.
    return (masks.cumsum(axis=1) > rank[:, None]).argmax(axis=1)


class RemapInvalidActions(gym.Wrapper):
    """Action ``a`` becomes the ``(a mod V)``-th available candidate (opt-in, see module)."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step with the remapped action."""
        mask = self.env.unwrapped.action_masks()
        return self.env.step(int(remap_actions(np.asarray([action]), mask[None])[0]))


#: SB3's ``train/`` logger keys and the suite's telemetry names for them.
_SB3_METRICS = {
    "train/loss": "loss",
    "train/policy_gradient_loss": "policy_loss",
    "train/value_loss": "value_loss",
    "train/approx_kl": "approx_kl",
    "train/clip_fraction": "clip_fraction",
    "train/explained_variance": "explained_variance",
}


class _TrainingLog(BaseCallback):
    """Feeds the agent's training log from SB3.

    The learning curve (mean list reward of finished training episodes every
    ``every`` timesteps, stage ``"curve"``) and, after each of the algorithm's
    updates, what it recorded (loss, approximate KL, clip fraction, entropy, ...;
    stage ``"policy"``). SB3 records an update's values in its logger and writes them
    out only at the next rollout's end, so they are read at the next rollout's start
    and at the end of training. ``bar`` (:func:`~simulators.progress.progress_bar`)
    follows the timesteps.
    """

    def __init__(self, every: int, logger: TrainingLogger, bar: Any) -> None:
        super().__init__()
        self.every, self.log, self.rewards, self.bar = every, logger, [], bar
        self.next_point = every
        self._updates = 0  # the algorithm's gradient steps at the last row

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        for info in self.locals.get("infos", []):
            if "list_reward" in info:
                self.rewards.append(info["list_reward"])
        if self.num_timesteps >= self.next_point and self.rewards:
            self.next_point += self.every
            self.log.log(
                "curve",
                timesteps=self.num_timesteps,
                simulator_calls=self.num_timesteps,
                train_reward=float(np.mean(self.rewards)),
            )
            self.rewards = []
        return True

    def _record_update(self) -> None:
        updates = int(getattr(self.model, "_n_updates", 0))
        if updates == self._updates:  # no update since the last row
            return
        self._updates = updates
        values = self.model.logger.name_to_value
        row = {name: float(values[key]) for key, name in _SB3_METRICS.items() if key in values}
        if "train/entropy_loss" in values:
            row["entropy"] = -float(values["train/entropy_loss"])
        self.log.log("policy", gradient_steps=updates, simulator_calls=self.num_timesteps, **row)

    def _on_rollout_start(self) -> None:
        self._record_update()

    def _on_training_end(self) -> None:
        self._record_update()


@dataclasses.dataclass(frozen=True)
class SB3AgentConfig(AgentConfig):
    """An SB3 agent's settings.

    Attributes:
        algorithm: Class name in ``stable_baselines3`` or ``sb3_contrib``.
        total_timesteps: Environment steps (slot decisions) of training.
        n_envs: Environments stepped together while training.
        reward_mode: ``"dense"`` (per-slot rewards) or ``"sparse"`` (list reward).
        invalid_actions: ``"mask"`` (needs a maskable algorithm) or ``"remap"``.
        policy: SB3 policy name (``"MultiInputPolicy"``, ...) or one of the suite's,
            ``"SlatePolicy"`` (:mod:`agents.sb3_policy`: a pointer over the
            candidates, for maskable algorithms).
        algorithm_kwargs: Passed to the algorithm's constructor (SB3's own options,
            e.g. ``{"n_steps": 256, "learning_rate": 1e-3}``).
        curve_every: Learning-curve point every this many timesteps.
        seed: The algorithm's seed; environment ``i`` is reset with ``seed + i``.
    """

    algorithm: str = "MaskablePPO"
    total_timesteps: int = 65_536
    n_envs: int = 4
    reward_mode: Literal["dense", "sparse"] = "dense"
    invalid_actions: InvalidActions = "mask"
    policy: str = "MultiInputPolicy"
    algorithm_kwargs: Mapping[str, Any] | None = dataclasses.field(default_factory=dict)
    curve_every: int = 2048
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {"total_timesteps": 8192}
    TINY: ClassVar[dict[str, Any]] = {"total_timesteps": 2048, "curve_every": 512}

    def __post_init__(self) -> None:
        # A read-only deep copy: the caller's dict (or the registry's) is never shared,
        # and None means no options, as it did before configs were dataclasses.
        options = types.MappingProxyType(copy.deepcopy(dict(self.algorithm_kwargs or {})))
        object.__setattr__(self, "algorithm_kwargs", options)
        super().__post_init__()

    def validate(self) -> None:
        """Refuse out-of-range fields."""
        if self.invalid_actions not in ("mask", "remap"):
            raise ConfigError(
                f"invalid_actions must be 'mask' or 'remap', got {self.invalid_actions!r}"
            )
        if self.reward_mode not in ("dense", "sparse"):
            raise ConfigError(f"reward_mode must be 'dense' or 'sparse', got {self.reward_mode!r}")
        self._at_least(1, "total_timesteps", "n_envs", "curve_every")


class SB3Agent(TrainableAgent):
    """A Stable-Baselines3 / sb3-contrib algorithm trained on the step-wise env.

    Args:
        config: An :class:`SB3AgentConfig` (default: its defaults), or, as a
            shorthand, the algorithm's name (``SB3Agent("PPO", invalid_actions="remap")``).
        **overrides: Config fields to change.
    """

    config_class = SB3AgentConfig

    def __init__(self, config: SB3AgentConfig | str | None = None, **overrides: Any) -> None:
        super().__init__()
        if isinstance(config, str):
            config, overrides = None, {"algorithm": config, **overrides}
        self.settings: SB3AgentConfig = self._settings_from(config, overrides)
        cfg = self.settings
        self.curve = ("timesteps", "train_reward")
        self.algorithm_class = algorithm_class(cfg.algorithm)
        maskable = "action_masks" in self.algorithm_class.predict.__code__.co_varnames
        if cfg.invalid_actions == "mask" and not maskable:
            raise ValueError(
                f"{cfg.algorithm} cannot mask invalid actions, and SlateRerank-v0 refuses "
                "placed candidates: use MaskablePPO, or pass invalid_actions='remap' to "
                "map each action onto the available candidates"
            )
        if cfg.invalid_actions == "remap" and maskable:
            raise ValueError(
                f"{cfg.algorithm} masks invalid actions itself; remapping would change the "
                "meaning of its (already valid) actions: use invalid_actions='mask'"
            )
        self.name = re.sub(
            r"(?<=[a-z])(?=[A-Z])", "-", cfg.algorithm
        ).lower()  # MaskablePPO -> maskable-ppo
        self.model: BaseAlgorithm | None = None

    def _policy(self) -> type[BasePolicy] | str:
        """The policy class (the suite's) or SB3 alias ``settings.policy`` names."""
        return POLICIES.get(self.settings.policy, self.settings.policy)

    def _make_env(self, task: RerankTask) -> gym.Env:
        env: gym.Env = SlateRerankEnv(reward_mode=self.settings.reward_mode, task=task)
        if self.settings.invalid_actions == "remap":
            env = RemapInvalidActions(env)
        return env

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        return {
            "n": task.num_candidates,
            "length": task.slate_length,
            "user_dim": task.user_table.shape[1],
            "item_dim": task.item_table.shape[1],
        }

    def _build(self, task: RerankTask | None = None) -> None:
        if task is not None:  # a fresh algorithm with its training environments
            envs = DummyVecEnv([lambda: self._make_env(task) for _ in range(self.settings.n_envs)])
            envs.seed(self.settings.seed)
            kwargs = {"gamma": 1.0, **dict(self.settings.algorithm_kwargs)}
            with preserved_global_rng():  # SB3 seeds the global generators
                self.model = self.algorithm_class(
                    self._policy(), envs, seed=self.settings.seed, device=task.device, **kwargs
                )
            self.modules = {"policy": self.model.policy}
            return
        # Loading: only the policy is needed to rank, rebuilt from the shapes.
        info = self.build_info
        n, length = info["n"], info["length"]
        # Placeholder bounds: SB3's own policies ignore them, and what SlatePolicy
        # derives from them (its feature scaling) is a buffer the checkpoint restores.
        observation_space = spaces.Dict(
            {
                "user": spaces.Box(-1, 1, (info["user_dim"],), np.float32),
                "candidates": spaces.Box(-1, 1, (n, info["item_dim"]), np.float32),
                "initial_scores": spaces.Box(-1, 1, (n,), np.float32),
                "slate": spaces.Box(-1, n - 1, (length,), np.int64),
                "step": spaces.Discrete(length + 1),
                "action_mask": spaces.MultiBinary(n),
            }
        )
        policy_class = self._policy()
        if isinstance(policy_class, str):
            policy_class = self.algorithm_class.policy_aliases.get(policy_class, policy_class)
        policy_kwargs = dict(self.settings.algorithm_kwargs.get("policy_kwargs", {}))
        with isolated_torch_rng(
            self.settings.seed
        ):  # the weights are overwritten by the checkpoint
            policy = policy_class(
                observation_space, spaces.Discrete(n), lambda _: 0.0, **policy_kwargs
            )
        self.modules = {"policy": policy}
        self.model = None

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Train on the training requests of ``task`` (its training simulator's reward)."""
        with preserved_global_rng():  # SB3 draws from (and seeds) the global generators
            self.model.set_random_seed(self.settings.seed)  # setup's seeding was undone on its exit
            # our bar, not SB3's (rich): it also logs lines when stderr is not a terminal
            bar = progress_bar(self.settings.total_timesteps, self.name, progress)
            if self.model.tensorboard_log is None:
                # SB3's default logger makes an empty folder in the temp dir per learn()
                outputs = [HumanOutputFormat(sys.stdout)] if self.model.verbose >= 1 else []
                self.model.set_logger(Logger(None, outputs))
            self.model.learn(
                self.settings.total_timesteps,
                callback=_TrainingLog(self.settings.curve_every, logger, bar),
            )
            bar.close()

    @torch.no_grad()
    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """The policy's deterministic action slot by slot, on all requests at once."""
        self._require_built()
        policy = self.modules["policy"]
        requests = np.asarray(requests, dtype=np.int64)
        n, length = task.num_candidates, task.slate_length
        if (n, length) != (self.build_info["n"], self.build_info["length"]):
            raise UnsupportedTaskError(
                f"{self.name} was trained with N = {self.build_info['n']}, L = "
                f"{self.build_info['length']}; this task has N = {n}, L = {length}"
            )
        slate = empty_prefixes(len(requests), length) if prefixes is None else prefixes.copy()
        fixed = episode_arrays(task, requests, "dense")
        mask = np.ones((len(requests), n), dtype=np.int8)
        for t in range(length):
            placed = slate[:, :t]
            mask[:] = 1
            if t:
                np.put_along_axis(mask, placed, 0, axis=1)
            observation = {
                **fixed,
                "slate": slate.copy(),
                "step": np.full(len(requests), t, dtype=np.int64),
                "action_mask": mask.copy(),
            }
            if self.settings.invalid_actions == "mask":
                actions, _ = policy.predict(
                    observation, deterministic=True, action_masks=mask.astype(bool)
                )
            else:
                actions, _ = policy.predict(observation, deterministic=True)
                actions = remap_actions(actions, mask)
            empty = slate[:, t] == PAD
            slate[empty, t] = np.asarray(actions).reshape(-1)[empty]
        return slate
