"""Search over lists with a simulator: beam search, and order diagnostics.

Shared by the simulator validation report (headroom, order sensitivity) and by the
beam-search reference agent.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from simulators.base import PAD, ClickSimulator, SlateBatch

PrefixScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def beam_search_slots(
    score: PrefixScorer,
    batch: int,
    n_candidates: int,
    length: int,
    width: int = 16,
    prefix: torch.Tensor | None = None,
    *,
    keep: int = 1,
    device: torch.device | str | None = None,
    return_extensions: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Beam search over lists of candidate slots with any top-down prefix scorer.

    Every step extends each of the ``width`` best prefixes by every unused candidate
    and keeps the ``width`` best by ``score``; the scorer must value a prefix on its
    own (top-down: what follows a prefix does not change its value).

    Args:
        score: ``score(rows, slots)`` returns the value of each prefix ``slots``
            (long ``[M, t]``, candidate slots) of request ``rows`` (long ``[M]``,
            indices into the batch), float ``[M]``.
        batch: B, requests searched together.
        n_candidates: N.
        length: List length ``L <= N``.
        width: Beam width.
        prefix: Candidate slots every list must start with, long ``[B, P]``
            (``P < L``, distinct per row); ``None`` starts from the empty list.
        keep: Best finished lists returned per request (``1 <= keep <= width``).
        device: Where the search runs (default: the prefix's device, else CPU).
        return_extensions: Also return, for every kept list and every step
            ``t >= P``, the scores of extending its prefix before ``t`` by each
            candidate (``-inf`` at placed ones): the search scored them already.

    Returns:
        ``(slots, values)``: long ``[B, keep, L]`` (best first) and their values
        ``[B, keep]``; with ``return_extensions`` also ``[B, keep, L - P, N]``.

    Raises:
        ValueError: ``length``, ``keep`` or ``prefix`` do not fit, or fewer than
            ``keep`` distinct lists exist.
    """
    n = n_candidates
    if not 1 <= length <= n:
        raise ValueError(f"length must be in [1, {n}] (the number of candidates), got {length}")
    if not 1 <= keep <= width:
        raise ValueError(f"keep must be in [1, width={width}], got {keep}")
    if device is None:
        device = prefix.device if prefix is not None else "cpu"
    if prefix is None:
        prefix = torch.empty(batch, 0, dtype=torch.long, device=device)
    if prefix.shape[0] != batch or prefix.shape[1] >= length:
        raise ValueError(
            f"prefix must be [B, P] with B = {batch} and P < length = {length}, got "
            f"{tuple(prefix.shape)}"
        )
    placed = prefix.shape[1]
    if math.perm(n - placed, length - placed) < keep:
        raise ValueError(
            f"only {math.perm(n - placed, length - placed)} distinct lists exist for "
            f"keep={keep}; lower keep"
        )
    beams = prefix[:, None, :].to(device)  # candidate slots, [B, 1, P]
    rows = torch.arange(batch, device=device)
    trace: list[tuple[torch.Tensor, torch.Tensor]] = []  # (scores, kept indices) per step
    values = torch.zeros(batch, 1, device=device)
    for step in range(prefix.shape[1], length):
        n_beams = beams.shape[1]
        used = torch.zeros(batch, n_beams, n, dtype=torch.bool, device=device)
        if step:
            used.scatter_(2, beams, True)
        # Every beam extended by every candidate slot: [B, n_beams * N, step + 1].
        extended = torch.cat(
            [
                beams[:, :, None, :].expand(batch, n_beams, n, step),
                torch.arange(n, device=device).expand(batch, n_beams, n)[..., None],
            ],
            dim=3,
        ).reshape(batch, n_beams * n, step + 1)
        free = ~used.reshape(batch, n_beams * n)
        scored = torch.full((batch, n_beams * n), -torch.inf, device=device)
        flat_rows = rows[:, None].expand_as(free)[free]
        scored[free] = score(flat_rows, extended[free]).to(scored.dtype)
        values, keep_index = scored.topk(min(width, n_beams * (n - step)), dim=1)
        beams = torch.gather(extended, 1, keep_index[..., None].expand(-1, -1, step + 1))
        if return_extensions:
            trace.append((scored.reshape(batch, n_beams, n), keep_index))
    if not return_extensions:
        return beams[:, :keep], values[:, :keep]
    # Follow each kept list back through its ancestors' beams to their scored rows.
    extensions = []
    index = torch.arange(keep, device=device).expand(batch, keep)
    for scores, keep_index in reversed(trace):
        parent = torch.gather(keep_index, 1, index) // n
        extensions.append(torch.gather(scores, 1, parent[..., None].expand(-1, -1, n)))
        index = parent
    return beams[:, :keep], values[:, :keep], torch.stack(extensions[::-1], dim=2)


@torch.no_grad()
def beam_search(
    simulator: ClickSimulator,
    users: torch.Tensor,
    histories: torch.Tensor,
    candidates: torch.Tensor,
    length: int,
    width: int = 16,
    prefix: torch.Tensor | None = None,
    *,
    return_slots: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ``length`` candidates maximising the simulator's expected clicks.

    :func:`beam_search_slots` scoring prefixes by their exact expected clicks (the
    simulator is top-down).

    Args:
        simulator: The scorer.
        users: long ``[B]``.
        histories: long ``[B, H]``.
        candidates: long ``[B, N]`` item indices.
        length: List length ``L <= N``.
        width: Beam width.
        prefix: Candidate slots every list must start with, long ``[B, P]``
            (``P < L``, distinct per row); ``None`` starts from the empty list.
        return_slots: Return candidate slots (positions in ``candidates``) instead
            of item indices.

    Returns:
        ``(lists, values)``: long ``[B, L]`` item indices (or slots) and their
        expected clicks.
    """

    def score(rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        items = torch.gather(candidates[rows], 1, slots)
        return simulator.expected_reward(
            SlateBatch(users[rows], items, histories[rows]), validate=False
        )

    batch, n = candidates.shape
    slots, _ = beam_search_slots(score, batch, n, length, width, prefix, device=candidates.device)
    best = slots[:, 0]
    lists = torch.gather(candidates, 1, best)
    values = simulator.expected_reward(SlateBatch(users, lists, histories), validate=False)
    return (best if return_slots else lists), values


@torch.no_grad()
def order_sensitivity(
    simulator: ClickSimulator,
    batch: SlateBatch,
    permutations: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Spread of expected clicks over random orders of each list's items, ``[B]``.

    Returns ``(max - min) / mean`` over ``permutations`` random orders (plus the given
    one) of the same items: 0 means order does not matter.
    """
    if (batch.items == PAD).any():
        raise ValueError("order_sensitivity needs full lists (no -1 padding)")
    values = [simulator.expected_reward(batch, validate=False)]
    for _ in range(permutations):
        order = torch.argsort(torch.rand(batch.items.shape, generator=generator), dim=1)
        shuffled = torch.gather(batch.items, 1, order.to(batch.items.device))
        values.append(
            simulator.expected_reward(
                SlateBatch(batch.users, shuffled, batch.histories), validate=False
            )
        )
    stacked = torch.stack(values, dim=1)
    return (stacked.max(dim=1).values - stacked.min(dim=1).values) / stacked.mean(dim=1)
