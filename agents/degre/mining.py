"""DeGRe's offline mining: beam search under a list scorer, with step-wise values.

For each request, :func:`mine` runs a batched beam search of width ``B`` over the
candidate permutations, keeps the top ``keep`` lists (the initial order competes,
so the best mined list is never worse than it under the scorer), and records at
every step of every kept list the scorer's value of appending each remaining
candidate to the mined prefix: the search computed those anyway, so the soft
labels cost no extra calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agents.base import complete_by_scores
from agents.common.scorers import ListScorer, PrefixScorer
from rerank_env.task import RerankTask
from simulators.progress import progress_bar
from simulators.search import beam_search_slots


@dataclass
class MinedLists:
    """What mining produced: lists with their step-wise evaluator values.

    Attributes:
        requests: Request of each list ``[M]``.
        lists: Candidate slots ``[M, L]``.
        values: The evaluator's value of each list ``[M]``.
        step_values: Value of each prefix of each list ``[M, L]``.
        extension_values: Value of appending each candidate to the list's prefix
            before step ``t``, ``[M, L, N]``; ``-inf`` for placed candidates.
        from_beam: Whether each list came from the beam search (else it is the
            initial order, kept because the beam found nothing better), ``[M]``.
    """

    requests: np.ndarray
    lists: torch.Tensor
    values: torch.Tensor
    step_values: torch.Tensor
    extension_values: torch.Tensor
    from_beam: np.ndarray

    def __len__(self) -> int:
        return len(self.requests)

    @staticmethod
    def concatenate(parts: list[MinedLists]) -> MinedLists:
        """All ``parts`` as one."""
        return MinedLists(
            np.concatenate([p.requests for p in parts]),
            torch.cat([p.lists for p in parts]),
            torch.cat([p.values for p in parts]),
            torch.cat([p.step_values for p in parts]),
            torch.cat([p.extension_values for p in parts]),
            np.concatenate([p.from_beam for p in parts]),
        )


def beam_calls_per_request(candidates: int, length: int, width: int) -> int:
    """Prefixes a beam search of ``width`` scores for one request (every valid extension)."""
    calls, beams = 0, 1
    for step in range(length):
        calls += beams * (candidates - step)
        beams = min(width, beams * (candidates - step))
    return calls


def mining_calls_per_request(candidates: int, length: int, width: int) -> int:
    """Evaluator calls of mining one request: the beam search and the initial order.

    The soft labels of the beam's lists reuse the search's scores. A request whose
    initial order beats a kept beam list costs ``sum_t (N - t)`` more calls (its
    extensions were never scored): rare, and not included here.
    """
    return beam_calls_per_request(candidates, length, width) + 1


@torch.no_grad()
def mine(
    task: RerankTask,
    scorer: ListScorer,
    requests: np.ndarray,
    *,
    beam_width: int,
    keep: int,
    batch_size: int = 64,
    progress: bool = False,
) -> MinedLists:
    """Beam-search each request's best ``keep`` lists under ``scorer``, with step values.

    Args:
        task: The task.
        scorer: What values prefixes (its calls are counted).
        requests: Requests to mine.
        beam_width: B.
        keep: Lists kept per request (``<= beam_width``).
        batch_size: Requests per batched search.
        progress: Show a progress bar (on terminals).
    """
    parts = []
    bar = progress_bar(len(requests), "DeGRe mining", progress)
    for start in range(0, len(requests), batch_size):
        chunk = np.asarray(requests[start : start + batch_size], dtype=np.int64)
        parts.append(_mine_chunk(task, scorer.prefix_scorer(task, chunk), chunk, beam_width, keep))
        bar.update(len(chunk))
    bar.close()
    return MinedLists.concatenate(parts)


def _mine_chunk(
    task: RerankTask, score: PrefixScorer, requests: np.ndarray, beam_width: int, keep: int
) -> MinedLists:
    batch, n, length = len(requests), task.num_candidates, task.slate_length
    device = task.device
    slots, values, extensions = beam_search_slots(
        score,
        batch,
        n,
        length,
        beam_width,
        keep=keep,
        device=device,
        return_extensions=True,
    )
    # The initial order competes with the beam's lists (unless already among them).
    initial = torch.as_tensor(
        complete_by_scores(task.scores_np[requests], length, None), device=device
    )[:, None]
    initial_value = score(torch.arange(batch, device=device), initial[:, 0])
    duplicate = (slots == initial).all(dim=2).any(dim=1)
    pooled_values = torch.cat(
        [values, initial_value.masked_fill(duplicate, -torch.inf)[:, None]], dim=1
    )
    order = pooled_values.argsort(dim=1, descending=True, stable=True)[:, :keep]
    from_beam = order < keep
    slots = torch.gather(
        torch.cat([slots, initial], dim=1), 1, order[..., None].expand(-1, -1, length)
    )
    values = torch.gather(pooled_values, 1, order)
    extensions = torch.cat(
        [extensions, torch.zeros_like(extensions[:, :1])], dim=1
    )  # a slot for the initial order's, filled below where it is kept
    extensions = torch.gather(extensions, 1, order[..., None, None].expand(-1, -1, length, n))
    kept_initial = ~from_beam
    if kept_initial.any():  # the beam never scored these prefixes: score them now
        rows = kept_initial.nonzero()[:, 0]
        extensions[kept_initial] = extension_values(score, rows, initial[rows, 0], n)
    lists = slots.reshape(batch * keep, length)
    extension = extensions.reshape(batch * keep, length, n).float()
    return MinedLists(
        np.repeat(requests, keep),
        lists,
        values.reshape(-1).float(),
        extension.gather(2, lists[..., None])[..., 0],
        extension,
        from_beam.reshape(-1).cpu().numpy(),
    )


def extension_values(
    score: PrefixScorer, rows: torch.Tensor, lists: torch.Tensor, n: int
) -> torch.Tensor:
    """Scores of each prefix of ``lists`` extended by every candidate, ``[M, L, N]``."""
    count, length = lists.shape
    extension = torch.full((count, length, n), -torch.inf, device=lists.device)
    every = torch.arange(n, device=lists.device)
    for step in range(length):
        free = torch.ones(count, n, dtype=torch.bool, device=lists.device)
        if step:
            free.scatter_(1, lists[:, :step], False)
        prefixes = lists[:, None, :step].expand(-1, n, step)
        extended = torch.cat([prefixes, every.expand(count, n)[..., None]], dim=2)
        extension[:, step][free] = score(rows[:, None].expand(-1, n)[free], extended[free])
    return extension
