"""The native vector environment: ``gym.make_vec("SlateRerank-v0", num_envs=1024)``.

All sub-environments step in lockstep (every episode has ``L`` steps), and one
batched simulator call per step scores every sub-environment's prefix. Sub-
environment ``i`` after ``reset(seed=s)`` reproduces ``SlateRerank-v0`` reset with
``seed=s + i`` (the convention of Gymnasium's ``SyncVectorEnv``), step for step: the
same requests, actions, masks and clicks, and rewards equal up to float rounding
(the simulator scores batches of different sizes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rerank_env.config import TaskConfig
from rerank_env.core import (
    ClickMode,
    EpisodeBatch,
    Features,
    RewardMode,
    check_modes,
    reset_arguments,
)
from rerank_env.env import build_task, observation_space
from rerank_env.spaces import MaskedMultiDiscrete
from rerank_env.task import RerankTask


def seeded_generators(
    generators: list[np.random.Generator] | None,
    seed: int | list[int | None] | None,
    episodes: EpisodeBatch,
) -> list[np.random.Generator]:
    """The sub-environments' generators after ``reset(seed=seed)``.

    ``s`` seeds sub-environment ``i`` with ``s + i``; a list gives each its own seed
    (``None`` entries keep their generator); ``None`` keeps them all, or seeds them
    from entropy on the first reset. Re-seeded slots forget their buffered uniforms.
    """
    size = episodes.size
    if seed is None and generators is not None:
        return generators
    if seed is None or isinstance(seed, (int, np.integer)):
        seeds = [None if seed is None else int(seed) + env for env in range(size)]
    else:
        seeds = [None if value is None else int(value) for value in seed]
        if len(seeds) != size:
            raise ValueError(f"seed list has {len(seeds)} entries for {size} sub-environments")
    if generators is None:
        generators = [seeding.np_random(s)[0] for s in seeds]
    else:
        generators = [
            generator if value is None else seeding.np_random(value)[0]
            for generator, value in zip(generators, seeds, strict=True)
        ]
    reseeded = [env for env, value in enumerate(seeds) if value is not None or seed is None]
    episodes.forget_rows(np.array(reseeded, dtype=np.int64))
    return generators


class SlateRerankVectorEnv(VectorEnv):
    """``num_envs`` copies of ``SlateRerank-v0`` stepped by one batched simulator call.

    Autoreset mode ``NEXT_STEP`` (Gymnasium's default): the ``step`` after an
    episode's last one starts the next episode, ignores its actions, and returns
    the new first observation with reward 0. Since every episode has ``L`` steps,
    all sub-environments end and restart together.

    Observations are the single environment's, batched along a first axis of size
    ``num_envs``. The per-episode arrays (``user``, ``candidates``,
    ``initial_scores``) are the same read-only arrays at every step of an episode
    (new ones at each reset): copying ``[num_envs, N, d]`` features at every step
    would cost more than the simulator. Copy them before editing in place.

    ``info`` holds ``request`` and ``click_prob`` (this step's click probability
    under the training simulator) per sub-environment; at the last step also
    ``list_reward``, ``eval_reward`` and (synthetic) ``true_reward``, each with its
    ``_name`` mask as Gymnasium's vector envs do.

    Args:
        num_envs: Sub-environments.
        reward_mode: As ``SlateRerank-v0``.
        click_mode: As ``SlateRerank-v0``.
        split: As ``SlateRerank-v0``.
        features: As ``SlateRerank-v0``.
        task: As ``SlateRerank-v0``: a built task, a ``TaskConfig`` or ``None``.
        progress: Progress bars while building the task.
        **task_fields: As ``SlateRerank-v0``: ``TaskConfig`` fields (dataset,
            simulator, N, L, ...).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
    #: The single environment this vector environment batches (for messages).
    env_name = "SlateRerank-v0"

    def __init__(
        self,
        num_envs: int = 1,
        *,
        reward_mode: RewardMode = "sparse",
        click_mode: ClickMode = "expected",
        split: str = "train",
        features: Features = "dense",
        render_mode: str | None = None,
        task: RerankTask | TaskConfig | None = None,
        progress: bool = True,
        **task_fields: Any,
    ) -> None:
        if (
            isinstance(num_envs, bool)
            or not isinstance(num_envs, (int, np.integer))
            or num_envs < 1
        ):
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode is not None:
            raise ValueError(
                f"the vector environment does not render; got render_mode={render_mode!r}"
            )
        check_modes(reward_mode, click_mode, features, split)
        self.task = build_task(type(self).__name__, task, progress, task_fields)
        self.num_envs = int(num_envs)
        self.features = features
        self.render_mode = None
        self.episodes = EpisodeBatch(
            self.task, self.num_envs, split=split, reward_mode=reward_mode, click_mode=click_mode
        )
        self._init_actions()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._generators: list[np.random.Generator] | None = None
        self._episode_arrays: dict[str, np.ndarray] = {}
        self._autoreset = False
        # Every sub-environment reports every info entry: one shared, read-only mask.
        self._every = np.ones(self.num_envs, dtype=bool)
        self._every.flags.writeable = False

    def _init_actions(self) -> None:
        """The action layer: spaces (a subclass writing tokens overrides this)."""
        self.single_observation_space = observation_space(self.task, self.features, stepwise=True)
        self.single_action_space = spaces.Discrete(self.task.num_candidates)
        # Like the single env's, sample() draws valid actions only.
        self.action_space = MaskedMultiDiscrete(self.task.num_candidates, self.episodes.mask)

    def _begin(self, requests: Any, candidates: Any, scores: Any) -> None:
        """Start every episode (the action layer's state too)."""
        self.episodes.start(self._generators, requests, candidates, scores)

    def _act(self, actions: Any) -> tuple[np.ndarray, bool, dict[str, np.ndarray]]:
        """Take one action per sub-environment: ``(rewards, terminated, info entries)``."""
        rewards, terminated = self.episodes.place(actions)
        return (
            rewards,
            terminated,
            {"click_prob": self.episodes.probs[:, self.episodes.t - 1].copy()},
        )

    def action_masks(self) -> np.ndarray:
        """Valid actions of every sub-environment, bool ``[num_envs, N]``."""
        return self.episodes.mask.astype(bool)

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode in every sub-environment.

        Args:
            seed: ``s`` seeds sub-environment ``i`` with ``s + i``; a list gives each
                its own seed (``None`` entries keep their generator).
            options: ``{"requests": [...]}`` picks one request per sub-environment;
                ``"candidates"`` (``[num_envs, N]`` items) and ``"initial_scores"``
                as the single environment's.
        """
        self._generators = seeded_generators(self._generators, seed, self.episodes)
        self._start(*reset_arguments(options, vector=True))
        return self._observation(), {"request": self.episodes.request.copy()}

    def _start(self, requests: Any = None, candidates: Any = None, scores: Any = None) -> None:
        self._begin(requests, candidates, scores)
        self._episode_arrays = self.episodes.episode_arrays(self.features)
        for array in self._episode_arrays.values():
            # Returned at every step of the episode: read-only, so nobody edits it in place.
            array.flags.writeable = False
        self._autoreset = False

    def step(
        self, actions: Any
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Place one candidate per sub-environment (or start the next episodes)."""
        if self._generators is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        falses = np.zeros(self.num_envs, dtype=bool)
        if self._autoreset:
            self._start()
            info = {"request": self.episodes.request.copy()}
            return self._observation(), np.zeros(self.num_envs), falses, falses.copy(), info
        rewards, terminated, entries = self._act(actions)
        entries = {"request": self.episodes.request.copy(), **entries}
        if terminated:
            entries.update(self.episodes.final_info())
            self._autoreset = True
        info: dict[str, Any] = {}
        for key, value in entries.items():  # with Gymnasium's "_key" masks (all True)
            info[key], info[f"_{key}"] = value, self._every
        done = np.full(self.num_envs, terminated)
        return self._observation(), rewards, done, falses, info

    def _observation(self) -> dict[str, Any]:
        e = self.episodes
        return {
            **self._episode_arrays,
            "slate": e.slate.copy(),
            "step": np.full(self.num_envs, e.t, dtype=np.int64),
            "action_mask": e.mask.copy(),
        }
