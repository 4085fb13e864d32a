"""Fitting a composition's examination and list effects on logged clicks, and caching it.

:func:`fit_composition` fits a :class:`~simulators.composed.ComposedSimulator`'s
effects by maximum likelihood (with its base, or around a fitted base);
:func:`cached_fitted_composition` does it for every member of a bundle's ensemble
and caches the result, each member on the rows :func:`member_rows` gives it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch

from simulators._io import atomic_write
from simulators.base import ClickSimulator
from simulators.composed import ComposedSimulator, dcg_examination
from simulators.data.cache import package_version
from simulators.data.errors import ConfigError
from simulators.data.paths import cache_dir
from simulators.data.pipeline import RerankData
from simulators.request_pool import RequestPool
from simulators.training import FitResult, disjoint_halves, fit_simulator

#: Version of the cached fitted-composition files; a file of another version is refitted.
COMPOSITION_FORMAT = 1


#: When the composition is fitted: with the base (``"joint"``) or on a fitted base.
FIT_MODES = ("joint", "after")


def fittable_composition(
    base: ClickSimulator,
    item_vectors: torch.Tensor,
    max_positions: int,
    *,
    redundancy: str = "sum",
    complementarity: bool = True,
) -> ComposedSimulator:
    """A trainable composition around ``base`` at its fit's starting point.

    The list effects start at zero and the examination at the DCG prior (a flat
    start would sit where the sigmoid is saturated), so a strength a fit reports
    is one the logs support.
    """
    width = item_vectors.shape[1]
    return ComposedSimulator(
        base,
        item_vectors,
        examination=dcg_examination(max_positions, 1.0),
        diversity_strength=0.0,
        max_positions=max_positions,
        redundancy=redundancy,
        complementarity=torch.zeros(width, width) if complementarity else None,
        trainable=True,
    )


def composition_optimizer(
    composed: ComposedSimulator,
    *,
    mode: str = "joint",
    learning_rate: float = 5e-3,
    weight_decay: float = 1e-5,
    effect_learning_rate: float = 0.05,
    pair_learning_rate: float = 5e-4,
) -> torch.optim.Adam:
    """Adam over a trainable composition: the effects, the pairs and (joint) the base.

    Each group has its own step size (see :func:`fit_composition` for why); the
    effects have no weight decay. ``mode="after"`` leaves the base out.

    Raises:
        ValueError: ``composed`` is not trainable, or an unknown ``mode``.
    """
    if not composed.trainable:
        raise ValueError("composition_optimizer needs a trainable ComposedSimulator")
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    effect_ids = {id(p) for p in composed.effect_parameters()}
    groups = [
        {
            "params": [composed.examination_logits, composed.strength],
            "lr": effect_learning_rate,
            "weight_decay": 0.0,
        }
    ]
    if composed.pair_matrix is not None:
        groups.append(
            {"params": [composed.pair_matrix], "lr": pair_learning_rate, "weight_decay": 0.0}
        )
    if mode == "joint":
        groups.append(
            {
                "params": [p for p in composed.parameters() if id(p) not in effect_ids],
                "lr": learning_rate,
                "weight_decay": weight_decay,
            }
        )
    return torch.optim.Adam(groups)


def fit_composition(
    base: ClickSimulator,
    data: RerankData,
    item_vectors: torch.Tensor,
    *,
    mode: str = "joint",
    redundancy: str = "sum",
    complementarity: bool = True,
    max_positions: int | None = None,
    effect_learning_rate: float = 0.05,
    pair_learning_rate: float = 5e-4,
    progress: bool = False,
    **fit_options: object,
) -> tuple[ComposedSimulator, FitResult]:
    """Fit examination and list effects by maximum likelihood on the training logs.

    The examination of every position after the first, the redundancy strength and
    (with ``complementarity``) a pair matrix over the item vectors are parameters of
    a :class:`ComposedSimulator` around ``base`` (:func:`fittable_composition`);
    :func:`fit_simulator` maximises the logged clicks' likelihood, stopping early
    on the validation slates.

    What the logs can identify depends on how they were collected: a position
    effect only where items appear at several positions, a list effect only where
    lists vary in composition (the synthetic world's exploratory logging policy
    does; MovieLens pseudo-slates, ordered by time, carry no list effect at all).

    Args:
        base: The attractiveness model. ``mode="joint"``: fitted here together with
            the effects (best with a position- and list-blind base, e.g. the
            pointwise model, whose parameters cannot absorb them); ``"after"``:
            already fitted, kept fixed.
        data: Processed data (train slates fit, valid slates select).
        item_vectors: ``[I, d]`` item features the similarity and pairs use.
        mode: ``"joint"`` or ``"after"``.
        redundancy: ``"sum"`` (default) or ``"max"``.
        complementarity: Fit the pair matrix too.
        max_positions: K (default: the logged slates' length).
        effect_learning_rate: Adam step size of the examination and the strength (no
            weight decay on the effects). Adam moves a parameter by about its step
            size per update, so at the base's rate (5e-3) a strength of 1 needs 200
            updates, more than a pointwise base trains before it overfits and early
            stopping ends the fit: the effects would stop short of their maximum
            likelihood.
        pair_learning_rate: Adam step size of the complementarity matrix. Slow on
            purpose: its ``d^2`` entries summed over the items above can mimic a
            position effect, and at the effects' rate they did (a world's position
            exponent 4 came out as 1.7); at 5e-4 the matrix moves little before
            early stopping, a regulariser under which it came out at 3.7
            (docs/simulators.md).
        progress: Progress bar over epochs.
        **fit_options: For :func:`fit_simulator` (``epochs``, ``learning_rate``
            and ``weight_decay`` of the base, ``patience``, ``seed``, ``device``).

    Returns:
        The fitted (trainable) simulator, and the fit's record. ``.composition()``
        gives the fitted values; ``.with_base(base)`` a fixed copy for serving.

    Raises:
        ValueError: An unknown ``mode`` or ``redundancy``.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    composed = fittable_composition(
        base,
        item_vectors,
        max_positions or data.logged_items.shape[1],
        redundancy=redundancy,
        complementarity=complementarity,
    )
    composed.to(fit_options.get("device", "cpu"))
    optimizer = composition_optimizer(
        composed,
        mode=mode,
        learning_rate=float(fit_options.get("learning_rate", 5e-3)),
        weight_decay=float(fit_options.get("weight_decay", 1e-5)),
        effect_learning_rate=effect_learning_rate,
        pair_learning_rate=pair_learning_rate,
    )
    frozen = [p for p in base.parameters() if p.requires_grad] if mode == "after" else []
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        result = fit_simulator(
            composed,
            data,
            progress=progress,
            optimizer=optimizer,
            **fit_options,
        )
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    return composed, result


def member_rows(
    pool: RequestPool, held_out: str, members: int, seed: int = 0
) -> list[dict[str, np.ndarray] | None]:
    """The logged-slate rows each ensemble member is fitted on (``None``: all).

    With ``held_out`` ``"sessions"`` or ``"users"``
    (:attr:`simulators.bundle.BundleConfig.held_out`) the training members get one
    of :func:`~simulators.training.disjoint_halves` (seeded by ``seed``) and the
    last, held-out, member the other.

    Raises:
        ConfigError: A half without training or validation slates (a model fitted
            on it could not learn or choose its epoch).
    """
    if held_out == "seed":
        return [None] * members
    first, second = disjoint_halves(pool, by=held_out, seed=seed)
    for name, half in (("training members'", first), ("held-out member's", second)):
        empty = [split for split, rows in half.items() if len(rows) == 0]
        if empty:
            hint = (
                "each user needs at least 2 validation slates to deal one to each half: "
                "raise PipelineConfig.valid_fraction (or sessions per user)"
                if held_out == "sessions"
                else "the logs need at least 2 users with slates in every split"
            )
            raise ConfigError(
                f"held_out={held_out!r} leaves the {name} half with no {' or '.join(empty)} "
                f"slates (of {len(pool.split_indices(empty[0]))} logged): {hint}, or use "
                "another held_out"
            )
    return [first] * (members - 1) + [second]


def cached_fitted_composition(
    members: Sequence[ClickSimulator],
    pool: RequestPool,
    item_vectors: torch.Tensor,
    *,
    kind: str,
    checksum: str,
    held_out: str = "seed",
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Examination and list effects of each ensemble member, fitted once and cached.

    Each member is the attractiveness model, kept fixed (:func:`fit_composition`
    with ``mode="after"``, ``redundancy="sum"`` and a complementarity matrix over
    ``item_vectors``), on the rows :func:`member_rows` gives it. The entry is cached
    in ``$RERANK_ENV_CACHE/compositions`` (versioned, keyed by the member
    checkpoint's checksum, written atomically) and read back while its format and
    checksum match (the bundle's own form is
    :meth:`simulators.bundle.SimulatorBundle.fitted_composition`).

    Args:
        members: The ensemble's members, the held-out one last.
        pool: The request pool (its training slates fit, valid slates select).
        item_vectors: ``[I, d]`` item vectors of the similarity and the pairs.
        kind: Model kind (part of the cache file's name).
        checksum: SHA-256 of the members' checkpoint (the cache key).
        held_out: How the held-out member was made independent (see
            :func:`member_rows`).
        seed: Seed of the bundle's member split.
        progress: Progress bar over the fits' epochs.

    Returns:
        ``{"format", "kind", "simulator_sha256", "mode", "members": [per member:
        Composition fields, best_epoch, valid_nll], "summary": {field: {mean, min,
        max}} over the members}``: the spread over members is the fit's interval.
    """
    path = cache_dir() / "compositions" / f"{kind}-{checksum[:16]}-v{COMPOSITION_FORMAT}.json"
    if path.exists():
        entry = json.loads(path.read_text())
        if entry.get("format") == COMPOSITION_FORMAT and entry.get("simulator_sha256") == checksum:
            return entry
    fitted = []
    rows = member_rows(pool, held_out, len(members), seed)
    for index, member in enumerate(members):
        model, result = fit_composition(
            member,
            pool,
            item_vectors,
            mode="after",
            redundancy="sum",
            complementarity=True,
            max_positions=pool.slate_length,
            seed=index,
            progress=progress,
            train_rows=None if rows[index] is None else rows[index]["train"],
            valid_rows=None if rows[index] is None else rows[index]["valid"],
            # where the (shared, frozen) member already is: moving it would move
            # every task's simulator
            device=next(member.parameters()).device,
        )
        fitted.append(
            {
                **model.composition().to_dict(),
                "best_epoch": result.best_epoch,
                "valid_nll": result.valid_nll[result.best_epoch],
            }
        )
    entry = {
        "format": COMPOSITION_FORMAT,
        "rerank-env": package_version(),
        "kind": kind,
        "simulator_sha256": checksum,
        "mode": "after",
        "members": fitted,
        "summary": {
            name: {
                "mean": float(np.mean([m[name] for m in fitted])),
                "min": float(np.min([m[name] for m in fitted])),
                "max": float(np.max([m[name] for m in fitted])),
            }
            for name in ("diversity_strength", "position_bias")
        },
    }
    text = json.dumps(entry, indent=1).encode()
    atomic_write(path, lambda handle: handle.write(text))
    return entry
