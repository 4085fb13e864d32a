"""Fidelity of a learned simulator, measured where a reranker needs it.

AUC on logged slates says whether a simulator predicts the clicks the logging
policy saw; a reranker needs something else: that the list the simulator likes best
is good in truth, that it orders a request's *alternative* lists as the truth does,
and that the gain it reports for an agent is the real gain. With a known true model
(the synthetic world) these are measured directly:

* **argmax transfer**: the true reward of beam search run on the learned simulator,
  against beam search run on the truth; the shortfall is the *regret* (%).
* **within-request agreement**: Kendall's tau between the learned simulator's and
  the truth's expected clicks over alternative lists *of the same request*, averaged
  over requests (Spearman over random lists of random requests mostly measures
  whether a simulator knows which users click more).
* **lead ratio**: an agent's lead over a baseline (relative gain in expected clicks)
  under a judge, divided by its lead under the truth: 1 is an honest judge, 2 a judge
  that reports twice the real gain.
* **click-level calibration**: the learned simulator's mean expected clicks over the
  truth's on the same lists.

Every function takes requests as tensors (``users [B]``, ``histories [B, H]``,
``candidates [B, N]``) and lists as item indices ``[B, L]``, so any agent's lists
can be judged; :func:`fidelity_metrics` runs the simulator-only set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from simulators.base import ClickSimulator, SlateBatch
from simulators.search import beam_search

#: The pools of alternative lists :func:`within_request_agreement` can draw.
LIST_POOLS = ("random", "local")


@dataclass(frozen=True)
class Requests:
    """The requests a fidelity metric is measured on.

    Attributes:
        users: long ``[B]``.
        histories: long ``[B, H]`` padded with -1.
        candidates: long ``[B, N]`` item indices.
    """

    users: torch.Tensor
    histories: torch.Tensor
    candidates: torch.Tensor

    def __post_init__(self) -> None:
        rows = {len(self.users), len(self.histories), len(self.candidates)}
        if len(rows) != 1 or self.candidates.ndim != 2:
            raise ValueError(
                f"Requests need users [B], histories [B, H] and candidates [B, N] with one "
                f"B, got shapes {tuple(self.users.shape)}, {tuple(self.histories.shape)} "
                f"and {tuple(self.candidates.shape)}"
            )

    def lists(self, items: torch.Tensor) -> SlateBatch:
        """The batch that shows ``items`` (``[B, L]``) to these requests."""
        if items.shape[0] != len(self.users):
            raise ValueError(
                f"lists hold {items.shape[0]} rows for {len(self.users)} requests: pass one "
                "list per request"
            )
        return SlateBatch(self.users, items, self.histories)


@torch.no_grad()
def expected_clicks(simulator: ClickSimulator, requests: Requests, items: torch.Tensor) -> float:
    """Mean expected clicks of ``items`` (one list per request) under ``simulator``."""
    simulator.eval()
    return float(simulator.expected_reward(requests.lists(items)).mean())


@torch.no_grad()
def pointwise_sort(simulator: ClickSimulator, requests: Requests, length: int) -> torch.Tensor:
    """Each request's top ``length`` candidates by their value alone in the first slot.

    The simulator's own pointwise greedy list, ``[B, L]``: every candidate is scored
    as a one-item list (no position or composition effect) and the best come first.
    Works for any simulator, the truth included.
    """
    batch, n = requests.candidates.shape
    if not 1 <= length <= n:
        raise ValueError(f"length must be in [1, N={n}], got {length}")
    simulator.eval()
    single = SlateBatch(
        requests.users.repeat_interleave(n),
        requests.candidates.reshape(batch * n, 1),
        requests.histories.repeat_interleave(n, dim=0),
    )
    values = simulator.expected_reward(single).view(batch, n)
    return torch.gather(requests.candidates, 1, values.argsort(dim=1, descending=True)[:, :length])


@torch.no_grad()
def argmax_transfer(
    learned: ClickSimulator,
    truth: ClickSimulator,
    requests: Requests,
    length: int,
    *,
    width: int = 8,
) -> dict[str, float]:
    """True reward of the learned simulator's beam-search lists against the truth's.

    Args:
        learned: The simulator searched (e.g. an agent's training simulator).
        truth: The true user model.
        requests: Where to search.
        length: List length L.
        width: Beam width (8, as the suite's ``beam`` agent).

    Returns:
        ``learned_argmax_true`` (true reward of the learned simulator's beam lists),
        ``true_argmax_true`` (of the truth's own beam lists; the attainable reward),
        ``regret_pct`` (``100 * (1 - learned / true)``).
    """
    args = (requests.users, requests.histories, requests.candidates, length)
    learned.eval()
    truth.eval()
    learned_lists, _ = beam_search(learned, *args, width=width)
    true_lists, _ = beam_search(truth, *args, width=width)
    return _transfer(truth, requests, learned_lists, true_lists)


def _transfer(
    truth: ClickSimulator, requests: Requests, learned_lists: torch.Tensor, true_lists: torch.Tensor
) -> dict[str, float]:
    transferred = expected_clicks(truth, requests, learned_lists)
    attainable = expected_clicks(truth, requests, true_lists)
    return {
        "learned_argmax_true": transferred,
        "true_argmax_true": attainable,
        "regret_pct": 100.0 * (1.0 - transferred / attainable),
    }


def alternative_lists(
    requests: Requests,
    length: int,
    lists: int,
    generator: torch.Generator,
    *,
    pool: str = "random",
    reference: torch.Tensor | None = None,
    swaps: int = 2,
) -> torch.Tensor:
    """``lists`` alternative lists of ``length`` items for every request, ``[B, M, L]``.

    Args:
        requests: Whose candidates the lists hold.
        length: L.
        lists: M, lists per request.
        generator: The only source of randomness.
        pool: ``"random"``: uniformly random ordered subsets of the candidates;
            ``"local"``: neighbours of ``reference`` (each applies ``swaps`` random
            moves, a swap of two positions or a swap of a listed item with an unlisted
            candidate), the region a reranker actually chooses among.
        reference: ``[B, L]`` item lists the ``"local"`` pool perturbs.
        swaps: Moves per ``"local"`` list.

    Raises:
        ValueError: Unknown ``pool``, ``length`` above N, fewer than 2 lists, or a
            ``"local"`` pool without a fitting ``reference``.
    """
    batch, n = requests.candidates.shape
    if pool not in LIST_POOLS:
        raise ValueError(f"pool must be one of {LIST_POOLS}, got {pool!r}")
    if not 1 <= length <= n:
        raise ValueError(f"length must be in [1, N={n}], got {length}")
    if lists < 2:
        raise ValueError(f"within-request agreement needs >= 2 lists per request, got {lists}")
    device = requests.candidates.device
    if pool == "random":
        keys = torch.rand(batch, lists, n, generator=generator).to(device)
        slots = keys.argsort(dim=2)[:, :, :length]
        return torch.gather(requests.candidates[:, None].expand(-1, lists, -1), 2, slots)
    if reference is None or reference.shape != (batch, length):
        got = None if reference is None else tuple(reference.shape)
        raise ValueError(
            f'pool="local" perturbs a reference list per request, shape ({batch}, {length}); '
            f"got {got}: pass reference= (e.g. the truth's beam-search lists)"
        )
    # Each row's candidates, reference first then the unlisted ones: moves permute slots.
    listed = (requests.candidates[:, :, None] == reference[:, None, :]).any(dim=2)
    if (listed.sum(dim=1) != length).any():
        raise ValueError(
            "every reference list must hold L distinct items of its request's candidates; "
            f"row(s) {(listed.sum(dim=1) != length).nonzero().flatten().tolist()[:5]} do not"
        )
    rest = requests.candidates.masked_fill(listed, torch.iinfo(torch.long).max)
    rest = rest.sort(dim=1).values[:, : n - length]
    pool_items = torch.cat([reference, rest], dim=1)[:, None].repeat(1, lists, 1)
    order = torch.arange(n, device=device).repeat(batch, lists, 1)
    rows = torch.arange(batch * lists, device=device)
    flat = order.view(batch * lists, n)
    for _ in range(swaps):
        # A position in the list, and a partner anywhere (list: reorder; rest: replace).
        first = torch.randint(length, (batch * lists,), generator=generator).to(device)
        second = torch.randint(n, (batch * lists,), generator=generator).to(device)
        a, b = flat[rows, first].clone(), flat[rows, second].clone()
        flat[rows, first], flat[rows, second] = b, a
    return torch.gather(pool_items, 2, order[:, :, :length])


def kendall_tau_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall's tau between ``a`` and ``b`` along the last axis, one per row, ``[B]``.

    Tau-b: ties (pairs equal in ``a`` or in ``b``) count in neither the concordant
    nor the discordant pairs, and the denominator is corrected for them. A row with
    no untied pair in ``a`` or ``b`` gets NaN.
    """
    sign_a = torch.sign(a[..., :, None] - a[..., None, :])
    sign_b = torch.sign(b[..., :, None] - b[..., None, :])
    m = a.shape[-1]
    upper = torch.triu(torch.ones(m, m, dtype=torch.bool, device=a.device), diagonal=1)
    concordance = (sign_a * sign_b)[..., upper].sum(-1)
    untied_a = (sign_a != 0)[..., upper].sum(-1)
    untied_b = (sign_b != 0)[..., upper].sum(-1)
    return concordance / torch.sqrt((untied_a * untied_b).to(a.dtype))


@torch.no_grad()
def within_request_agreement(
    learned: ClickSimulator,
    truth: ClickSimulator,
    requests: Requests,
    alternatives: torch.Tensor,
) -> dict[str, float]:
    """Kendall's tau between learned and true expected clicks over each request's lists.

    Args:
        learned: The simulator judged.
        truth: The true user model.
        requests: B requests.
        alternatives: ``[B, M, L]`` lists per request (:func:`alternative_lists`).

    Returns:
        ``kendall_tau`` (mean over requests), ``kendall_tau_q10`` and
        ``kendall_tau_q90`` (spread over requests).
    """
    batch, lists, length = alternatives.shape
    if batch != len(requests.users):
        raise ValueError(f"alternatives hold {batch} requests, requests {len(requests.users)}")
    learned.eval()
    truth.eval()
    flat = SlateBatch(
        requests.users.repeat_interleave(lists),
        alternatives.reshape(batch * lists, length),
        requests.histories.repeat_interleave(lists, dim=0),
    )
    tau = kendall_tau_rows(
        learned.expected_reward(flat).view(batch, lists),
        truth.expected_reward(flat).view(batch, lists),
    )
    tau = tau[~tau.isnan()]
    if not len(tau):  # every request's lists tie under one of the two: no ordering to compare
        return {"kendall_tau": math.nan, "kendall_tau_q10": math.nan, "kendall_tau_q90": math.nan}
    return {
        "kendall_tau": float(tau.mean()),
        "kendall_tau_q10": float(tau.quantile(0.1)),
        "kendall_tau_q90": float(tau.quantile(0.9)),
    }


@torch.no_grad()
def lead_ratio(
    judge: ClickSimulator,
    truth: ClickSimulator,
    requests: Requests,
    agent_lists: torch.Tensor,
    baseline_lists: torch.Tensor,
) -> dict[str, float]:
    """An agent's lead over a baseline under a judge, relative to its lead in truth.

    The lead is the relative gain in mean expected clicks, ``agent / baseline - 1``.

    Returns:
        ``judge_lead``, ``true_lead`` and ``lead_ratio`` (``judge_lead / true_lead``;
        NaN when the true lead is 0, and negative when judge and truth disagree on
        which list set is better).
    """
    judge_lead = (
        expected_clicks(judge, requests, agent_lists)
        / expected_clicks(judge, requests, baseline_lists)
        - 1.0
    )
    true_lead = (
        expected_clicks(truth, requests, agent_lists)
        / expected_clicks(truth, requests, baseline_lists)
        - 1.0
    )
    ratio = judge_lead / true_lead if true_lead != 0 else math.nan
    return {"judge_lead": judge_lead, "true_lead": true_lead, "lead_ratio": ratio}


@torch.no_grad()
def click_level(
    learned: ClickSimulator, truth: ClickSimulator, requests: Requests, items: torch.Tensor
) -> dict[str, float]:
    """The learned simulator's absolute click level against the truth's, same lists.

    Returns:
        ``learned_clicks``, ``true_clicks`` and ``click_level_ratio`` (learned / true:
        below 1, the simulator predicts fewer clicks than the users make).
    """
    learned_clicks = expected_clicks(learned, requests, items)
    true_clicks = expected_clicks(truth, requests, items)
    return {
        "learned_clicks": learned_clicks,
        "true_clicks": true_clicks,
        "click_level_ratio": learned_clicks / true_clicks,
    }


@torch.no_grad()
def fidelity_metrics(
    learned: ClickSimulator,
    truth: ClickSimulator,
    requests: Requests,
    length: int,
    *,
    judge: ClickSimulator | None = None,
    width: int = 8,
    lists: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Every simulator-only fidelity metric of ``learned`` against ``truth``.

    Beam search (``width``) runs once on each; the lead ratio is that of the learned
    simulator's beam lists over its own pointwise sort (:func:`pointwise_sort`), the
    gap an agent trained on it would chase, under ``judge`` (default: ``learned``
    itself, the training judge; pass a held-out member to judge independently).

    Returns:
        :func:`argmax_transfer`'s keys; ``kendall_tau_random`` / ``kendall_tau_local``
        (and their q10 / q90) over ``lists`` random lists per request and ``lists``
        neighbours of the truth's beam lists; :func:`lead_ratio`'s keys; and
        :func:`click_level`'s on the random lists.
    """
    generator = torch.Generator().manual_seed(seed)
    args = (requests.users, requests.histories, requests.candidates, length)
    learned.eval()
    truth.eval()
    learned_lists, _ = beam_search(learned, *args, width=width)
    true_lists, _ = beam_search(truth, *args, width=width)
    metrics = _transfer(truth, requests, learned_lists, true_lists)
    for pool in LIST_POOLS:
        alternatives = alternative_lists(
            requests, length, lists, generator, pool=pool, reference=true_lists
        )
        agreement = within_request_agreement(learned, truth, requests, alternatives)
        metrics |= {key.replace("tau", f"tau_{pool}"): value for key, value in agreement.items()}
    baseline = pointwise_sort(learned, requests, length)
    metrics |= lead_ratio(judge or learned, truth, requests, learned_lists, baseline)
    random_lists = alternative_lists(requests, length, 2, generator)[:, 0]
    return metrics | click_level(learned, truth, requests, random_lists)
