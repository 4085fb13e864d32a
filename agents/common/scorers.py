"""One interface for valuing lists: :class:`ListScorer`.

Every method that values lists goes through it, whatever does the valuing: the
task's training simulator (the reward the suite trains on), a held-out or the true
simulator (judges), a click model learned from the logs (GoalRank's and the
generator-evaluator's reward model), or DeGRe's lookahead evaluator. A scorer
counts the sequences it valued (:attr:`ListScorer.calls`), the budget unit the
method comparisons are matched on.

Lists are candidate positions of a task's requests (``0 .. N-1``), as everywhere
in the suite.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rerank_env.task import RerankTask
from simulators.base import ClickSimulator

#: ``score(rows, slots) -> [M]``: the value of each prefix ``slots`` of request
#: ``requests[rows]`` (the scorer :func:`simulators.search.beam_search_slots` takes).
PrefixScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ListScorer(ABC):
    """Values lists of a task's requests; counts the sequences it valued.

    Subclasses implement ``_prefix_values``; a top-down scorer values every
    prefix of a list in one pass, so one list is one call whatever its length.

    Attributes:
        calls: Sequences (lists or prefixes) valued so far.
    """

    #: Whether a call queries one of the task's simulators (counted as simulator calls).
    queries_simulator: bool = False

    def __init__(self) -> None:
        self.calls = 0

    @abstractmethod
    def _prefix_values(
        self, task: RerankTask, requests: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        """Value of every prefix, ``[M, T]`` (requests long ``[M]`` on the task's device)."""

    def _list_values(
        self, task: RerankTask, requests: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        """Value of each whole list, ``[M]`` (subclasses may do it in fewer operations)."""
        return self._prefix_values(task, requests, slots)[:, -1]

    @torch.no_grad()
    def prefix_values(self, task: RerankTask, requests: Any, slots: Any) -> torch.Tensor:
        """Value of every prefix of each list, float ``[M, T]`` (one call per list).

        Args:
            task: The task the requests index.
            requests: Request indices ``[M]``.
            slots: Candidate positions ``[M, T]``.
        """
        requests, slots = self._tensors(task, requests, slots)
        self.calls += len(slots)
        return self._prefix_values(task, requests, slots)

    @torch.no_grad()
    def list_values(self, task: RerankTask, requests: Any, slots: Any) -> torch.Tensor:
        """Value of each list, float ``[M]``."""
        requests, slots = self._tensors(task, requests, slots)
        self.calls += len(slots)
        return self._list_values(task, requests, slots)

    @torch.no_grad()
    def group_values(self, task: RerankTask, requests: Any, lists: Any) -> torch.Tensor:
        """Value of each list of each request's group, in one call, float ``[B, G]``.

        Args:
            task: The task.
            requests: Request indices ``[B]``.
            lists: ``[B, G, L]``: ``G`` lists per request.
        """
        lists = torch.as_tensor(lists)
        batch, count, length = lists.shape
        flat_requests = np.repeat(np.asarray(requests), count)
        values = self.list_values(task, flat_requests, lists.reshape(batch * count, length))
        return values.reshape(batch, count)

    def prefix_scorer(self, task: RerankTask, requests: np.ndarray) -> PrefixScorer:
        """``score(rows, slots)`` for a search over ``requests``' candidates (counts calls).

        Scorers with per-request work (an evaluator's context) do it once here.
        """
        requests_t = torch.as_tensor(np.array(requests), device=task.device)

        def score(rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
            self.calls += len(rows)
            return self._list_values(task, requests_t[rows], slots)

        return score

    @staticmethod
    def _tensors(task: RerankTask, requests: Any, slots: Any) -> tuple[torch.Tensor, torch.Tensor]:
        requests_t = torch.as_tensor(np.array(requests), dtype=torch.long, device=task.device)
        slots_t = torch.as_tensor(slots, dtype=torch.long, device=task.device)
        if slots_t.ndim != 2 or len(slots_t) != len(requests_t):
            raise ValueError(
                f"expected lists [M, T] for M = {len(requests_t)} requests, got shape "
                f"{tuple(slots_t.shape)}"
            )
        return requests_t, slots_t


class SimulatorScorer(ListScorer):
    """One of the task's simulators: ``"train"`` (the reward), ``"eval"`` or ``"true"``.

    Args:
        role: The simulator role.
    """

    queries_simulator = True

    def __init__(self, role: str = "train") -> None:
        super().__init__()
        self.role = role

    def _prefix_values(
        self, task: RerankTask, requests: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        return task.prefix_values(requests, slots, self.role)

    def _list_values(
        self, task: RerankTask, requests: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        return task.expected_reward(requests, slots, self.role)

    def __repr__(self) -> str:
        return f"SimulatorScorer(role={self.role!r})"


class ClickModelScorer(ListScorer):
    """A click model of the agent's own (e.g. learned from the logs): expected clicks.

    Args:
        model: Any :class:`~simulators.base.ClickSimulator` over the task's users and items.
    """

    def __init__(self, model: ClickSimulator) -> None:
        super().__init__()
        self.model = model

    def _prefix_values(
        self, task: RerankTask, requests: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        model = self.model.to(task.device).eval()
        return model.prefix_values(task.slate_batch(requests, slots))

    def _list_values(
        self, task: RerankTask, requests: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        model = self.model.to(task.device).eval()
        return model.expected_reward(task.slate_batch(requests, slots))

    def __repr__(self) -> str:
        return f"ClickModelScorer({type(self.model).__name__})"


def slot_one_values(task: RerankTask, requests: np.ndarray, scorer: ListScorer) -> np.ndarray:
    """The scorer's value of each candidate alone in slot 1, ``[B, N]``."""
    batch, k = len(requests), task.num_candidates
    score = scorer.prefix_scorer(task, requests)
    rows = torch.arange(batch, device=task.device).repeat_interleave(k)
    slots = torch.arange(k, device=task.device).repeat(batch)[:, None]
    return score(rows, slots).reshape(batch, k).cpu().numpy()
