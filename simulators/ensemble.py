"""Ensembles of simulators: uncertainty, and a held-out member for evaluation.

An agent trained against a simulator learns its quirks. To tell real gains from
exploitation, evaluate with a simulator that the agent never trained against:
:meth:`SimulatorEnsemble.split_evaluation_member` gives the mean of all members but
one (the training reward) and the remaining member (the evaluation reward).
Members differ in seed and, optionally, in a bootstrap resample of the training
slates (``rerank-env simulator train --members K`` resamples; bundles do not by
default, see ``BundleConfig.bootstrap``).
"""

from __future__ import annotations

import torch
from torch import nn

from simulators.base import ClickSimulator, PrefixScorer, SlateBatch


class SimulatorEnsemble(ClickSimulator):
    """Mean click probabilities of several simulators (still top-down).

    Args:
        members: Simulators over the same users and items.
    """

    def __init__(self, members: list[ClickSimulator]) -> None:
        if not members:
            raise ValueError("SimulatorEnsemble needs at least one member")
        first = members[0]
        if any((m.n_users, m.n_items) != (first.n_users, first.n_items) for m in members):
            raise ValueError("ensemble members must share users and items")
        super().__init__(first.n_users, first.n_items)
        self.members = nn.ModuleList(members)

    def member_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """Every member's click probabilities, ``[M, B, K]``."""
        return torch.stack([m.click_probs(batch, validate=False) for m in self.members])

    def position_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """Mean over members."""
        return self.member_click_probs(batch).mean(dim=0)

    def last_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """Mean over members of their last-position click probabilities."""
        return torch.stack([m.last_click_probs(batch) for m in self.members]).mean(dim=0)

    def prefix_scorer(
        self, users: torch.Tensor, candidates: torch.Tensor, histories: torch.Tensor, length: int
    ) -> PrefixScorer:
        """Every member's own scorer, averaged per slot."""
        return EnsembleScorer(self, users, candidates, histories, length)

    def disagreement(self, batch: SlateBatch) -> torch.Tensor:
        """Standard deviation of the members' expected clicks per list, ``[B]``."""
        rewards = (self.member_click_probs(batch) * batch.mask).sum(dim=2)
        return rewards.std(dim=0, unbiased=len(self.members) > 1)

    def split_evaluation_member(self, index: int = -1) -> tuple[ClickSimulator, ClickSimulator]:
        """``(training simulator, evaluation simulator)``: all members but one, and that one.

        Raises:
            ValueError: Fewer than 2 members.
        """
        if len(self.members) < 2:
            raise ValueError(
                f"a held-out evaluation member needs an ensemble of >= 2, got {len(self.members)}"
            )
        index = index % len(self.members)
        rest = [m for k, m in enumerate(self.members) if k != index]
        return SimulatorEnsemble(rest), self.members[index]


class EnsembleScorer(PrefixScorer):
    """:class:`PrefixScorer` of a :class:`SimulatorEnsemble`: the members' scorers' mean."""

    def _prepare(self) -> None:
        inputs = (self.users, self.candidates, self.histories, self.length)
        self.members = [member.prefix_scorer(*inputs) for member in self.simulator.members]

    def _slot_probs(self, positions: torch.Tensor, t: int) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0].place(positions)
        return torch.stack([m.place(positions) for m in self.members]).mean(dim=0)
