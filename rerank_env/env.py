"""``SlateRerank-v0`` (one slot per step) and ``SlateRerankList-v0`` (one list per step)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rerank_env.config import EPISODE_FIELDS, TaskConfig
from rerank_env.core import (
    ClickMode,
    EpisodeBatch,
    Features,
    InvalidActionError,
    RewardMode,
    check_modes,
    reset_arguments,
)
from rerank_env.render import slate_image, slate_text
from rerank_env.spaces import MaskedDiscrete, Permutation
from rerank_env.task import RerankTask, make_task


def build_task(
    owner: str, task: RerankTask | TaskConfig | None, progress: bool, fields: dict[str, Any]
) -> RerankTask:
    """The task an environment's constructor names: a built task, a config, or fields.

    Args:
        owner: The environment class, for messages.
        task: A built :class:`RerankTask` (shared as it is), a
            :class:`~rerank_env.config.TaskConfig`, or ``None`` (``TaskConfig()``).
        progress: Progress bars while building.
        fields: :class:`~rerank_env.config.TaskConfig` fields, applied on top of a
            config (none may go with a built task).

    Raises:
        TypeError: An unknown keyword argument, in Python's own wording (clients
            such as TorchRL recognise it), or fields beside a built task.
    """
    for name in fields:
        if name not in TaskConfig.fields():
            raise TypeError(
                f"{owner}.__init__() got an unexpected keyword argument {name!r}; valid: "
                f"{sorted((*TaskConfig.fields(), *EPISODE_FIELDS, 'task', 'progress'))}"
            )
    if isinstance(task, RerankTask):
        if fields:
            raise TypeError(
                f"{owner}.__init__() got task=<a built RerankTask> and task fields "
                f"{sorted(fields)}: a built task is used as it is; pass a TaskConfig instead"
            )
        return task
    if task is not None and not isinstance(task, TaskConfig):
        raise TypeError(
            f"{owner}.__init__(): task must be a RerankTask, a TaskConfig or None, got {task!r}"
        )
    return make_task(task, progress=progress, **fields)


def observation_space(task: RerankTask, features: Features, *, stepwise: bool) -> spaces.Dict:
    """The observation space of one environment over ``task``."""
    n, length = task.num_candidates, task.slate_length
    if features == "dense":
        # Finite bounds: every value comes from a fixed table (a constant column
        # gets a unit-wide box: Gymnasium rejects low == high).
        item_low, item_high = _bounds(task.item_table)
        entries: dict[str, spaces.Space] = {
            "user": spaces.Box(*_bounds(task.user_table), dtype=np.float32),
            "candidates": spaces.Box(
                np.tile(item_low, (n, 1)), np.tile(item_high, (n, 1)), dtype=np.float32
            ),
        }
    else:
        entries = {
            "user": spaces.Box(0, task.pool.n_users - 1, (), np.int64),
            "candidates": spaces.Box(0, task.pool.n_items - 1, (n,), np.int64),
        }
    scores = task.scores_np
    entries["initial_scores"] = spaces.Box(
        float(scores.min()), float(scores.max()), (n,), np.float32
    )
    if stepwise:
        entries["slate"] = spaces.Box(-1, n - 1, (length,), np.int64)
        entries["step"] = spaces.Discrete(length + 1)
        entries["action_mask"] = spaces.MultiBinary(n)
    return spaces.Dict(entries)


def _start_episode(
    env: SlateRerankEnv | SlateRerankListEnv, seed: int | None, options: dict[str, Any] | None
) -> dict[str, Any]:
    """The part of ``reset`` both single environments share; returns the reset info."""
    if seed is not None:
        env.episodes.forget_rows(np.array([0]))
    env._begin([env.np_random], *reset_arguments(options, vector=False))
    env._episode_arrays = {  # 0-d arrays, not numpy scalars, for Box(shape=())
        key: np.asarray(value[0])
        for key, value in env.episodes.episode_arrays(env.features).items()
    }
    return {"request": int(env.episodes.request[0])}


def _check_render_mode(env: gym.Env, render_mode: str | None) -> None:
    if render_mode is not None and render_mode not in env.metadata["render_modes"]:
        raise ValueError(
            f"render_mode must be None or one of {env.metadata['render_modes']}, "
            f"got {render_mode!r}"
        )


def _render(env: SlateRerankEnv | SlateRerankListEnv) -> str | np.ndarray | None:
    if env.render_mode == "ansi":
        return slate_text(env.episodes)
    if env.render_mode == "rgb_array":
        return slate_image(env.episodes)
    return None


def _bounds(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, high = table.min(axis=0), table.max(axis=0)
    return low, np.where(high > low, high, low + 1).astype(np.float32)


class SlateRerankEnv(gym.Env):
    """Rerank one request's candidates into a slate, one slot per step.

    ## Description

    An episode is one recommendation request: a user and ``N`` candidate items in
    the order of the upstream ranker (a retriever fitted on the training split). At
    step ``t`` the agent places one candidate in slot ``t``; after ``L`` placements
    the slate is complete. A click simulator learned from logged slates (by default
    the embedded ML-100K bundle: a causal Transformer composed with a DCG examination
    prior and diminishing returns for similar items) judges the slate top-down, so
    every prefix has an exact value.

    ## Action Space

    ``Discrete(N)``: the position of a candidate in the request's candidate list.
    Candidates already placed are masked: ``action_masks()`` (sb3-contrib's
    MaskablePPO) and ``obs["action_mask"]`` give the mask; ``action_space.sample()``
    draws only valid actions. A masked, out-of-range or non-integer action raises
    :class:`~rerank_env.core.InvalidActionError` naming it and the valid choices.

    ## Observation Space

    A ``Dict`` of fixed-shape arrays:

    * ``user``: float32 ``[Du + d]``, side features (gender, age, occupation
      one-hot) then the upstream retriever's user vector (ALS factors);
    * ``candidates``: float32 ``[N, Di + d]``, genres and standardised year then the
      retriever's item vector, in the upstream ranker's order;
    * ``initial_scores``: float32 ``[N]``, the upstream ranker's scores;
    * ``slate``: int64 ``[L]``, candidate positions placed so far, ``-1`` if empty;
    * ``step``: ``Discrete(L + 1)``, slots filled;
    * ``action_mask``: ``MultiBinary(N)``, 1 where a candidate may still be placed.

    With ``features="indices"``, ``user`` is the user index (int64 ``[]``) and
    ``candidates`` the item indices (int64 ``[N]``);
    the feature tables are ``env.unwrapped.task.user_table`` and ``task.item_table``,
    to gather on the agent's side (cheaper for large vector environments).
    No observation carries a simulator's parameters; ``representations="privileged"``
    puts the training simulator's learned vectors in place of the retriever's (an
    ablation).

    ## Rewards

    Under the *training* simulator, with ``p_t`` the click probability of slot
    ``t`` given the items above it:

    * ``reward_mode="sparse"``: 0 until the last step, then the list reward
      ``sum_t r_t``;
    * ``reward_mode="dense"``: ``r_t`` at step ``t`` (the marginal gain of the prefix
      value); an episode's dense rewards sum exactly to its sparse reward;
    * ``click_mode="expected"``: ``r_t = p_t``; ``click_mode="sampled"``: ``r_t`` is a
      click drawn with probability ``p_t`` from the environment's generator. Slots
      are drawn independently from these exact marginals, so the joint click
      patterns of cascade-type simulators (at most one click in a cascade) are not
      reproduced; expected rewards are exact for every simulator.

    ``info`` holds ``request``, ``slate_items`` (item indices so far),
    ``click_probs`` (``p_0..p_t``) and, when sampled, ``clicks``. At the last step it
    adds ``list_reward``, ``eval_reward`` (expected clicks under the *held-out*
    simulator, fitted on the other half of every user's sessions: report this, never
    the training reward) and,
    with ``dataset="synthetic"``, ``true_reward`` (the true user model).

    ## Starting State

    A request drawn uniformly from ``split`` (``"train"`` by default; ``"valid"`` and
    ``"test"`` requests never appear in a training env). ``reset(options={"request":
    r})`` picks request ``r`` of that split; adding ``"candidates"`` (``N`` distinct
    item indices) offers those items instead of its own, in that order: a
    permutation of its candidates, or your own list for its user and history (items
    not among its candidates need ``"initial_scores"`` too).

    ## Episode End

    Terminated after ``L`` placements; never truncated. Stepping after the end
    raises ``RuntimeError``.

    ## Arguments

    ```python
    gym.make(
        "SlateRerank-v0",
        dataset="ml-100k",        # "ml-1m" (with data_dir) or "synthetic"
        simulator="transformer",  # "pbm", "dcm", "cascade", "pointwise"
        num_candidates=50,        # N
        slate_length=6,           # L
        reward_mode="sparse",     # or "dense"
        click_mode="expected",    # or "sampled"
        split="train",            # or "valid", "test"
        features="dense",         # or "indices"
        composition=None,         # the dataset's: "fitted" (synthetic) or "assumed";
                                  # "none"; AssumedComposition(position_bias=1, ...)
        held_out=None,            # "sessions" (judge on the other half of the sessions),
                                  # "seed", "users"
        representations="retriever",  # or "privileged": the simulator's vectors
        weight_decay_per_epoch=None,  # e.g. 50: AdamW-fitted simulators
        bundle=None,              # a folder from `rerank-env simulator bundle`
        cold_start=None,          # ColdStartConfig(fraction, seed): withheld items
        render_mode=None,         # "ansi" (text) or "rgb_array" (an image)
        data_dir=None, pipeline=None, synthetic=None, device="cpu",
    )
    gym.make("SlateRerank-v0", task=TaskConfig(num_candidates=20))  # a config
    gym.make("SlateRerank-v0", task=make_task(num_candidates=20))  # a built task, shared
    ```

    The task's options are the fields of :class:`rerank_env.config.TaskConfig`
    (``task=`` takes one, or a built :class:`~rerank_env.task.RerankTask`, which is
    used as it is); ``env.spec.kwargs`` rebuilds the same env (``gym.make(env.spec)``).

    ``render()`` shows the request and the slate so far with each slot's click
    probability: a text with ``render_mode="ansi"``, an RGB uint8 array of fixed
    size with ``"rgb_array"`` (for ``RecordVideo``, notebooks, and SB3's
    ``make_vec_env``, which asks for it); see :mod:`rerank_env.render`.

    With ``cold_start=ColdStartConfig(...)`` a seeded share of items never occurs
    in a ``"train"`` or ``"valid"`` request (``"test"`` requests still hold them);
    see :class:`rerank_env.config.ColdStartConfig`.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 2}
    #: The registered id (for messages).
    env_name = "SlateRerank-v0"

    def __init__(
        self,
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
        check_modes(reward_mode, click_mode, features, split)
        _check_render_mode(self, render_mode)
        self.task = build_task(type(self).__name__, task, progress, task_fields)
        self.render_mode = render_mode
        self.features = features
        self.episodes = EpisodeBatch(
            self.task, 1, split=split, reward_mode=reward_mode, click_mode=click_mode
        )
        self._episode_arrays: dict[str, np.ndarray] = {}
        self._init_actions()

    def _init_actions(self) -> None:
        """The action layer: spaces (a subclass writing tokens overrides these hooks)."""
        self.observation_space = observation_space(self.task, self.features, stepwise=True)
        self.action_space = MaskedDiscrete(self.task.num_candidates, self.episodes.mask[0])

    def _begin(self, generators: list[np.random.Generator], *options: Any) -> None:
        """Start the episode (arguments as :meth:`EpisodeBatch.start`)."""
        self.episodes.start(generators, *options)

    def _act(self, action: Any) -> tuple[float, bool, dict[str, Any]]:
        """Take ``action``: ``(reward, terminated, info entries of the action layer)``."""
        if np.ndim(action) != 0:
            raise InvalidActionError(
                f"action {action!r} must be one integer candidate position (a scalar); "
                f"valid: {self.episodes._valid(0)}"
            )
        rewards, terminated = self.episodes.place(np.asarray(action).reshape(1), shown=action)
        return float(rewards[0]), terminated, {}

    def action_masks(self) -> np.ndarray:
        """Valid actions now, bool ``[N]`` (sb3-contrib's MaskablePPO calls this)."""
        return self.episodes.mask[0].astype(bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode: draw a request of the split (or take ``options["request"]``)."""
        super().reset(seed=seed)
        info = _start_episode(self, seed, options)
        return self._observation(), info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Place candidate ``action`` in the next slot."""
        reward, terminated, entries = self._act(action)
        info = {**self._step_info(), **entries}
        if terminated:
            info.update({key: float(value[0]) for key, value in self.episodes.final_info().items()})
        return self._observation(), reward, terminated, False, info

    def _observation(self) -> dict[str, Any]:
        e = self.episodes
        return {
            **{key: value.copy() for key, value in self._episode_arrays.items()},
            "slate": e.slate[0].copy(),
            "step": np.int64(e.t),
            "action_mask": e.mask[0].copy(),
        }

    def _step_info(self) -> dict[str, Any]:
        e = self.episodes
        slate = e.slate[0, : e.t]
        info = {
            "request": int(e.request[0]),
            "slate_items": e.candidate_items[0, slate].copy(),
            "click_probs": e.probs[0, : e.t].copy(),
        }
        if e.click_mode == "sampled":
            info["clicks"] = e.clicks[0, : e.t].copy()
        return info

    def render(self) -> str | np.ndarray | None:
        """The request and the slate so far (see ``render_mode``); ``None`` without one."""
        return _render(self)


class SlateRerankListEnv(gym.Env):
    """Rerank one request in a single step: the action is the whole ordered list.

    ## Description

    The same requests and simulators as ``SlateRerank-v0`` for non-autoregressive
    rerankers: one step, one complete list, one reward.

    ## Action Space

    :class:`~rerank_env.spaces.Permutation` ``(N, L)``: a ``MultiDiscrete([N] * L)``
    of distinct candidate positions, top slot first. Repeated or out-of-range
    positions raise :class:`~rerank_env.core.InvalidActionError`.

    ## Observation Space

    ``user``, ``candidates`` and ``initial_scores`` as in ``SlateRerank-v0``.

    ## Rewards

    The list reward under the training simulator: expected clicks
    (``click_mode="expected"``) or sampled clicks (``"sampled"``). ``info`` has
    ``click_probs`` per slot, ``slate_items``, ``eval_reward`` (held-out simulator)
    and, in the synthetic world, ``true_reward``.

    ## Episode End

    Terminated after the one step.

    ## Arguments

    As ``SlateRerank-v0`` without ``reward_mode``.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 1}

    def __init__(
        self,
        *,
        click_mode: ClickMode = "expected",
        split: str = "train",
        features: Features = "dense",
        render_mode: str | None = None,
        task: RerankTask | TaskConfig | None = None,
        progress: bool = True,
        **task_fields: Any,
    ) -> None:
        check_modes("sparse", click_mode, features, split)
        _check_render_mode(self, render_mode)
        self.task = build_task(type(self).__name__, task, progress, task_fields)
        self.render_mode = render_mode
        self.features = features
        self.episodes = EpisodeBatch(
            self.task, 1, split=split, reward_mode="sparse", click_mode=click_mode
        )
        self.observation_space = observation_space(self.task, features, stepwise=False)
        self.action_space = Permutation(self.task.num_candidates, self.task.slate_length)
        self._episode_arrays: dict[str, np.ndarray] = {}

    def _begin(self, generators: list[np.random.Generator], *options: Any) -> None:
        self.episodes.start(generators, *options)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Draw a request of the split (or take ``options["request"]``)."""
        super().reset(seed=seed)
        info = _start_episode(self, seed, options)
        return self._observation(), info

    def _observation(self) -> dict[str, Any]:
        return {key: value.copy() for key, value in self._episode_arrays.items()}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Show the list ``action`` (candidate positions, top first)."""
        e = self.episodes
        if not e.active:
            raise RuntimeError(
                "step() called after the episode ended (or before reset()); call reset()"
            )
        self._check_list(action)
        for position in np.asarray(action, dtype=np.int64):
            rewards, terminated = e.place(np.array([position]))
        info = {
            "request": int(e.request[0]),
            "slate_items": e.candidate_items[0, e.slate[0]].copy(),
            "click_probs": e.probs[0].copy(),
        }
        if e.click_mode == "sampled":
            info["clicks"] = e.clicks[0].copy()
        final = e.final_info()
        del final["list_reward"]  # the step's reward
        info.update({key: float(value[0]) for key, value in final.items()})
        return self._observation(), float(rewards[0]), True, False, info

    def render(self) -> str | np.ndarray | None:
        """The request and, after the step, its list (see ``render_mode``)."""
        return _render(self)

    def _check_list(self, action: Any) -> None:
        raw = np.asarray(action)
        n, length = self.task.num_candidates, self.task.slate_length
        valid = f"valid: {length} distinct candidate positions in 0..{n - 1}"
        if raw.dtype == bool or not np.issubdtype(raw.dtype, np.integer):
            raise InvalidActionError(
                f"action {action!r} must hold integers (dtype {raw.dtype}); {valid}"
            )
        if raw.shape != (length,):
            raise InvalidActionError(f"action {raw.tolist()} has shape {raw.shape}; {valid}")
        outside = (raw < 0) | (raw >= n)
        if outside.any():
            raise InvalidActionError(
                f"action {raw.tolist()}: position {int(raw[outside][0])} is not a candidate; "
                f"{valid}"
            )
        values, counts = np.unique(raw, return_counts=True)
        if (counts > 1).any():
            raise InvalidActionError(
                f"action {raw.tolist()} lists candidate {int(values[counts > 1][0])} more than "
                f"once; {valid}"
            )
