"""Episodes stepped in lockstep: the one implementation behind both environments.

The single environment is an :class:`EpisodeBatch` of one; the native vector
environment is one of ``num_envs``. Both therefore compute rewards with the same
code, and a vector environment's sub-environment ``i`` reproduces a single
environment seeded ``seed + i`` (tested).

Randomness: each sub-environment has its own ``numpy`` generator (the single env's
``np_random``). An episode consumes one row of ``1 + L`` uniforms from it: the first
picks the request, the others decide the sampled clicks (``click_mode="sampled"``).
Rows are drawn in blocks of :data:`ROWS_PER_DRAW` episodes, so the vector
environment draws for 1,024 sub-environments once per 64 episodes, not per step.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from rerank_env.task import RerankTask
from simulators.base import PAD, ClickSimulator, PrefixScorer, SlateBatch

RewardMode = Literal["sparse", "dense"]
ClickMode = Literal["expected", "sampled"]
Features = Literal["dense", "indices"]
ROWS_PER_DRAW = 64


#: What an algorithm that ignores action masks (SB3's PPO, A2C, DQN) should do instead.
_MASKING_HINT = (
    "An algorithm without action masking picks placed candidates: use one that masks "
    "(sb3-contrib's MaskablePPO calls action_masks()), or remap invalid actions with "
    "agents.sb3.SB3Agent(algorithm, invalid_actions='remap') (the wrapper "
    "agents.sb3.RemapInvalidActions for your own loop)"
)


class InvalidActionError(ValueError):
    """An action that is masked, out of range, or not an integer."""


def check_modes(reward_mode: str, click_mode: str, features: str, split: str) -> None:
    """Refuse unknown mode strings, naming the valid ones."""
    for name, value, valid in (
        ("reward_mode", reward_mode, ("sparse", "dense")),
        ("click_mode", click_mode, ("expected", "sampled")),
        ("features", features, ("dense", "indices")),
        ("split", split, ("train", "valid", "test")),
    ):
        if value not in valid:
            raise ValueError(f"{name} must be one of {valid}, got {value!r}")


def reset_arguments(options: dict[str, Any] | None, vector: bool) -> tuple[Any, Any, Any]:
    """``(requests, candidates, initial_scores)`` of a ``reset``'s options (``None`` if absent).

    The single environments take ``"request"``, the vector environments
    ``"requests"`` (one per sub-environment); unknown options are refused.
    """
    options = options or {}
    key = "requests" if vector else "request"
    valid = [key, "candidates", "initial_scores"]
    unknown = set(options) - set(valid)
    if unknown:
        raise ValueError(f"unknown reset option(s) {sorted(unknown)}; valid: {valid}")
    requests = options.get(key)
    if requests is not None and not vector:
        requests = np.array([requests])
    return requests, options.get("candidates"), options.get("initial_scores")


class EpisodeBatch:
    """State and dynamics of ``size`` episodes that start and end together.

    Args:
        task: The shared task (requests, simulators).
        size: Episodes stepped together.
        split: Requests are drawn from this split only.
        reward_mode: ``"sparse"`` (the list reward at the last step) or ``"dense"``
            (each step's marginal gain in the prefix value).
        click_mode: ``"expected"`` (click probabilities) or ``"sampled"`` (clicks).
    """

    def __init__(
        self,
        task: RerankTask,
        size: int,
        *,
        split: str,
        reward_mode: RewardMode,
        click_mode: ClickMode,
    ) -> None:
        self.task = task
        self.size = size
        self.split = split
        self.reward_mode = reward_mode
        self.click_mode = click_mode
        n, length = task.num_candidates, task.slate_length
        self.split_requests = task.requests(split)
        self.request = np.zeros(size, dtype=np.int64)
        self.slate = np.full((size, length), PAD, dtype=np.int64)
        self.mask = np.ones((size, n), dtype=np.int8)
        self.probs = np.zeros((size, length), dtype=np.float64)
        self.step_rewards = np.zeros((size, length), dtype=np.float64)
        self.clicks = np.zeros((size, length), dtype=bool)
        self.uniforms = np.zeros((size, length), dtype=np.float64)
        self.t = 0
        self.active = False
        self._rows = np.zeros((size, ROWS_PER_DRAW, 1 + length), dtype=np.float64)
        self._next_row = np.full(size, ROWS_PER_DRAW, dtype=np.int64)
        self._arange = np.arange(size)
        self.candidate_items = np.zeros((size, n), dtype=np.int64)
        self.candidate_scores = np.zeros((size, n), dtype=np.float32)
        self._users_t = self._candidates_t = self._histories_t = torch.empty(0)
        self._scorer: PrefixScorer | None = None

    def forget_rows(self, envs: np.ndarray) -> None:
        """Discard buffered uniforms of ``envs`` (their generator was just re-seeded)."""
        self._next_row[envs] = ROWS_PER_DRAW

    def start(
        self,
        generators: list[np.random.Generator],
        requests: np.ndarray | None = None,
        candidates: Any = None,
        initial_scores: Any = None,
    ) -> None:
        """Begin new episodes in every slot, drawing each slot's row from its generator.

        Args:
            generators: One generator per slot.
            requests: Force these requests (one per slot, from this split); the
                row is still consumed, so the random stream does not depend on it.
            candidates: Item indices ``[size, N]`` offered instead of the requests'
                own candidates (any order, e.g. a permutation of them, or the
                user's own list); needs ``requests``.
            initial_scores: The upstream scores of ``candidates``, ``[size, N]``;
                by default each item keeps its score in the request's candidates
                (items not among them then need this).
        """
        if candidates is not None and requests is None:
            raise ValueError(
                "the 'candidates' option needs the request they belong to (its user and "
                "history): pass 'request' (vector env: 'requests') as well"
            )
        if initial_scores is not None and candidates is None:
            raise ValueError("'initial_scores' applies to 'candidates' given with them")
        if requests is not None:  # validated before any randomness is consumed
            requests = self._checked_requests(requests)
            if candidates is not None:
                candidates, initial_scores = self._checked_candidates(
                    requests, candidates, initial_scores
                )
        for env in np.flatnonzero(self._next_row >= ROWS_PER_DRAW):
            self._rows[env] = generators[env].random((ROWS_PER_DRAW, self._rows.shape[2]))
            self._next_row[env] = 0
        rows = self._rows[self._arange, self._next_row]
        self._next_row += 1
        if requests is None:
            count = len(self.split_requests)
            picks = np.minimum((rows[:, 0] * count).astype(np.int64), count - 1)
            requests = self.split_requests[picks]
        self.request[:] = requests
        task = self.task
        if candidates is None:
            # np.take: a row gather 2-3x faster than fancy indexing (a hot path).
            np.take(task.candidates_np, self.request, axis=0, out=self.candidate_items)
            np.take(task.scores_np, self.request, axis=0, out=self.candidate_scores)
        else:
            self.candidate_items[:] = candidates
            self.candidate_scores[:] = initial_scores
        requests_t = torch.as_tensor(self.request, device=task.device)
        # Per-episode rows, gathered once (index_select: several times faster than indexing).
        self._users_t = task.users.index_select(0, requests_t)
        self._candidates_t = (
            task.candidates.index_select(0, requests_t)  # on the device, as always
            if candidates is None
            else torch.tensor(self.candidate_items, device=task.device)
        )
        self._histories_t = task.histories.index_select(0, requests_t)
        simulator = self._training_simulator()
        with torch.no_grad():  # what does not depend on the order, once per episode
            self._scorer = simulator.prefix_scorer(
                self._users_t, self._candidates_t, self._histories_t, self.slate.shape[1]
            )
        self.uniforms[:] = rows[:, 1:]
        self.slate.fill(PAD)
        self.mask.fill(1)
        self.probs.fill(0.0)
        self.step_rewards.fill(0.0)
        self.clicks.fill(False)
        self.t = 0
        self.active = True

    def _checked_requests(self, requests: Any) -> np.ndarray:
        """Forced requests as int64 ``[size]``, each an integer of this split."""
        raw = np.asarray(requests)
        if raw.dtype == bool or not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"requests must be integer request indices, got {requests!r}")
        if raw.size != self.size:
            raise ValueError(f"need {self.size} request(s), one per episode; got {raw.size}")
        raw = raw.astype(np.int64).reshape(self.size)
        outside = ~np.isin(raw, self.split_requests)
        if outside.any():
            bad = int(raw[outside][0])
            raise ValueError(
                f"request {bad} is not a {self.split!r} request (valid: the "
                f"{self.split!r} requests, task.requests({self.split!r})); splits never mix"
            )
        return raw

    def _checked_candidates(
        self, requests: np.ndarray, candidates: Any, initial_scores: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(items [size, N], scores [size, N])`` given for ``requests``, checked."""
        task, n = self.task, self.task.num_candidates
        raw = np.asarray(candidates)
        if raw.dtype == bool or not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"candidates must be integer item indices, got {candidates!r}")
        if raw.size != self.size * n:
            raise ValueError(
                f"candidates must hold N = {n} item indices per episode ({self.size} "
                f"episode(s)); got shape {raw.shape}"
            )
        items = raw.astype(np.int64).reshape(self.size, n)
        n_items = task.pool.n_items
        if ((items < 0) | (items >= n_items)).any():
            bad = int(items[(items < 0) | (items >= n_items)][0])
            raise ValueError(f"candidate item {bad} is not an item index (valid: 0..{n_items - 1})")
        for row in items:
            values, counts = np.unique(row, return_counts=True)
            if (counts > 1).any():
                raise ValueError(
                    f"candidates list item {int(values[counts > 1][0])} more than once; a "
                    "request's candidates are distinct items"
                )
        low, high = float(task.scores_np.min()), float(task.scores_np.max())
        if initial_scores is None:
            own = task.candidates_np[requests]
            found = own[:, None, :] == items[:, :, None]  # [size, N given, N own]
            missing = ~found.any(axis=2)
            if missing.any():
                episode, slot = np.argwhere(missing)[0]
                raise ValueError(
                    f"candidate item {int(items[episode, slot])} is not among request "
                    f"{int(requests[episode])}'s candidates, so it has no initial score: pass "
                    "'initial_scores' (one per candidate) with the candidates"
                )
            scores = (found * task.scores_np[requests][:, None, :]).sum(axis=2)
        else:
            scores = np.asarray(initial_scores, dtype=np.float64)
            if scores.size != self.size * n or not np.isfinite(scores).all():
                raise ValueError(
                    f"initial_scores must be N = {n} finite scores per episode; got shape "
                    f"{scores.shape}"
                )
            scores = scores.reshape(self.size, n)
            if (scores < low).any() or (scores > high).any():
                raise ValueError(
                    f"initial_scores must lie in the task's score range [{low:.4g}, {high:.4g}] "
                    f"(the observation space's bounds); got [{scores.min():.4g}, "
                    f"{scores.max():.4g}]: rescale them"
                )
        return items, scores.astype(np.float32)

    def validate(self, actions: Any, shown: Any = None) -> np.ndarray:
        """Actions as int64 ``[size]``, or :class:`InvalidActionError` naming the problem.

        ``shown`` is the action as the caller passed it (for the message).
        """
        raw = np.asarray(actions)
        if raw.dtype != np.int64 and (
            raw.dtype == bool or not np.issubdtype(raw.dtype, np.integer)
        ):
            raise InvalidActionError(
                f"action {actions if shown is None else shown!r} must be an integer "
                f"candidate position (dtype "
                f"{raw.dtype} given); valid: the unmasked positions in 0..{self.mask.shape[1] - 1}"
            )
        if raw.shape != (self.size,):
            raise InvalidActionError(
                f"actions of shape {raw.shape} given; expected one candidate position per "
                f"environment, shape ({self.size},)"
            )
        actions = raw.astype(np.int64)  # a copy: the caller may reuse its array
        n = self.mask.shape[1]
        if actions.min() < 0 or actions.max() >= n:  # two reductions, then the slow path
            env = int(np.flatnonzero((actions < 0) | (actions >= n))[0])
            raise InvalidActionError(
                f"action {int(actions[env])}{self._where(env)} is out of range; valid: "
                f"{self._valid(env)} (Discrete({n}) with already placed items masked)"
            )
        allowed = self.mask[self._arange, actions]
        if not allowed.all():
            env = int(np.flatnonzero(allowed == 0)[0])
            raise InvalidActionError(
                f"action {int(actions[env])}{self._where(env)} places a candidate that is "
                f"already in the slate {self.slate[env, : self.t].tolist()}; valid: "
                f"{self._valid(env)}. {_MASKING_HINT}"
            )
        return actions

    def _where(self, env: int) -> str:
        return f" of sub-environment {env}" if self.size > 1 else ""

    def _valid(self, env: int) -> str:
        valid = np.flatnonzero(self.mask[env])
        shown = ", ".join(map(str, valid[:12])) + (", ..." if len(valid) > 12 else "")
        return f"[{shown}] ({len(valid)} positions; see action_masks())"

    @torch.no_grad()
    def place(self, actions: Any, shown: Any = None) -> tuple[np.ndarray, bool]:
        """Place ``actions`` in slot ``t`` of every episode (``shown``: see :meth:`validate`).

        Returns:
            ``(rewards [size] float64, terminated)``.
        """
        if not self.active:
            raise RuntimeError(
                "step() called after the episode ended (or before reset()); call reset()"
            )
        actions = self.validate(actions, shown)
        t = self.t
        self.slate[:, t] = actions
        self.mask[self._arange, actions] = 0
        probs = self._position_probs(actions)
        self.probs[:, t] = probs
        if self.click_mode == "sampled":
            self.clicks[:, t] = self.uniforms[:, t] < probs
            self.step_rewards[:, t] = self.clicks[:, t]
        else:
            self.step_rewards[:, t] = probs
        self.t = t + 1
        terminated = self.t == self.slate.shape[1]
        if self.reward_mode == "dense":
            rewards = self.step_rewards[:, t].copy()
        elif terminated:
            rewards = self.list_rewards()
        else:
            rewards = np.zeros(self.size, dtype=np.float64)
        if terminated:
            self.active = False
        return rewards, terminated

    def final_info(self) -> dict[str, np.ndarray]:
        """What the last step's ``info`` reports about the finished lists, each ``[size]``.

        ``list_reward`` (what sparse mode paid), ``eval_reward`` (held-out
        simulator) and, where the task has one, ``true_reward``.
        """
        info = {"list_reward": self.list_rewards(), "eval_reward": self.final_rewards("eval")}
        if self.task.has_simulator("true"):
            info["true_reward"] = self.final_rewards("true")
        return info

    def list_rewards(self) -> np.ndarray:
        """Sum of the step rewards so far, in step order (what sparse mode pays)."""
        total = np.zeros(self.size, dtype=np.float64)
        for k in range(self.t):  # in order, so the dense rewards sum to exactly this
            total += self.step_rewards[:, k]
        return total

    def _training_simulator(self) -> ClickSimulator:
        simulator = self.task.simulators["train"]
        if simulator.training:
            raise RuntimeError(
                "the task's training simulator is in train mode (dropout would make rewards "
                "random); simulators are shared by every env of the task: call .eval() on it"
            )
        return simulator

    def _position_probs(self, actions: np.ndarray) -> np.ndarray:
        """Training simulator's click probability of the slot just filled, given the prefix."""
        self._training_simulator()  # still in eval mode (it is shared)
        positions = torch.from_numpy(actions).to(self.task.device)
        return self._scorer.place(positions).cpu().numpy()  # float32; stored as float64

    @torch.no_grad()
    def final_rewards(self, role: str) -> np.ndarray:
        """Expected clicks of the finished lists under simulator ``role``."""
        slate = torch.as_tensor(self.slate, device=self.task.device)
        batch = SlateBatch(
            self._users_t, torch.gather(self._candidates_t, 1, slate), self._histories_t
        )
        # The lists were validated step by step; skip re-validating them here.
        rewards = self.task.simulators[role].expected_reward(batch, validate=False)
        return rewards.double().cpu().numpy()

    def episode_arrays(self, features: Features) -> dict[str, np.ndarray]:
        """The observation arrays that stay fixed during an episode (fresh arrays)."""
        return episode_arrays(
            self.task, self.request, features, self.candidate_items, self.candidate_scores
        )


def episode_arrays(
    task: RerankTask,
    requests: np.ndarray,
    features: Features,
    candidates: np.ndarray | None = None,
    initial_scores: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Observation entries fixed during an episode of each request: user, candidates, scores.

    Fresh arrays with a leading batch axis, as the vector environment observes them.
    ``candidates`` and ``initial_scores`` (``[B, N]``) replace the requests' own.
    """
    if candidates is None:
        candidates = np.take(task.candidates_np, requests, axis=0)
        initial_scores = np.take(task.scores_np, requests, axis=0)
    users = np.take(task.pool.request_user, requests)
    if features == "dense":  # np.take: faster row gathers than fancy indexing
        return {
            "user": np.take(task.user_table, users, axis=0),
            "candidates": np.take(task.item_table, candidates, axis=0),
            "initial_scores": np.array(initial_scores, dtype=np.float32),
        }
    return {
        "user": users.astype(np.int64),
        "candidates": np.array(candidates, dtype=np.int64),
        "initial_scores": np.array(initial_scores, dtype=np.float32),
    }
