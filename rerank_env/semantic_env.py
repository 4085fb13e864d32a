"""``SlateRerankGlobal-v0``: rerank by emitting semantic-ID tokens, one token per step.

GloRank's action space. Every item has a semantic ID (``task.tokenizer``: a short
code, coarse to fine, unique per item) written as global tokens: code ``c`` of
level ``l`` is token ``offset[l] + c``, the same token in every request. An item is
placed when the last token of its code is emitted; the tokens allowed at each step
are those that continue the current prefix towards a candidate not yet placed (a
prefix trie over the request's remaining candidates).

:class:`TokenEpisodes` is the token layer over :class:`~rerank_env.core.EpisodeBatch`
(so rewards, modes and the synthetic world's true reward are computed by the same
code as ``SlateRerank-v0``); the single and the vector environment both step it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from rerank_env.core import (
    EpisodeBatch,
    Features,
    InvalidActionError,
)
from rerank_env.env import SlateRerankEnv, observation_space
from rerank_env.spaces import MaskedDiscrete, MaskedMultiDiscrete
from rerank_env.task import RerankTask
from rerank_env.vector import SlateRerankVectorEnv


class TokenEpisodes:
    """Episodes of an :class:`EpisodeBatch` stepped one semantic-ID token at a time.

    Args:
        episodes: The item-level episodes (rewards, masks of placed candidates).
        item_tokens: Every item's code as global token ids, int64 ``[I, levels]``.
        vocab_size: Tokens over all levels, ``V``.
    """

    def __init__(self, episodes: EpisodeBatch, item_tokens: np.ndarray, vocab_size: int) -> None:
        item_tokens = np.asarray(item_tokens, dtype=np.int64)
        if item_tokens.ndim != 2 or item_tokens.min() < 0 or item_tokens.max() >= vocab_size:
            raise ValueError(
                f"item_tokens must be token ids [items, levels] in 0..{vocab_size - 1}; got "
                f"shape {item_tokens.shape}"
            )
        self.episodes = episodes
        self.item_tokens = item_tokens
        self.vocab_size = vocab_size
        self.levels = item_tokens.shape[1]
        size, n = episodes.size, episodes.task.num_candidates
        self.candidate_tokens = np.zeros((size, n, self.levels), dtype=np.int64)
        self.prefix = np.full((size, self.levels), -1, dtype=np.int64)
        self.depth = 0
        self.tokens_emitted = 0
        self.mask = np.zeros((size, vocab_size), dtype=np.int8)
        self._arange = np.arange(size)

    @property
    def size(self) -> int:
        """Episodes stepped together."""
        return self.episodes.size

    def start(self, generators: list[np.random.Generator], *args: Any) -> None:
        """Begin new episodes (arguments as :meth:`EpisodeBatch.start`)."""
        self.episodes.start(generators, *args)
        self.candidate_tokens[:] = self.item_tokens[self.episodes.candidate_items]
        self.prefix.fill(-1)
        self.depth = 0
        self.tokens_emitted = 0
        self._update_mask()

    def _matching(self) -> np.ndarray:
        """Bool ``[size, N]``: unplaced candidates whose code starts with the prefix."""
        d = self.depth
        unplaced = self.episodes.mask.astype(bool)
        same = self.candidate_tokens[:, :, :d] == self.prefix[:, None, :d]
        return unplaced & same.all(axis=2)

    def _update_mask(self) -> None:
        rows, cols = np.nonzero(self._matching())
        self.mask.fill(0)
        self.mask[rows, self.candidate_tokens[rows, cols, self.depth]] = 1

    def emit(self, tokens: Any, shown: Any = None) -> tuple[np.ndarray, bool, np.ndarray]:
        """Append one token to every episode's prefix.

        Returns:
            ``(rewards [size], terminated, placed [size])``: ``placed`` is the
            candidate position each episode's completed code names, ``-1`` for all
            when this token did not complete a code.
        """
        if not self.episodes.active:
            raise RuntimeError(
                "step() called after the episode ended (or before reset()); call reset()"
            )
        tokens = self._validate(tokens, shown)
        self.prefix[:, self.depth] = tokens
        self.tokens_emitted += 1
        placed = np.full(self.size, -1, dtype=np.int64)
        if self.depth < self.levels - 1:
            self.depth += 1
            self._update_mask()
            return np.zeros(self.size, dtype=np.float64), False, placed
        # The code is complete: place the first unplaced candidate holding it (codes
        # are unique per item, so exactly one unless a user's code table repeats one).
        self.depth = self.levels
        placed = self._matching().argmax(axis=1)
        rewards, terminated = self.episodes.place(placed)
        self.prefix.fill(-1)
        self.depth = 0
        if not terminated:
            self._update_mask()
        else:
            self.mask.fill(0)
        return rewards, terminated, placed

    def _validate(self, tokens: Any, shown: Any) -> np.ndarray:
        raw = np.asarray(tokens)
        if raw.dtype == bool or not np.issubdtype(raw.dtype, np.integer):
            raise InvalidActionError(
                f"action {tokens if shown is None else shown!r} must be an integer token "
                f"(dtype {raw.dtype} given); valid: {self._valid(0)}"
            )
        if raw.shape != (self.size,):
            raise InvalidActionError(
                f"actions of shape {raw.shape} given; expected one token per environment, "
                f"shape ({self.size},)"
            )
        tokens = raw.astype(np.int64)
        outside = (tokens < 0) | (tokens >= self.vocab_size)
        bad = outside.copy()
        bad[~outside] = self.mask[self._arange[~outside], tokens[~outside]] == 0
        if bad.any():
            env = int(np.flatnonzero(bad)[0])
            where = f" of sub-environment {env}" if self.size > 1 else ""
            why = (
                f"is outside the vocabulary Discrete({self.vocab_size})"
                if outside[env]
                else f"continues no unplaced candidate's code from prefix "
                f"{self.prefix[env, : self.depth].tolist()} (level {self.depth})"
            )
            raise InvalidActionError(
                f"token {int(tokens[env])}{where} {why}; valid: {self._valid(env)}"
            )
        return tokens

    def _valid(self, env: int) -> str:
        valid = np.flatnonzero(self.mask[env])
        shown = ", ".join(map(str, valid[:12])) + (", ..." if len(valid) > 12 else "")
        return f"[{shown}] ({len(valid)} tokens; see action_masks())"


def token_observation_space(task: RerankTask, features: Features) -> spaces.Dict:
    """The observation space of ``SlateRerankGlobal-v0`` over ``task``."""
    base = observation_space(task, features, stepwise=True)
    vocab, levels = task.tokenizer.vocab_size, task.tokenizer.n_levels
    n, length = task.num_candidates, task.slate_length
    entries = dict(base.spaces)
    entries["candidate_tokens"] = spaces.Box(0, vocab - 1, (n, levels), np.int64)
    entries["prefix"] = spaces.Box(-1, vocab - 1, (levels,), np.int64)
    entries["step"] = spaces.Discrete(length * levels + 1)
    entries["action_mask"] = spaces.MultiBinary(vocab)
    return spaces.Dict(entries)


class SlateRerankGlobalEnv(SlateRerankEnv):
    """Rerank one request by writing each chosen item's semantic ID, one token per step.

    ## Description

    The requests and simulators of ``SlateRerank-v0``, in GloRank's *global* action
    space: instead of "the j-th candidate" (a different item in every request), the
    agent writes an item's semantic ID, a code of ``levels`` tokens from a
    vocabulary shared by all requests (``task.tokenizer``: residual K-means or
    RQ-VAE codes fitted on the training items, see ``simulators.data.semantic_ids``).
    An item is placed in the next slot when its last token is emitted; an episode
    is ``L * levels`` steps.

    ## Action Space

    ``Discrete(V)``, ``V = task.tokenizer.vocab_size``: token ``offset[l] + c`` is
    code ``c`` of level ``l``. Only tokens that continue the current prefix towards
    a candidate not yet placed are valid (a prefix trie over the remaining
    candidates): ``action_masks()`` and ``obs["action_mask"]`` give them and
    ``action_space.sample()`` draws only them. Any other action raises
    :class:`~rerank_env.core.InvalidActionError` naming the valid tokens.

    ## Observation Space

    ``SlateRerank-v0``'s entries (``user``, ``candidates``, ``initial_scores``,
    ``slate``) and:

    * ``candidate_tokens``: int64 ``[N, levels]``, each candidate's code as tokens;
    * ``prefix``: int64 ``[levels]``, tokens of the item being written, ``-1`` after;
    * ``step``: ``Discrete(L * levels + 1)``, tokens emitted;
    * ``action_mask``: ``MultiBinary(V)``, 1 where a token is valid.

    ## Rewards

    As ``SlateRerank-v0``, per placed item: ``reward_mode="dense"`` pays an item's
    marginal gain at the token that completes it (0 at the others);
    ``"sparse"`` pays the list reward at the last token. ``info`` holds
    ``placed_candidate`` (the candidate position the completed code names, ``-1``
    when this token completed none), ``request``, ``slate_items`` and
    ``click_probs``; at the last step ``list_reward``, ``eval_reward`` (held-out
    simulator) and, with ``dataset="synthetic"``, ``true_reward``.

    ## Starting State

    As ``SlateRerank-v0`` (``reset(options={"request": r, "candidates": items})``
    included).

    ## Episode End

    Terminated after the ``L``-th item's last token; never truncated.

    ## Arguments

    As ``SlateRerank-v0``, plus ``semantic_ids=SemanticIdConfig(...)`` (the
    tokenizer: method, levels, codebook size, collision handling).

    ## Gymnasium's ``check_env``

    Every check passes but one, ``check_step_determinism``, which cannot hold here:
    it draws its action (``action_space.seed(123); action_space.sample()``) *before*
    ``reset(seed=123)`` and then steps that action, assuming an action valid before
    a reset is valid after it. Here the valid first tokens are the level-0 codes of
    the candidates of the request that the reset draws, and at the moment of the
    draw ``check_env`` has left the env mid-item, where only next-level tokens
    (disjoint from level-0 ones) are valid: no honest sample is valid in both
    states, so the step raises :class:`~rerank_env.core.InvalidActionError`. The
    suite runs every other check and the same determinism check with the action
    drawn after the seeded reset (``tests/test_clients.py``).

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    env_name = "SlateRerankGlobal-v0"

    def _init_actions(self) -> None:
        tokenizer = self.task.tokenizer  # fitted or loaded now, not at the first reset
        self.tokens = TokenEpisodes(self.episodes, tokenizer.tokens, tokenizer.vocab_size)
        self.observation_space = token_observation_space(self.task, self.features)
        self.action_space = MaskedDiscrete(tokenizer.vocab_size, self.tokens.mask[0])

    def _begin(self, generators: list[np.random.Generator], *options: Any) -> None:
        self.tokens.start(generators, *options)

    def _act(self, action: Any) -> tuple[float, bool, dict[str, Any]]:
        if np.ndim(action) != 0:
            raise InvalidActionError(
                f"action {action!r} must be one integer token (a scalar); valid: "
                f"{self.tokens._valid(0)}"
            )
        rewards, terminated, placed = self.tokens.emit(np.asarray(action).reshape(1), action)
        return float(rewards[0]), terminated, {"placed_candidate": int(placed[0])}

    def action_masks(self) -> np.ndarray:
        """Valid tokens now, bool ``[V]`` (sb3-contrib's MaskablePPO calls this)."""
        return self.tokens.mask[0].astype(bool)

    def _observation(self) -> dict[str, Any]:
        t = self.tokens
        return {
            **super()._observation(),
            "candidate_tokens": t.candidate_tokens[0].copy(),
            "prefix": t.prefix[0].copy(),
            "step": np.int64(t.tokens_emitted),
            "action_mask": t.mask[0].copy(),
        }


class SlateRerankGlobalVectorEnv(SlateRerankVectorEnv):
    """``num_envs`` copies of ``SlateRerankGlobal-v0`` stepped by one batched simulator call.

    ``SlateRerank-v0``'s vector environment with the token layer: autoreset
    ``NEXT_STEP``, sub-environment ``i`` after ``reset(seed=s)`` reproduces the
    single environment seeded ``s + i``, read-only per-episode arrays, ``info``
    entries with their ``_name`` masks (``request``, ``placed_candidate``; at the
    last step ``list_reward``, ``eval_reward`` and, synthetic, ``true_reward``).
    Arguments as ``SlateRerankGlobal-v0`` plus ``num_envs``.
    """

    env_name = "SlateRerankGlobal-v0"

    def _init_actions(self) -> None:
        tokenizer = self.task.tokenizer  # fitted or loaded now, not at the first reset
        self.tokens = TokenEpisodes(self.episodes, tokenizer.tokens, tokenizer.vocab_size)
        self.single_observation_space = token_observation_space(self.task, self.features)
        self.single_action_space = spaces.Discrete(tokenizer.vocab_size)
        self.action_space = MaskedMultiDiscrete(tokenizer.vocab_size, self.tokens.mask)

    def _begin(self, requests: Any, candidates: Any, scores: Any) -> None:
        self.tokens.start(self._generators, requests, candidates, scores)

    def _start(self, requests: Any = None, candidates: Any = None, scores: Any = None) -> None:
        super()._start(requests, candidates, scores)
        tokens = self.tokens.candidate_tokens.copy()
        tokens.flags.writeable = False  # as the other per-episode arrays
        self._episode_arrays["candidate_tokens"] = tokens

    def _act(self, actions: Any) -> tuple[np.ndarray, bool, dict[str, np.ndarray]]:
        rewards, terminated, placed = self.tokens.emit(actions)
        return rewards, terminated, {"placed_candidate": placed}

    def action_masks(self) -> np.ndarray:
        """Valid tokens of every sub-environment, bool ``[num_envs, V]``."""
        return self.tokens.mask.astype(bool)

    def _observation(self) -> dict[str, Any]:
        t = self.tokens
        return {
            **super()._observation(),
            "prefix": t.prefix.copy(),
            "step": np.full(self.num_envs, t.tokens_emitted, dtype=np.int64),
            "action_mask": t.mask.copy(),
        }
