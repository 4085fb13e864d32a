"""Intervals that count both sources of error in a comparison: seeds and requests.

An agent's score in a table is a mean over training seeds *and* over test requests;
both are samples. A bootstrap over seeds alone treats the test requests as fixed and
under-covers whenever requests vary more than seeds do (they usually do: a few
hundred requests, each with its own best list). Here every estimate starts from the
per-request values of each run, a ``[seeds, requests]`` matrix on the requests every
agent is evaluated on, and the bootstrap resamples both factors.

Seeds and requests are *crossed* (every seed is evaluated on every request), so a
replicate draws seeds with replacement and, independently, requests with
replacement, and takes the mean of the selected cells: the two-way (pigeonhole)
bootstrap of Owen (2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2)), mildly
conservative for crossed designs, where resampling one factor alone is
anti-conservative. A paired difference between two agents shares each replicate's
request draw (the same requests judge both) and draws each agent's seeds on its
own (their seeds are separate trainings).

The minimum detectable difference (Bloom, 1995, "Minimum detectable effects",
Evaluation Review 19(5)) of a paired comparison is
``(z_{1 - alpha / 2} + z_{power}) * se``: the smallest true difference a two-sided
test at level ``alpha`` would detect with probability ``power``, given the
difference's standard error ``se`` (here the bootstrap's). A claimed effect smaller
than it could not have been seen by the run: the run neither confirms nor refutes it.

Replicates are computed with resampling *counts* (multinomial weights) instead of
index arrays: a replicate mean is ``w_seeds @ V @ w_requests / (S * R)``, so 2,000
replicates of a 5 x 1,817 matrix take milliseconds. NaN cells (a metric undefined
on a request, e.g. logged-click NDCG without a logged positive) are left out of
numerator and denominator alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats


@dataclass(frozen=True)
class Interval:
    """A mean with its two-way bootstrap interval.

    Attributes:
        mean: Mean over every seed and request (NaN cells left out).
        low: Lower end of the percentile interval.
        high: Upper end.
        se: Standard deviation of the bootstrap replicates (the mean's standard error).
        seeds: Seeds (rows) the estimate rests on.
        requests: Requests (columns).
    """

    mean: float
    low: float
    high: float
    se: float
    seeds: int
    requests: int

    def text(self, digits: int = 3) -> str:
        """``"mean [low, high]"`` rounded to ``digits`` decimals, for tables."""
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class PairedDifference:
    """``mean(a) - mean(b)`` on the same requests, with its interval and power.

    Attributes:
        mean: The observed difference.
        low: Lower end of the percentile interval.
        high: Upper end.
        se: Bootstrap standard error of the difference.
        mde: Minimum detectable difference at the requested power and level.
        power: The power ``mde`` is computed at (default 0.8).
        alpha: The two-sided level (default 0.05).
    """

    mean: float
    low: float
    high: float
    se: float
    mde: float
    power: float
    alpha: float

    @property
    def separated(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low > 0 or self.high < 0


def minimum_detectable_difference(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """``(z_{1 - alpha/2} + z_power) * se``: the smallest effect a run can be expected to see.

    Args:
        se: Standard error of the difference.
        alpha: Two-sided significance level, in ``(0, 1)``.
        power: Probability of detecting a true effect of that size, in ``(0, 1)``.

    Raises:
        ValueError: ``alpha`` or ``power`` outside ``(0, 1)``, or a negative ``se``.
    """
    for name, value in (("alpha", alpha), ("power", power)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if not se >= 0.0:
        raise ValueError(f"se must be a standard error >= 0, got {se!r}")
    return float((scipy.stats.norm.ppf(1 - alpha / 2) + scipy.stats.norm.ppf(power)) * se)


def hierarchical_interval(
    values: np.ndarray, *, confidence: float = 0.95, reps: int = 2000, seed: int = 0
) -> Interval:
    """Mean of ``values [seeds, requests]`` with a bootstrap over seeds and requests.

    Args:
        values: Per-request values of each run; one row per seed, one column per
            request (the same requests in every row). NaN cells are left out.
        confidence: Coverage of the percentile interval.
        reps: Bootstrap replicates.
        seed: Seed of the resampling (no global random state is used).

    Raises:
        ValueError: ``values`` is not a 2-D matrix with at least one defined cell.
    """
    matrix = _matrix("values", values)
    generator = np.random.default_rng(seed)
    replicates = _replicate_means(matrix, *_draws(generator, matrix.shape, reps))
    return Interval(
        mean=float(np.nanmean(matrix)),
        **_percentiles(replicates, confidence),
        seeds=matrix.shape[0],
        requests=matrix.shape[1],
    )


def run_intervals(
    runs: Sequence[Mapping[str, np.ndarray]], measures: Sequence[str]
) -> dict[str, Interval]:
    """Each measure's two-way interval over ``runs``.

    Args:
        runs: One mapping per seed: measure -> per-request values, the same requests
            in every run.
        measures: The measures to summarise (keys of every run).
    """
    return {
        measure: hierarchical_interval(np.stack([run[measure] for run in runs]))
        for measure in measures
    }


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    alpha: float = 0.05,
    power: float = 0.8,
    reps: int = 2000,
    seed: int = 0,
) -> PairedDifference:
    """``mean(a) - mean(b)`` with its interval and minimum detectable difference.

    Each replicate draws one set of requests for both agents and each agent's seeds
    on its own.

    Args:
        a: Per-request values of agent A, ``[seeds_a, requests]``.
        b: Per-request values of agent B, ``[seeds_b, requests]`` (the same requests,
            in the same order; the seed counts may differ).
        confidence: Coverage of the percentile interval.
        alpha: Two-sided level of the minimum detectable difference.
        power: Power of the minimum detectable difference.
        reps: Bootstrap replicates.
        seed: Seed of the resampling.

    Raises:
        ValueError: The matrices are malformed or hold different numbers of requests.
    """
    a, b = _matrix("a", a), _matrix("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a has {a.shape[1]} requests and b has {b.shape[1]}: a paired difference "
            "needs both agents' values on the same requests, in the same order"
        )
    generator = np.random.default_rng(seed)
    seeds_a, requests = _draws(generator, a.shape, reps)
    seeds_b = _counts(generator, b.shape[0], reps)
    replicates = _replicate_means(a, seeds_a, requests) - _replicate_means(b, seeds_b, requests)
    spread = _percentiles(replicates, confidence)
    return PairedDifference(
        mean=float(np.nanmean(a) - np.nanmean(b)),
        **spread,
        mde=minimum_detectable_difference(spread["se"], alpha=alpha, power=power),
        power=power,
        alpha=alpha,
    )


@dataclass(frozen=True)
class RankingAgreement:
    """Kendall's tau between two judges' rankings of the same agents, with its interval.

    Attributes:
        tau: Tau-b between the agents' mean scores under judge X and under judge Y.
        low: Lower end of the percentile interval.
        high: Upper end.
        agents: Agents ranked.
        requests: Requests the means are over.
        resolved_pairs: Pairs of agents that judge Y separates: the interval of their
            paired difference under Y (:func:`paired_difference`) excludes 0.
        resolved_agreement: Share of :attr:`resolved_pairs` that judge X orders as Y
            does (NaN where Y separates no pair). Unlike tau, it does not count the
            pairs too close for the run to order, whose order under either judge is
            noise.
    """

    tau: float
    low: float
    high: float
    agents: int
    requests: int
    resolved_pairs: int
    resolved_agreement: float


def ranking_agreement(
    x: Mapping[str, np.ndarray],
    y: Mapping[str, np.ndarray],
    *,
    confidence: float = 0.95,
    reps: int = 2000,
    seed: int = 0,
) -> RankingAgreement:
    """How well judge X ranks the agents as judge Y does: Kendall's tau-b with an interval.

    Also the share of the agent pairs that Y separates (their paired difference's
    interval under Y excludes 0) that X orders the same way.

    The benchmark's validity figure in the synthetic world, where X is the held-out
    simulator and Y the true user model: the tau between the agents' mean held-out
    and mean true rewards. Each bootstrap replicate draws one set of requests for
    every agent and each agent's seeds on its own (as :func:`paired_difference`),
    and weighs both judges' values of a run alike (they score the same lists).

    Args:
        x: Agent -> per-request values under judge X, ``[seeds, requests]``.
        y: Agent -> values under judge Y, the same shape as ``x``'s for each agent.
        confidence: Coverage of the percentile interval.
        reps: Bootstrap replicates.
        seed: Seed of the resampling.

    Raises:
        ValueError: Fewer than three agents, different agents in ``x`` and ``y``,
            shapes that differ, or agents evaluated on different numbers of requests.
    """
    if set(x) != set(y):
        raise ValueError(f"x and y must score the same agents, got {sorted(x)} and {sorted(y)}")
    agents = list(x)
    if len(agents) < 3:
        raise ValueError(
            f"a ranking agreement needs at least 3 agents, got {len(agents)} ({agents}): "
            "with two, tau is +1 or -1 and says nothing about the judge"
        )
    xs = {agent: _matrix(f"x[{agent!r}]", x[agent]) for agent in agents}
    ys = {agent: _matrix(f"y[{agent!r}]", y[agent]) for agent in agents}
    requests = {matrix.shape[1] for matrix in xs.values()}
    if len(requests) > 1 or any(xs[a].shape != ys[a].shape for a in agents):
        shapes = {agent: (xs[agent].shape, ys[agent].shape) for agent in agents}
        raise ValueError(
            f"every agent needs x and y values of one shape on the same requests, got {shapes}"
        )
    generator = np.random.default_rng(seed)
    request_counts = _counts(generator, requests.pop(), reps)
    means_x, means_y = np.empty((reps, len(agents))), np.empty((reps, len(agents)))
    for index, agent in enumerate(agents):
        seed_counts = _counts(generator, xs[agent].shape[0], reps)
        means_x[:, index] = _replicate_means(xs[agent], seed_counts, request_counts)
        means_y[:, index] = _replicate_means(ys[agent], seed_counts, request_counts)
    replicates = np.array([_tau(a, b) for a, b in zip(means_x, means_y, strict=True)])
    spread = _percentiles(replicates, confidence)
    mean_x = {agent: float(np.nanmean(xs[agent])) for agent in agents}
    resolved = agreeing = 0
    for index, first in enumerate(agents):
        for second in agents[index + 1 :]:
            under_y = paired_difference(
                ys[first], ys[second], confidence=confidence, reps=reps, seed=seed
            )
            if under_y.low > 0 or under_y.high < 0:
                resolved += 1
                agreeing += (mean_x[first] - mean_x[second]) * under_y.mean > 0
    return RankingAgreement(
        tau=_tau(
            np.array(list(mean_x.values())),
            np.array([np.nanmean(ys[a]) for a in agents]),
        ),
        low=spread["low"],
        high=spread["high"],
        agents=len(agents),
        requests=xs[agents[0]].shape[1],
        resolved_pairs=resolved,
        resolved_agreement=agreeing / resolved if resolved else math.nan,
    )


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors (NaN where either has a NaN or is constant)."""
    if np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    return float(scipy.stats.kendalltau(x, y).statistic)


def _matrix(name: str, values: np.ndarray) -> np.ndarray:
    matrix = np.asarray(values, dtype=float)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(
            f"{name} must be a [seeds, requests] matrix of per-request values, got shape "
            f"{matrix.shape}; a single run is one row (values[None, :])"
        )
    if np.isnan(matrix).all():
        raise ValueError(f"{name} has no defined value (every cell is NaN)")
    return matrix


def _draws(
    generator: np.random.Generator, shape: tuple[int, int], reps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resampling counts of seeds ``[reps, S]`` and of requests ``[reps, R]``."""
    if reps < 2:
        raise ValueError(f"reps must be at least 2 bootstrap replicates, got {reps}")
    return _counts(generator, shape[0], reps), _counts(generator, shape[1], reps)


def _counts(generator: np.random.Generator, n: int, reps: int) -> np.ndarray:
    """How often each of ``n`` units is drawn in each of ``reps`` resamples ``[reps, n]``."""
    return generator.multinomial(n, np.full(n, 1 / n), size=reps)


def _replicate_means(
    matrix: np.ndarray, seed_counts: np.ndarray, request_counts: np.ndarray
) -> np.ndarray:
    """Weighted means ``[reps]`` of ``matrix`` under each replicate's counts (NaN left out)."""
    defined = ~np.isnan(matrix)
    filled = np.where(defined, matrix, 0.0)
    total = ((seed_counts @ filled) * request_counts).sum(axis=1)
    weight = ((seed_counts @ defined.astype(float)) * request_counts).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / weight  # NaN where a replicate drew only undefined cells


def _percentiles(replicates: np.ndarray, confidence: float) -> dict[str, float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    kept = replicates[~np.isnan(replicates)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(kept, [tail, 100 - tail])
    se = float(kept.std(ddof=1)) if len(kept) > 1 else math.nan
    return {"low": float(low), "high": float(high), "se": se}


__all__ = [
    "Interval",
    "PairedDifference",
    "RankingAgreement",
    "hierarchical_interval",
    "minimum_detectable_difference",
    "paired_difference",
    "ranking_agreement",
    "run_intervals",
]
