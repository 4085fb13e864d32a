"""GR2's teacher: rankings from the training simulator, kept by rejection sampling.

The teacher ranks a request's K candidates as a planner over the training
simulator would: its **first pick** is sampled (Gumbel-max on the simulator's log
click probability of each candidate in slot 1, at ``temperature``), the **rest** is
a beam search over the simulator with that first pick fixed. Its rationale
(:func:`agents.gr2.language.rationale`) names the evidence: the user's genres,
the top candidates' attributes, fit and the ranking's diversity.

* **Rejection sampling** (``"rejection"``): the teacher does not see the true next
  item ``x*``; a sample is kept only when its first pick is ``x*``, with up to
  ``attempts`` samples per request. Acceptance depends only on the first pick, so
  the beam search runs once per kept request.
* **Targeted** (``"targeted"``, the paper's ablation): ``x*`` is revealed and
  placed first in every request (acceptance 1).

The simulator scores lists of the task's ``L`` slots, so the beam search fills
slots 2..L; the candidates below them follow in order of their slot-1 value.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from agents.common.scorers import ListScorer, slot_one_values
from rerank_env.task import RerankTask
from simulators.search import beam_search_slots


@dataclasses.dataclass(frozen=True)
class TeacherRankings:
    """What the teacher kept.

    Attributes:
        requests: The kept requests ``[D]`` (of the task given).
        rankings: Their rankings, candidate positions ``[D, K]`` (``x*`` first).
        offered: Requests the teacher was asked about.
        attempts: Samples drawn per offered request (``attempts`` when rejected).
    """

    requests: np.ndarray
    rankings: np.ndarray
    offered: int
    attempts: np.ndarray

    @property
    def acceptance_rate(self) -> float:
        """Share of offered requests with a kept ranking."""
        return len(self.requests) / max(self.offered, 1)


def teach(
    task: RerankTask,
    requests: np.ndarray,
    targets: np.ndarray,
    scorer: ListScorer,
    rng: np.random.Generator,
    *,
    mode: str = "rejection",
    temperature: float = 0.5,
    attempts: int = 8,
    beam_width: int = 4,
    values: np.ndarray | None = None,
) -> TeacherRankings:
    """Teacher rankings of ``requests`` whose first item is the target.

    Args:
        task: The GR2 task (K candidates per request).
        requests: Its requests ``[B]``.
        targets: The true next item's position among each request's candidates ``[B]``.
        scorer: The training simulator (its calls are counted).
        rng: Seeded generator of the first picks.
        mode: ``"rejection"`` or ``"targeted"``.
        temperature: Temperature of the first pick.
        attempts: Samples per request (rejection).
        beam_width: Beam width of the rest of the ranking.
        values: :func:`~agents.common.scorers.slot_one_values` of ``requests`` if
            already computed.

    Raises:
        ValueError: Unknown ``mode``.
    """
    requests, targets = np.asarray(requests), np.asarray(targets)
    if mode not in ("rejection", "targeted"):
        raise ValueError(f"teacher mode must be 'rejection' or 'targeted', got {mode!r}")
    values = slot_one_values(task, requests, scorer) if values is None else values
    if mode == "targeted":
        keep = np.ones(len(requests), dtype=bool)
        used = np.ones(len(requests), dtype=np.int64)
    else:
        logits = np.log(np.clip(values, 1e-9, None))
        gumbel = rng.gumbel(size=(attempts, *logits.shape))
        picks = (logits[None] / temperature + gumbel).argmax(axis=2)  # [attempts, B]
        hits = picks == targets[None]
        keep = hits.any(axis=0)
        used = np.where(keep, hits.argmax(axis=0) + 1, attempts)
    kept = requests[keep]
    k, length = task.num_candidates, task.slate_length
    rankings = np.zeros((0, k), dtype=np.int64)
    if len(kept):
        prefix = torch.as_tensor(targets[keep][:, None], device=task.device)
        slots, _ = beam_search_slots(
            scorer.prefix_scorer(task, kept),
            len(kept),
            k,
            length,
            beam_width,
            prefix,
            device=task.device,
        )
        # Below the L slots the simulator scores: the rest by their slot-1 value.
        top = slots[:, 0].cpu().numpy()
        order = np.argsort(-values[keep], axis=1, kind="stable")
        rest = [row[~np.isin(row, placed)] for row, placed in zip(order, top, strict=True)]
        rankings = np.concatenate([top, np.stack(rest)], axis=1)
    return TeacherRankings(kept, rankings, len(requests), used)
