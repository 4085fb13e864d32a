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

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simulators.base import PAD, ClickSimulator, PrefixScorer, SlateBatch
from simulators.data.errors import ConfigError


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


#: How the similarities to the items above add up into an item's redundancy.
REDUNDANCY_FORMS = ("max", "sum")


@dataclass(frozen=True)
class Composition:
    """The list effects of a composed simulator, as numbers (for manifests and reports).

    Attributes:
        examination: Examination probability per position.
        diversity_strength: Logit penalty per unit of redundancy (negative: a bonus).
        redundancy: ``"max"`` (similarity to the most similar item above) or
            ``"sum"`` (summed over the items above; with one-hot categories, the count
            of same-category items above, the synthetic world's satiation).
        complementarity: ``[G, G]`` logit bonus of an item for each item above, by
            their (unit) feature vectors ``u_k^T P u_j``; ``None``: no such term.
        position_bias: The DCG exponent that best fits ``examination`` (least squares
            on log examination; exact for a DCG curve), a one-number summary.
    """

    examination: tuple[float, ...]
    diversity_strength: float
    redundancy: str
    complementarity: tuple[tuple[float, ...], ...] | None
    position_bias: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


def implied_position_bias(examination: torch.Tensor) -> float:
    """The exponent ``b`` of ``(1 / log2(k + 2)) ** b`` closest to ``examination``.

    Least squares on the log scale through position 0 (where both are 1 after
    scaling by the first position); NaN with a single position.
    """
    exam = torch.as_tensor(examination, dtype=torch.float64).clamp(min=1e-6)
    if len(exam) < 2:
        return math.nan
    k = torch.arange(len(exam), dtype=torch.float64)
    x = -torch.log(torch.log2(k + 2.0))[1:]
    y = torch.log(exam / exam[0])[1:]
    return float((x * y).sum() / (x * x).sum())


#: Item-similarity tables by the item vectors' content and device (at most a few:
#: one per catalogue in use; the oldest is dropped, its users keep their reference).
_SIMILARITY_TABLES: dict[tuple[bytes, str], torch.Tensor] = {}
_MAX_SIMILARITY_TABLES = 4


class ComposedSimulator(ClickSimulator):
    """A learned simulator composed with examination and list effects.

    ``P(click_k) = exam_k * sigmoid(base_logit_k - diversity_strength * redundancy_k
    + complement_k)``, where ``redundancy_k`` is the max (or sum) of the clipped
    cosine similarities of item ``k`` to the items above, and ``complement_k =
    sum_{j<k} u_k^T P u_j`` over the unit item vectors ``u``.

    The effects are either *assumed* (set by hand: a DCG examination curve and a
    strength) or *fitted*: with ``trainable=True`` the examination of every position
    after the first, the strength and (with ``complementarity`` given) the pair
    matrix are parameters, fitted by maximum likelihood with the base
    (:func:`~simulators.training.fit_simulator` on this module; see
    :func:`fit_composition`).

    Args:
        base: The learned simulator (its click probabilities are the base logits).
        item_vectors: float ``[I, d]`` item representations for the similarity.
        examination: Examination probability per position, ``[K]``; default
            :func:`dcg_examination` with ``position_bias``.
        position_bias: Exponent of the DCG prior (0 = no position effect).
        diversity_strength: Logit penalty per unit of redundancy (0 = no
            diminishing returns; a fitted one may be negative, a bonus).
        max_positions: K.
        redundancy: ``"max"`` (default) or ``"sum"`` (:class:`Composition`).
        complementarity: ``[d, d]`` pair matrix ``P`` (made symmetric); ``None``: no
            complementarity term (with ``trainable``, pass zeros to fit one).
        trainable: Make the effects parameters (examination of position 0 stays
            fixed: with a free base bias only the ratios are identified).
    """

    def __init__(
        self,
        base: ClickSimulator,
        item_vectors: torch.Tensor,
        examination: torch.Tensor | None = None,
        position_bias: float = 1.0,
        diversity_strength: float = 2.0,
        max_positions: int = 6,
        *,
        redundancy: str = "max",
        complementarity: torch.Tensor | None = None,
        trainable: bool = False,
    ) -> None:
        super().__init__(base.n_users, base.n_items, max_positions)
        if item_vectors.shape[0] != base.n_items:
            raise ValueError(
                f"item_vectors has {item_vectors.shape[0]} rows, the base simulator "
                f"{base.n_items} items"
            )
        if examination is None and position_bias < 0:
            raise ValueError(
                f"position_bias must be >= 0 (examination falls with the position), got "
                f"{position_bias}"
            )
        if redundancy not in REDUNDANCY_FORMS:
            raise ValueError(f"redundancy must be one of {REDUNDANCY_FORMS}, got {redundancy!r}")
        self.base = base
        self.redundancy_form = redundancy
        self.trainable = trainable
        exam = dcg_examination(max_positions, position_bias) if examination is None else examination
        exam = torch.as_tensor(exam, dtype=torch.float32)
        if exam.shape != (max_positions,) or not ((exam >= 0) & (exam <= 1)).all():
            raise ValueError(
                f"examination must be {max_positions} probabilities in [0, 1], got {exam.tolist()}"
            )
        self.register_buffer("unit_vectors", F.normalize(item_vectors.float(), dim=1))
        dim = item_vectors.shape[1]
        if complementarity is not None and tuple(complementarity.shape) != (dim, dim):
            raise ValueError(
                f"complementarity must be [{dim}, {dim}] (item_vectors' width), got "
                f"{tuple(complementarity.shape)}"
            )
        strength = torch.tensor(float(diversity_strength))
        pairs = None if complementarity is None else torch.as_tensor(complementarity).float()
        if trainable:
            # Logits of positions 1..K-1; position 0 is a fixed buffer.
            self.register_buffer("first_examination", exam[:1].clone())
            self.examination_logits = nn.Parameter(torch.logit(exam[1:].clamp(1e-4, 1 - 1e-4)))
            self.strength = nn.Parameter(strength)
            self.pair_matrix = None if pairs is None else nn.Parameter(pairs)
        else:
            self.register_buffer("fixed_examination", exam)
            self.register_buffer("strength", strength)
            self.register_buffer("pair_matrix", pairs)

    def effect_parameters(self) -> list[nn.Parameter]:
        """The fitted effects' parameters (empty unless ``trainable``)."""
        if not self.trainable:
            return []
        effects = [self.examination_logits, self.strength]
        return effects if self.pair_matrix is None else [*effects, self.pair_matrix]

    @property
    def examination(self) -> torch.Tensor:
        """Examination probability per position, ``[K]``."""
        if self.trainable:
            return torch.cat([self.first_examination, torch.sigmoid(self.examination_logits)])
        return self.fixed_examination

    @property
    def diversity_strength(self) -> float:
        """The redundancy penalty's strength."""
        return float(self.strength.detach())

    def composition(self) -> Composition:
        """The effects as numbers (:class:`Composition`)."""
        exam = self.examination.detach().cpu()
        pairs = None if self.pair_matrix is None else self._symmetric_pairs().detach().cpu()
        return Composition(
            examination=tuple(exam.tolist()),
            diversity_strength=self.diversity_strength,
            redundancy=self.redundancy_form,
            complementarity=None if pairs is None else tuple(map(tuple, pairs.tolist())),
            position_bias=implied_position_bias(exam),
        )

    def with_base(self, base: ClickSimulator) -> ComposedSimulator:
        """The same composition effects (their current values, fixed) over another base."""
        return ComposedSimulator(
            base,
            self.unit_vectors,
            examination=self.examination.detach(),
            diversity_strength=self.diversity_strength,
            max_positions=self.max_positions,
            redundancy=self.redundancy_form,
            complementarity=None if self.pair_matrix is None else self._symmetric_pairs().detach(),
        )

    def _symmetric_pairs(self) -> torch.Tensor:
        """``P`` made symmetric with a zero diagonal.

        An item's own features are the redundancy term's, so the pairs only say how
        *different* features combine.
        """
        pairs = (self.pair_matrix + self.pair_matrix.T) / 2
        return pairs - torch.diag(torch.diagonal(pairs))

    #: Catalogues of at most this many items keep every pair's clipped similarity in
    #: one table (64 MiB at the limit), so lists gather it instead of multiplying
    #: vectors: several times faster for the environments' batches.
    SIMILARITY_TABLE_MAX_ITEMS = 4096
    _similarity_cache: tuple[tuple, torch.Tensor] | None = None

    def __getstate__(self) -> dict:
        # Copies and pickles (Ray workers) rebuild the table rather than ship it.
        return {**self.__dict__, "_similarity_cache": None}

    def _similarity_table(self) -> torch.Tensor | None:
        """``clamp(U @ U.T, min=0)`` over the catalogue, cached; ``None`` if too large.

        Shared by every composed simulator over the same item vectors in this
        process (each task wraps the bundle's members in its own composition, and a
        ``SyncVectorEnv`` of 256 single envs makes 256 tasks).
        """
        vectors = self.unit_vectors
        if len(vectors) > self.SIMILARITY_TABLE_MAX_ITEMS:
            return None
        key = (vectors.data_ptr(), vectors._version, vectors.device)
        if self._similarity_cache is None or self._similarity_cache[0] != key:
            content = vectors.detach().cpu().numpy().tobytes()
            shared = (hashlib.blake2b(content, digest_size=16).digest(), str(vectors.device))
            table = _SIMILARITY_TABLES.get(shared)
            if table is None:
                with torch.no_grad():  # a buffer: the similarity never needs gradients
                    table = (vectors @ vectors.T).clamp(min=0)
                _SIMILARITY_TABLES[shared] = table
                while len(_SIMILARITY_TABLES) > _MAX_SIMILARITY_TABLES:
                    _SIMILARITY_TABLES.pop(next(iter(_SIMILARITY_TABLES)))
            self._similarity_cache = (key, table)
        return self._similarity_cache[1]

    def pair_similarity(self, below: torch.Tensor, above: torch.Tensor) -> torch.Tensor:
        """Clipped cosine similarity of items ``below`` [B, M] to items ``above`` [B, A].

        Item indices without padding; ``[B, M, A]``.
        """
        table = self._similarity_table()
        if table is None:
            below_vectors = F.embedding(below, self.unit_vectors)
            above_vectors = F.embedding(above, self.unit_vectors)
            return (below_vectors @ above_vectors.transpose(1, 2)).clamp(min=0)
        index = (below * len(table))[:, :, None] + above[:, None, :]
        # A flat index_select: 3x faster than torch.take for these sizes.
        return table.view(-1).index_select(0, index.view(-1)).view(index.shape)

    def _list_effect(
        self, below: torch.Tensor, above: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Logit change of items ``below`` [B, M] from items ``above`` [B, A] (indices).

        ``mask`` (bool ``[B, M, A]``) says which item above counts for which below
        (padding must not count).
        """
        similarity = torch.where(mask, self.pair_similarity(below, above), 0.0)
        redundancy = similarity.amax(dim=2) if self.redundancy_form == "max" else similarity.sum(2)
        effect = -self.strength * redundancy
        if self.pair_matrix is not None:
            below_vectors = F.embedding(below, self.unit_vectors)
            above_vectors = F.embedding(above, self.unit_vectors)
            bonus = below_vectors @ self._symmetric_pairs() @ above_vectors.transpose(1, 2)
            effect = effect + torch.where(mask, bonus, 0.0).sum(dim=2)
        return effect

    def redundancy(self, items: torch.Tensor) -> torch.Tensor:
        """Redundancy of each position's item given the items above it, ``[B, K]``."""
        safe = items.clamp(min=0)
        above = torch.tril(
            torch.ones(items.shape[1], items.shape[1], dtype=torch.bool, device=items.device), -1
        )
        similarity = torch.where(
            above & (items != PAD)[:, None, :], self.pair_similarity(safe, safe), 0.0
        )
        return similarity.amax(dim=2) if self.redundancy_form == "max" else similarity.sum(dim=2)

    def last_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """The same formula for the last position only (one row of similarities)."""
        self._check_length(batch)
        k = batch.items.shape[1]
        base = self.base.last_click_probs(batch).clamp(1e-6, 1 - 1e-6)
        logits = torch.logit(base)
        if k > 1:
            mask = torch.ones(len(base), 1, k - 1, dtype=torch.bool, device=base.device)
            effect = self._list_effect(batch.items[:, -1:], batch.items[:, :-1], mask)
            logits = logits + effect[:, 0]
        return self.examination[k - 1] * torch.sigmoid(logits)

    def prefix_scorer(
        self, users: torch.Tensor, candidates: torch.Tensor, histories: torch.Tensor, length: int
    ) -> PrefixScorer:
        """The base's scorer plus the candidates' pairwise effects, once per episode."""
        return ComposedScorer(self, users, candidates, histories, length)

    def position_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """``exam_k * sigmoid(base logit - strength * redundancy + complement)``."""
        k = batch.items.shape[1]
        base = self.base.click_probs(batch, validate=False).clamp(1e-6, 1 - 1e-6)
        items = batch.items.clamp(min=0)
        above = torch.tril(torch.ones(k, k, dtype=torch.bool, device=base.device), diagonal=-1)
        # Padded positions count for nobody (their own rows are masked by click_probs).
        effect = self._list_effect(items, items, above & batch.mask[:, None, :])
        return self.examination[:k] * torch.sigmoid(torch.logit(base) + effect)


class ComposedScorer(PrefixScorer):
    """:class:`PrefixScorer` of a :class:`ComposedSimulator`.

    Every pair of candidates' effect (the clipped similarity, and with
    complementarity the pair bonus; ``[B, N, N]``) is computed once; each placed
    item then updates every candidate's running redundancy (max or sum) and
    complement (sum), so slot ``t`` costs a few gathers whatever ``t`` is, on top
    of the base model's own scorer.
    """

    def _prepare(self) -> None:
        simulator, candidates, length = self.simulator, self.candidates, self.length
        self.base = simulator.base.prefix_scorer(self.users, candidates, self.histories, length)
        similarity = simulator.pair_similarity(candidates, candidates)  # [B, N, N]
        bonus = None
        if simulator.pair_matrix is not None:
            unit = F.embedding(candidates, simulator.unit_vectors)  # [B, N, d]
            bonus = unit @ simulator._symmetric_pairs() @ unit.transpose(1, 2)
        self.examination = simulator.examination[:length]
        self.max_form = simulator.redundancy_form == "max"
        # Rows indexed by the placed item: its effect on every candidate's logit.
        # The sum form folds strength and bonus into one matrix (one running sum).
        zeros = torch.zeros(candidates.shape, device=candidates.device)
        if self.max_form:
            self.strength = simulator.strength
            self.similarity, self.bonus = similarity, bonus
            self.redundancy = zeros
            self.complement = None if bonus is None else zeros.clone()
        else:
            effect = -simulator.strength * similarity
            self.effect = effect if bonus is None else effect + bonus
            self.running_effect = zeros

    def _slot_probs(self, positions: torch.Tensor, t: int) -> torch.Tensor:
        logits = torch.logit(self.base.place(positions).clamp(1e-6, 1 - 1e-6))
        column = positions[:, None]
        rows = column[:, :, None].expand(-1, -1, self.candidates.shape[1])
        if self.max_form:
            if t > 0:
                logits = logits - self.strength * torch.gather(self.redundancy, 1, column)[:, 0]
                if self.bonus is not None:
                    logits = logits + torch.gather(self.complement, 1, column)[:, 0]
            torch.maximum(
                self.redundancy, torch.gather(self.similarity, 1, rows)[:, 0], out=self.redundancy
            )
            if self.bonus is not None:
                self.complement += torch.gather(self.bonus, 1, rows)[:, 0]
        else:
            if t > 0:
                logits = logits + torch.gather(self.running_effect, 1, column)[:, 0]
            self.running_effect += torch.gather(self.effect, 1, rows)[:, 0]
        return self.examination[t] * torch.sigmoid(logits)


#: How a simulator's examination and list effects are set: not at all (``"none"``: the
#: learned simulator alone), by hand (``"assumed"``: :class:`AssumedComposition`, a DCG
#: examination curve and a diminishing-returns strength) or by maximum likelihood on
#: the bundle's training logs (``"fitted"``, :meth:`SimulatorBundle.fitted_composition`).
COMPOSITIONS = ("none", "assumed", "fitted")


@dataclass(frozen=True)
class AssumedComposition:
    """Examination and diminishing returns set by hand on top of a learned simulator.

    Attributes:
        position_bias: Examination exponent: the item at position ``k`` (from 0) is
            examined with probability ``1 / log2(k + 2) ** position_bias``; ``None``
            takes the bundle's default (``BundleConfig.position_bias``, 1).
        diversity_strength: Diminishing-returns strength for items similar to those
            placed above; ``None`` takes the bundle's default
            (``BundleConfig.diversity_strength``, 2).
    """

    position_bias: float | None = None
    diversity_strength: float | None = None

    def __post_init__(self) -> None:
        for name in ("position_bias", "diversity_strength"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ConfigError(
                    f"AssumedComposition.{name} must be a number or None, got {value!r}"
                )
            if not float(value) >= 0:
                raise ConfigError(
                    f"AssumedComposition.{name} must be >= 0 (0 switches the effect off), "
                    f"got {value!r}"
                )
            object.__setattr__(self, name, float(value))


#: A simulator's composition: ``"none"``, ``"fitted"`` or an :class:`AssumedComposition`.
CompositionSetting = str | AssumedComposition


def composition_from(value: Any) -> CompositionSetting:
    """``value`` as a composition: ``"none"``, ``"fitted"`` or an :class:`AssumedComposition`.

    Accepts ``"assumed"`` (the bundle's default strengths) and a mapping of
    :class:`AssumedComposition` fields (``{"position_bias": 0.5}``, as a command line
    or a JSON file gives it).

    Raises:
        ConfigError: Anything else, naming what is accepted.
    """
    if isinstance(value, AssumedComposition) or value in ("none", "fitted"):
        return value
    if value == "assumed":
        return AssumedComposition()
    if isinstance(value, dict):
        fields = {f.name for f in dataclasses.fields(AssumedComposition)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ConfigError(
                f"composition {value!r} has unknown field(s) {unknown}; an assumed "
                f"composition takes {sorted(fields)}"
            )
        return AssumedComposition(**value)
    raise ConfigError(
        f"composition must be 'none', 'assumed', 'fitted', an AssumedComposition or a dict "
        f"of its fields, got {value!r} ('fitted': examination and list effects fitted on "
        "the training logs)"
    )
