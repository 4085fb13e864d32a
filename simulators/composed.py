"""Order and composition made explicit: examination and diminishing returns.

On MovieLens pseudo-slates the learned context signal is weak (the context-aware
model barely beats the pointwise one), so with a learned model alone, sorting by the
pointwise score would already be nearly optimal and rerankers could not be told
apart. :class:`ComposedSimulator` therefore wraps any learned simulator with two
documented, adjustable effects, both top-down:

* **examination**: ``P(click_k) = exam_k * ...``, how likely slot ``k`` is looked
  at. Default prior ``exam_k = (1 / log2(k + 2)) ** position_bias`` (the DCG
  discount), or estimated from the logs of a uniformly random policy where they
  identify it (:func:`examination_from_randomised_logs`).
* **diminishing returns**: an item similar to one shown above it is less
  attractive: its logit drops by ``diversity_strength * max_{j<k} sim(i_k, i_j)``
  with ``sim`` the cosine similarity of item vectors (clipped at 0).

``P(click_k) = exam_k * sigmoid(logit_base_k - diversity_strength * redundancy_k)``.
With ``position_bias = 0`` and ``diversity_strength = 0`` it is the base simulator.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from simulators.base import PAD, ClickSimulator, SlateBatch


def dcg_examination(positions: int, position_bias: float = 1.0) -> torch.Tensor:
    """``(1 / log2(k + 2)) ** position_bias`` for ``k = 0 .. positions - 1``."""
    k = torch.arange(positions, dtype=torch.float32)
    return (1.0 / torch.log2(k + 2.0)) ** position_bias


def examination_from_randomised_logs(
    clicks: np.ndarray, impressions: np.ndarray, *, min_clicks: int = 100
) -> torch.Tensor:
    """Relative examination per position from logs of a uniformly random policy.

    Under a policy that puts every item at every position with equal probability,
    the click rate at position ``k`` is ``exam_k`` times the same mean
    attractiveness, so ``ctr_k / ctr_0`` estimates ``exam_k / exam_0``. The result is
    scaled so the most examined position has 1 (the absolute scale is not
    identified; the attractiveness model absorbs it).

    Args:
        clicks: Clicks per position, ``[K]`` (e.g. ``OpenBanditData.position_ctr()``).
        impressions: Impressions per position, ``[K]``.
        min_clicks: Fewest clicks any position may have: below it the ratio is noise
            (with 10 clicks the 95% interval of a rate spans about -50% to +80%).

    Raises:
        ValueError: Shapes differ, or a position has fewer than ``min_clicks`` clicks.
    """
    clicks, impressions = np.asarray(clicks), np.asarray(impressions)
    if clicks.shape != impressions.shape or clicks.ndim != 1:
        raise ValueError(
            f"clicks and impressions must be 1-D of the same length, got shapes "
            f"{clicks.shape} and {impressions.shape}"
        )
    if (clicks < min_clicks).any():
        raise ValueError(
            f"too few clicks to identify examination: {clicks.tolist()} per position, "
            f"need >= {min_clicks} at each (min_clicks). Use more randomised logs, or "
            "the DCG prior (dcg_examination)"
        )
    rate = clicks / impressions
    return torch.as_tensor(rate / rate.max(), dtype=torch.float32)


class ComposedSimulator(ClickSimulator):
    """A learned simulator composed with examination and diminishing returns.

    Args:
        base: The learned simulator (its click probabilities are the base logits).
        item_vectors: float ``[I, d]`` item representations for the similarity.
        examination: Examination probability per position, ``[K]``; default
            :func:`dcg_examination` with ``position_bias``.
        position_bias: Exponent of the DCG prior (0 = no position effect).
        diversity_strength: Logit penalty per unit of similarity to the most similar
            item above (0 = no composition effect).
    """

    def __init__(
        self,
        base: ClickSimulator,
        item_vectors: torch.Tensor,
        examination: torch.Tensor | None = None,
        position_bias: float = 1.0,
        diversity_strength: float = 2.0,
        max_positions: int = 6,
    ) -> None:
        super().__init__(base.n_users, base.n_items, max_positions)
        if item_vectors.shape[0] != base.n_items:
            raise ValueError(
                f"item_vectors has {item_vectors.shape[0]} rows, the base simulator "
                f"{base.n_items} items"
            )
        if diversity_strength < 0 or position_bias < 0:
            raise ValueError(
                "diversity_strength and position_bias must be >= 0, got "
                f"{diversity_strength} and {position_bias}"
            )
        self.base = base
        exam = dcg_examination(max_positions, position_bias) if examination is None else examination
        exam = torch.as_tensor(exam, dtype=torch.float32)
        if exam.shape != (max_positions,) or not ((exam >= 0) & (exam <= 1)).all():
            raise ValueError(
                f"examination must be {max_positions} probabilities in [0, 1], got {exam.tolist()}"
            )
        self.register_buffer("examination", exam)
        self.register_buffer("unit_vectors", F.normalize(item_vectors.float(), dim=1))
        self.diversity_strength = diversity_strength

    def with_base(self, base: ClickSimulator) -> ComposedSimulator:
        """The same composition effects over another base simulator."""
        return ComposedSimulator(
            base,
            self.unit_vectors,
            examination=self.examination,
            diversity_strength=self.diversity_strength,
            max_positions=self.max_positions,
        )

    def redundancy(self, items: torch.Tensor) -> torch.Tensor:
        """Max similarity of each position's item to the items above it, ``[B, K]``."""
        vectors = self.unit_vectors[items.clamp(min=0)] * (items != PAD)[..., None]
        similarity = (vectors @ vectors.transpose(1, 2)).clamp(min=0)
        above = torch.tril(torch.ones_like(similarity[0], dtype=torch.bool), diagonal=-1)
        return torch.where(above, similarity, 0.0).amax(dim=2)

    def last_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """The same formula for the last position only (one row of similarities)."""
        self._check_length(batch)
        k = batch.items.shape[1]
        base = self.base.last_click_probs(batch).clamp(1e-6, 1 - 1e-6)
        if k > 1:
            last = self.unit_vectors[batch.items[:, -1]]
            above = self.unit_vectors[batch.items[:, :-1]]
            redundancy = (above @ last[:, :, None]).squeeze(-1).clamp(min=0).amax(dim=1)
        else:
            redundancy = torch.zeros_like(base)
        logits = torch.logit(base) - self.diversity_strength * redundancy
        return self.examination[k - 1] * torch.sigmoid(logits)

    def position_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """``exam_k * sigmoid(base logit - strength * redundancy)``."""
        k = batch.items.shape[1]
        base = self.base.click_probs(batch, validate=False).clamp(1e-6, 1 - 1e-6)
        logits = torch.logit(base) - self.diversity_strength * self.redundancy(batch.items)
        return self.examination[:k] * torch.sigmoid(logits)
