"""The one interface every click simulator implements.

A simulator scores *ordered* lists for a batch of requests. Position ``k`` of a list
is judged top-down: its click probability may depend on the user, the user's
history, and the items at positions ``<= k``, never on items below it. That is what
makes every prefix of a list have an exact value (the sum of its click
probabilities), so dense per-step rewards exist and sum to the list reward.

Inputs are torch tensors on the simulator's device; lists and histories use item
indices of the simulator's catalogue, padded with ``-1``. A padded list position
gets click probability 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

PAD = -1


@contextmanager
def isolated_torch_rng(seed: int) -> Iterator[None]:
    """Run a block on torch's global generator seeded with ``seed``, then restore it.

    torch's layer constructors and dropout draw from the global generator and accept
    no other. Inside this block that generator is seeded; on exit its previous state
    is restored. So building or training a simulator neither depends on nor changes
    global state, and seeded runs are identical.
    """
    # manual_seed also seeds every CUDA device: fork (save and restore) them too.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class SlateBatch:
    """A batch of requests with one ordered (possibly partial) list each.

    Attributes:
        users: User indices, long ``[B]``.
        items: Listed item indices in display order, long ``[B, K]``; ``-1`` pads the
            end of a partial list (a prefix).
        histories: Items the user interacted with before the request, most recent
            last, long ``[B, H]`` padded with ``-1`` (``H`` may be 0).
    """

    users: torch.Tensor
    items: torch.Tensor
    histories: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """Which list positions hold an item, bool ``[B, K]``."""
        return self.items != PAD

    def to(self, device: torch.device | str) -> SlateBatch:
        """Move every tensor to ``device``."""
        return SlateBatch(self.users.to(device), self.items.to(device), self.histories.to(device))


def check_batch(batch: SlateBatch, n_users: int, n_items: int) -> None:
    """Raise a ``ValueError`` naming the tensor when ``batch`` is malformed.

    Checks dtypes, shapes (``users [B]``, ``items [B, K]``, ``histories [B, H]``),
    index ranges, that padding only ends a list, and that no item repeats in a list.
    """
    users, items, histories = batch.users, batch.items, batch.histories
    for name, tensor, ndim in (
        ("users", users, 1),
        ("items", items, 2),
        ("histories", histories, 2),
    ):
        if tensor.dtype != torch.long:
            raise ValueError(f"SlateBatch.{name} must be a torch.long tensor, got {tensor.dtype}")
        if tensor.dim() != ndim:
            raise ValueError(
                f"SlateBatch.{name} must have {ndim} dimension(s), got shape {tuple(tensor.shape)}"
            )
    if not (len(users) == items.shape[0] == histories.shape[0]):
        raise ValueError(
            "SlateBatch tensors disagree on the batch size: users "
            f"{tuple(users.shape)}, items {tuple(items.shape)}, histories {tuple(histories.shape)}"
        )
    if len(users) and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(
            f"SlateBatch.users must be in [0, {n_users}), got {users.min()}..{users.max()}"
        )
    for name, tensor in (("items", items), ("histories", histories)):
        if tensor.numel() and (tensor.min() < PAD or tensor.max() >= n_items):
            raise ValueError(
                f"SlateBatch.{name} must be item indices in [0, {n_items}) or -1 (padding), "
                f"got {tensor.min()}..{tensor.max()}"
            )
    filled = items != PAD
    if items.shape[1] > 1 and (filled[:, 1:] & ~filled[:, :-1]).any():
        row = int((filled[:, 1:] & ~filled[:, :-1]).any(dim=1).nonzero()[0])
        raise ValueError(
            f"SlateBatch.items row {row} has an item after padding: {items[row].tolist()}; "
            "-1 may only end a list"
        )
    ordered = items.sort(dim=1).values
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)
    if repeated.any():
        row = int(repeated.any(dim=1).nonzero()[0])
        raise ValueError(f"SlateBatch.items row {row} lists an item twice: {items[row].tolist()}")


class ClickSimulator(nn.Module, ABC):
    """Base class of click simulators: top-down, batched, torch.

    Subclasses implement :meth:`position_click_probs`; everything else (validation,
    expected reward, prefix values, sampling) is shared.

    Attributes:
        n_users: Users the simulator knows.
        n_items: Items of its catalogue.
        max_positions: Longest list it can score (``None``: any length).
    """

    def __init__(self, n_users: int, n_items: int, max_positions: int | None = None) -> None:
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items
        self.max_positions = max_positions

    def _check_length(self, batch: SlateBatch) -> None:
        length = batch.items.shape[1]
        if self.max_positions is not None and length > self.max_positions:
            raise ValueError(
                f"{type(self).__name__} knows {self.max_positions} positions, got lists of "
                f"{length}; refit with max_positions >= {length}"
            )

    @abstractmethod
    def position_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """Click probability of every list position, float ``[B, K]``.

        Must be causal (position ``k`` ignores items below it) and must not read the
        items at padded positions; the result at padded positions is ignored.
        """

    def click_probs(self, batch: SlateBatch, *, validate: bool = True) -> torch.Tensor:
        """Per-position click probabilities, 0 at padded positions, ``[B, K]``.

        Args:
            batch: Requests and their (partial) lists.
            validate: Check the batch first (:func:`check_batch`); hot loops that
                built the batch themselves may pass ``False``.
        """
        if validate:
            check_batch(batch, self.n_users, self.n_items)
        self._check_length(batch)
        probs = self.position_click_probs(batch)
        if validate and not torch.isfinite(probs).all():
            raise ValueError(f"{type(self).__name__} produced non-finite click probabilities")
        return torch.where(batch.mask, probs, torch.zeros_like(probs))

    def last_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """Click probability of the last position of every list, ``[B]``.

        What a step-wise environment needs each step: the value of the item just
        placed below its prefix. Lists must be full (no padding); nothing is
        validated (a hot loop). Equal to ``click_probs(batch)[:, -1]``; models whose
        last position is cheaper to score alone override it (for a factorised model
        it is one user-item product instead of ``K``).
        """
        self._check_length(batch)
        return self.position_click_probs(batch)[:, -1]

    def prefix_scorer(
        self, users: torch.Tensor, candidates: torch.Tensor, histories: torch.Tensor, length: int
    ) -> PrefixScorer:
        """A :class:`PrefixScorer` for lists of ``length`` built from ``candidates``.

        The step-wise environments' hot loop: each step appends one candidate per
        list and needs that slot's click probability. The default re-scores the
        prefix with :meth:`last_click_probs`; models whose per-candidate work does
        not depend on the prefix override this to do it once per episode.

        Args:
            users: long ``[B]``.
            candidates: Each request's candidate items, long ``[B, N]``.
            histories: long ``[B, H]`` (``-1`` padded).
            length: Slots each list will get (at most ``N``).
        """
        return PrefixScorer(self, users, candidates, histories, length)

    def expected_reward(self, batch: SlateBatch, *, validate: bool = True) -> torch.Tensor:
        """Expected clicks of each (partial) list, float ``[B]``."""
        return self.click_probs(batch, validate=validate).sum(dim=1)

    def prefix_values(self, batch: SlateBatch, *, validate: bool = True) -> torch.Tensor:
        """Expected clicks of every prefix ``items[:, :k + 1]``, float ``[B, K]``.

        Exact because the simulator is top-down: adding an item below a prefix does
        not change the prefix's click probabilities. The step-wise differences are the
        dense rewards; they sum to :meth:`expected_reward`.
        """
        return self.click_probs(batch, validate=validate).cumsum(dim=1)

    def log_likelihood(self, batch: SlateBatch, clicks: torch.Tensor) -> torch.Tensor:
        """Log-likelihood of observed ``clicks`` (bool ``[B, K]``) per list, ``[B]``.

        The default treats positions as independent Bernoulli variables with the
        model's marginals (exact for pointwise and PBM models; models with a joint
        click structure, like the DCM, override it).
        """
        probs = self.click_probs(batch, validate=False).clamp(1e-6, 1 - 1e-6)
        per_position = torch.where(clicks, probs.log(), (1 - probs).log())
        return (per_position * batch.mask).sum(dim=1)

    def sample_clicks(
        self, batch: SlateBatch, generator: torch.Generator, *, validate: bool = True
    ) -> torch.Tensor:
        """Clicks drawn from the per-position marginals with ``generator``, bool ``[B, K]``.

        Positions are drawn independently given the list (the marginals are exact;
        joint click patterns of cascade-type models are not reproduced).
        """
        probs = self.click_probs(batch, validate=validate)
        draws = torch.rand(probs.shape, generator=generator, device=probs.device)
        return draws < probs


class PrefixScorer:
    """Click probabilities of lists built one slot at a time from fixed candidates.

    ``place(positions)`` appends ``candidates[b, positions[b]]`` to list ``b`` and
    returns that slot's click probability ``[B]``: exactly what
    :meth:`ClickSimulator.last_click_probs` gives on the new prefix (up to float
    rounding). This generic scorer keeps the lists and calls it on the prefix at
    every step; models subclass it to compute what does not depend on the prefix
    (attractiveness of every candidate, pairwise similarities) once, in
    ``__init__``, so that a step costs a gather and a few elementwise operations.

    Callers validate positions (in range, each candidate at most once per list);
    the scorer does not, as it sits in the environments' hot loop.

    Attributes:
        length: Slots per list.
        t: Slots filled.
    """

    def __init__(
        self,
        simulator: ClickSimulator,
        users: torch.Tensor,
        candidates: torch.Tensor,
        histories: torch.Tensor,
        length: int,
    ) -> None:
        if candidates.dim() != 2 or not 0 < length <= candidates.shape[1]:
            raise ValueError(
                f"length must be in 1..N = {candidates.shape[-1]} (candidates of shape "
                f"{tuple(candidates.shape)}), got {length}"
            )
        simulator._check_length(SlateBatch(users, candidates[:, :length], histories))
        self.simulator = simulator
        self.users, self.candidates, self.histories = users, candidates, histories
        self.length = length
        self.t = 0
        self._items: torch.Tensor | None = None  # the generic scorer's lists so far
        self._prepare()

    def _prepare(self) -> None:
        """The once-per-episode work of a model's scorer (none for the generic one)."""

    def place(self, positions: torch.Tensor) -> torch.Tensor:
        """Append candidate ``positions[b]`` to list ``b``: slot click probabilities ``[B]``."""
        t = self.t
        if t == self.length:
            raise RuntimeError(f"all {t} slots are filled; start a new scorer for new lists")
        self.t = t + 1
        return self._slot_probs(positions, t)

    def _slot_probs(self, positions: torch.Tensor, t: int) -> torch.Tensor:
        """Click probability of slot ``t``, filled with the candidates at ``positions``."""
        if self._items is None:
            self._items = self.candidates.new_full((len(self.users), self.length), PAD)
        self._items[:, t] = torch.gather(self.candidates, 1, positions[:, None])[:, 0]
        batch = SlateBatch(self.users, self._items[:, : t + 1], self.histories)
        return self.simulator.last_click_probs(batch)
