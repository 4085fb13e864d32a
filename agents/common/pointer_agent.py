"""The base of agents whose model is a :class:`~agents.common.pointer.PointerPolicy`.

Seq2Slate, DeGRe's generator and GoalRank differ in how they train the pointer
policy, not in how it serves: :class:`PointerAgent` gives them, once, greedy
ranking (one batched pass, completing any prefix), sampling (Gumbel-max with
per-request noise, so a request's lists do not depend on the batch), the shapes a
task implies, building the policy, and the learning-curve point (greedy reward on
validation requests under the training simulator).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import TrainableAgent
from agents.common.nn import input_dims
from agents.common.pointer import PointerPolicy, greedy_lists, sampled_lists
from rerank_env.task import RerankTask


class PointerAgent(TrainableAgent):
    """A trainable agent serving a pointer policy stored as ``modules["policy"]``.

    Subclasses implement ``_train`` (``fit``'s method stage) and, if they hold more
    than the policy, extend :meth:`_build_info` and :meth:`_build` (create the
    policy with :meth:`_pointer_policy` inside their seeded context).
    """

    #: Whether :meth:`sample` works (an agent serving something else sets it False).
    can_sample: bool = True

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        user_dim, item_dim = input_dims(task)
        return {"user_dim": user_dim, "item_dim": item_dim, "max_length": task.slate_length}

    def _pointer_policy(
        self, *, dim: int, encoder_layers: int, decoder_layers: int, heads: int
    ) -> PointerPolicy:
        """A new :class:`PointerPolicy` for the shapes in ``build_info`` (caller seeds it)."""
        info = self.build_info
        return PointerPolicy(
            info["user_dim"],
            info["item_dim"],
            dim=dim,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            heads=heads,
            max_length=info["max_length"],
        )

    def curve_point(
        self, task: RerankTask, requests: np.ndarray, **counters: float
    ) -> dict[str, float]:
        """A learning-curve point: ``counters`` and the greedy lists' ``valid_reward``.

        ``valid_reward`` is the mean expected clicks of :meth:`rank`'s lists for
        ``requests`` under the training simulator (validation requests: never trained on).
        """
        lists = self.rank(task, requests)
        reward = task.expected_reward(requests, lists, "train").mean().item()
        return {**counters, "valid_reward": reward}

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Greedy decoding in one batched pass, completing any prefix."""
        self._require_built()
        return greedy_lists(self.modules["policy"], task, requests, prefixes)

    def sample(
        self,
        task: RerankTask,
        requests: np.ndarray,
        count: int,
        seed: int,
        prefixes: np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """``count`` lists per request sampled from the policy, ``[B, count, L]``.

        A request's lists depend only on ``(seed, request)`` (see
        :func:`~agents.common.pointer.sampled_lists`), not on the rest of the batch.
        """
        self._require_built()
        if not self.can_sample:
            raise TypeError(f"{self.name!r} has no generator (pointer policy) to sample from")
        return sampled_lists(
            self.modules["policy"], task, requests, count, seed, prefixes, temperature
        )
