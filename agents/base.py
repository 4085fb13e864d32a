"""The agent interface: rank a batch of requests, or act step by step in an env.

Every agent implements one method, :meth:`Agent.rank`: for a batch of requests of
a :class:`~rerank_env.task.RerankTask`, return one list of ``L`` candidate positions
per request (the numbers the environments' actions use), each starting with the
given prefix when one is given. Everything else is derived from it:

* :func:`checked_rank` validates what an agent returns and names the agent, the
  request and the problem when a list is invalid;
* :meth:`Agent.policy` wraps an agent for step-by-step use in ``SlateRerank-v0`` or
  its vector form, with Stable-Baselines3's ``predict`` signature. At every step it
  asks the agent to complete the slate placed so far, so the step-wise and batch
  forms give the same lists, and an agent stays correct if someone else chose the
  earlier slots.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np

from rerank_env.task import RerankTask
from simulators.base import PAD


class InvalidListError(ValueError):
    """An agent returned a list that is not a valid slate for its request."""


class Agent(ABC):
    """A reranker. Subclasses implement :meth:`rank` (and, if trainable, ``fit``).

    Attributes:
        name: Short name used in tables and error messages.
    """

    name: str = "agent"

    @abstractmethod
    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Lists for ``requests``: int ``[B, L]`` candidate positions, no repeats.

        Args:
            task: The task whose candidates and simulators the requests index.
            requests: Request indices, int ``[B]``.
            prefixes: Optional int ``[B, L]``: slots already filled (``-1`` for empty
                slots, filled ones first); each returned list must start with them.
        """

    def policy(self, env: gym.Env | gym.vector.VectorEnv) -> AgentPolicy:
        """A step-wise policy of this agent in ``env`` (single or native vector env)."""
        return AgentPolicy(self, env)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def empty_prefixes(batch: int, length: int) -> np.ndarray:
    """``[batch, length]`` of ``-1``: nothing placed yet."""
    return np.full((batch, length), PAD, dtype=np.int64)


def checked_rank(
    agent: Agent, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
) -> np.ndarray:
    """``agent.rank(...)``, refused with :class:`InvalidListError` if any list is invalid."""
    requests = np.asarray(requests, dtype=np.int64)
    lists = np.asarray(agent.rank(task, requests, prefixes))
    n, length = task.num_candidates, task.slate_length
    where = f"agent {agent.name!r}"
    if lists.shape != (len(requests), length):
        raise InvalidListError(
            f"{where} returned lists of shape {lists.shape} for {len(requests)} requests; "
            f"expected ({len(requests)}, {length}): L = {length} candidate positions each"
        )
    if not np.issubdtype(lists.dtype, np.integer):
        raise InvalidListError(f"{where} returned {lists.dtype} lists; expected integers")
    for row in range(len(lists)):
        problem = _list_problem(lists[row], n)
        if problem is None and prefixes is not None:
            filled = prefixes[row][prefixes[row] != PAD]
            if not np.array_equal(lists[row, : len(filled)], filled):
                problem = f"does not start with the given prefix {filled.tolist()}"
        if problem is not None:
            raise InvalidListError(
                f"{where} returned an invalid list for request {int(requests[row])}: "
                f"{lists[row].tolist()} {problem}"
            )
    return lists.astype(np.int64)


def _list_problem(row: np.ndarray, n: int) -> str | None:
    outside = (row < 0) | (row >= n)
    if outside.any():
        return f"holds position {int(row[outside][0])}, not a candidate (valid: 0..{n - 1})"
    values, counts = np.unique(row, return_counts=True)
    if (counts > 1).any():
        return f"lists candidate {int(values[counts > 1][0])} twice"
    return None


def complete_by_scores(scores: np.ndarray, length: int, prefixes: np.ndarray | None) -> np.ndarray:
    """Each prefix completed with the best-scored unused candidates, ``[B, L]``.

    Args:
        scores: Higher is better, float ``[B, N]``.
        length: ``L``.
        prefixes: ``[B, L]`` with ``-1`` in empty slots, or ``None``.
    """
    scores = np.array(scores, dtype=np.float64)
    batch = len(scores)
    prefixes = empty_prefixes(batch, length) if prefixes is None else np.asarray(prefixes)
    placed = prefixes != PAD
    rows, slots = np.nonzero(placed)
    scores[rows, prefixes[rows, slots]] = -np.inf  # placed candidates come last
    order = np.argsort(-scores, axis=1, kind="stable")
    lists = prefixes.copy()
    counts = placed.sum(axis=1)
    for count in np.unique(counts):  # rows with the same prefix length fill the same slots
        group = counts == count
        lists[group, count:] = order[group, : length - count]
    return lists


class AgentPolicy:
    """An :class:`Agent` acting step by step, with SB3's ``predict`` signature.

    Args:
        agent: The agent.
        env: ``SlateRerank-v0`` (possibly wrapped) or its native vector env; the
            current requests are read from it.
    """

    def __init__(self, agent: Agent, env: Any) -> None:
        self.agent = agent
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        if not hasattr(self.env, "episodes") or not hasattr(self.env, "task"):
            raise TypeError(
                f"AgentPolicy needs a SlateRerank environment (single or vector), got {env!r}"
            )

    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, None]:
        """The next slot's action for the observed slate(s): ``(actions, None)``."""
        slate = np.asarray(observation["slate"])
        single = slate.ndim == 1
        slates = slate[None] if single else slate
        step = int(np.asarray(observation["step"]).reshape(-1)[0])
        requests = self.env.episodes.request.copy()
        lists = checked_rank(self.agent, self.env.task, requests, slates)
        actions = lists[:, step]
        return (actions[0] if single else actions), None
