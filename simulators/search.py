"""Search over lists with a simulator: beam search, and order diagnostics.

Shared by the simulator validation report (headroom, order sensitivity) and by the
beam-search reference agent.
"""

from __future__ import annotations

import torch

from simulators.base import PAD, ClickSimulator, SlateBatch


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

    Every step extends each of the ``width`` best prefixes by every unused candidate
    and keeps the ``width`` best by exact prefix value (the simulator is top-down).

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
    batch, n = candidates.shape
    if not 1 <= length <= n:
        raise ValueError(f"length must be in [1, {n}] (the number of candidates), got {length}")
    device = candidates.device
    if prefix is None:
        prefix = torch.empty(batch, 0, dtype=torch.long, device=device)
    if prefix.shape[0] != batch or prefix.shape[1] >= length:
        raise ValueError(
            f"prefix must be [B, P] with B = {batch} and P < length = {length}, got "
            f"{tuple(prefix.shape)}"
        )
    beams = prefix[:, None, :].to(device)  # candidate slots, [B, 1, P]
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
        items = torch.gather(candidates[:, None, :].expand(-1, n_beams * n, -1), 2, extended)
        flat = SlateBatch(
            users.repeat_interleave(n_beams * n),
            items.reshape(-1, step + 1),
            histories.repeat_interleave(n_beams * n, dim=0),
        )
        values = simulator.expected_reward(flat, validate=False).reshape(batch, n_beams * n)
        values = values.masked_fill(used.reshape(batch, n_beams * n), -torch.inf)
        keep = values.topk(min(width, n_beams * (n - step)), dim=1).indices
        beams = torch.gather(extended, 1, keep[..., None].expand(-1, -1, step + 1))
    best = beams[:, 0, :]
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
