"""Two-way bootstrap intervals, paired differences and minimum detectable differences."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from agents.evaluation import confidence_interval
from agents.intervals import (
    hierarchical_interval,
    minimum_detectable_difference,
    paired_difference,
    ranking_agreement,
    run_intervals,
)


def _world(
    generator: np.random.Generator,
    seeds: int,
    requests: int,
    *,
    seed_sd: float,
    request_sd: float,
    noise_sd: float = 0.1,
) -> np.ndarray:
    """``mu + seed effect + request effect + noise`` with ``mu = 0``."""
    return (
        generator.normal(0, seed_sd, (seeds, 1))
        + generator.normal(0, request_sd, (1, requests))
        + generator.normal(0, noise_sd, (seeds, requests))
    )


def test_the_two_way_interval_covers_where_a_bootstrap_over_seeds_does_not() -> None:
    # Requests vary more than seeds (as held-out rewards do): an interval over the
    # seed means alone treats the requests as fixed and misses the true mean 0.
    generator = np.random.default_rng(0)
    trials, two_way, seeds_only = 400, 0, 0
    for trial in range(trials):
        values = _world(generator, 5, 150, seed_sd=0.02, request_sd=0.5)
        interval = hierarchical_interval(values, reps=1000, seed=trial)
        two_way += interval.low <= 0 <= interval.high
        _, low, high = confidence_interval(values.mean(axis=1), seed=trial)
        seeds_only += low <= 0 <= high
    assert two_way / trials >= 0.88, two_way / trials  # nominal 0.95; seen: 0.915
    assert seeds_only / trials <= 0.4, seeds_only / trials  # seen: 0.30


def test_interval_fields_and_a_single_seed() -> None:
    values = _world(np.random.default_rng(1), 1, 400, seed_sd=0.0, request_sd=1.0)
    interval = hierarchical_interval(values, reps=1000)
    assert (interval.seeds, interval.requests) == (1, 400)
    assert interval.low < interval.mean < interval.high
    assert interval.mean == pytest.approx(values.mean())
    # One seed: the requests' standard error, 1 / sqrt(400) = 0.05.
    assert interval.se == pytest.approx(values.std(ddof=1) / 20, rel=0.15)
    assert hierarchical_interval(values, reps=1000) == interval  # seeded


def test_nan_cells_are_left_out_not_counted_as_zero() -> None:
    values = np.full((3, 100), 2.0)
    values[:, ::2] = np.nan  # a metric undefined on half the requests
    interval = hierarchical_interval(values, reps=200)
    assert interval.mean == interval.low == interval.high == 2.0


def test_pairing_on_requests_removes_their_shared_variance() -> None:
    generator = np.random.default_rng(2)
    shared = generator.normal(0, 1.0, (1, 300))  # what makes a request easy or hard
    a = shared + 0.05 + generator.normal(0, 0.05, (5, 300))
    b = shared + generator.normal(0, 0.05, (5, 300))
    paired = paired_difference(a, b, reps=1000)
    assert paired.low <= 0.05 <= paired.high and paired.separated
    # Unpaired, the difference would carry each request's variance twice over.
    separate = [hierarchical_interval(x, reps=1000).se for x in (a, b)]
    assert paired.se < 0.2 * np.hypot(*separate)
    assert paired.mde == pytest.approx(2.8016 * paired.se, rel=1e-3)
    assert paired.mde < 0.05  # the run had the power to see this effect


def test_a_paired_difference_too_small_for_the_run_is_not_separated() -> None:
    generator = np.random.default_rng(3)
    a = generator.normal(0.01, 1.0, (3, 50))
    b = generator.normal(0.0, 1.0, (3, 50))
    paired = paired_difference(a, b, reps=500)
    assert not paired.separated and paired.mde > 0.3  # 50 noisy requests see nothing small


def test_minimum_detectable_difference_formula_and_errors() -> None:
    z = scipy.stats.norm.ppf(0.975) + scipy.stats.norm.ppf(0.8)
    assert minimum_detectable_difference(0.01) == pytest.approx(z * 0.01)
    assert minimum_detectable_difference(0.01, power=0.9) > minimum_detectable_difference(0.01)
    with pytest.raises(ValueError, match="power must be in"):
        minimum_detectable_difference(0.01, power=1.0)
    with pytest.raises(ValueError, match="se must be"):
        minimum_detectable_difference(-1.0)


def test_malformed_inputs_are_refused_with_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\[seeds, requests\] matrix.*shape \(4,\)"):
        hierarchical_interval(np.zeros(4))
    with pytest.raises(ValueError, match="every cell is NaN"):
        hierarchical_interval(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="a has 3 requests and b has 4"):
        paired_difference(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="reps must be at least 2"):
        hierarchical_interval(np.zeros((2, 3)), reps=1)
    with pytest.raises(ValueError, match="confidence must be in"):
        hierarchical_interval(np.ones((2, 3)), confidence=95)


def test_ranking_agreement_is_one_for_a_faithful_judge_and_falls_for_a_noisy_one() -> None:
    generator = np.random.default_rng(1)
    # Six agents 0.1 apart; the true reward is the held-out reward plus request noise.
    held_out = {
        f"agent{k}": 2.0 + 0.1 * k + _world(generator, 5, 400, seed_sd=0.02, request_sd=0.5)
        for k in range(6)
    }
    faithful = {agent: values + 0.3 for agent, values in held_out.items()}
    agreement = ranking_agreement(held_out, faithful)
    assert agreement.tau == pytest.approx(1.0)
    assert agreement.low == pytest.approx(1.0) and agreement.high == pytest.approx(1.0)
    assert (agreement.agents, agreement.requests) == (6, 400)
    # A judge that swaps the two best agents' order: tau = 1 - 2 * 1 / 15.
    swapped = dict(faithful)
    swapped["agent4"], swapped["agent5"] = faithful["agent5"], faithful["agent4"]
    agreement = ranking_agreement(held_out, swapped)
    assert agreement.tau == pytest.approx(1 - 2 / 15)
    assert agreement.low <= agreement.tau <= agreement.high
    # The truth separates every pair but agent1 / agent2 (drawn 0.04 apart), and the
    # judge orders all of them but the swapped one as it does.
    assert agreement.resolved_pairs == 14
    assert agreement.resolved_agreement == pytest.approx(13 / 14)
    # Agents too close to order: the interval is wide, and says so.
    close = {agent: values - 0.1 * k for k, (agent, values) in enumerate(held_out.items())}
    noisy = {
        agent: values + generator.normal(0, 1, values.shape) for agent, values in close.items()
    }
    agreement = ranking_agreement(close, noisy)
    assert agreement.high - agreement.low > 0.5
    # Six agents with one true mean: the truth separates only the few pairs a 5% test
    # separates by chance (2 of 15 here), against 14 above.
    tied = {agent: values - 0.1 * k for k, (agent, values) in enumerate(held_out.items())}
    agreement = ranking_agreement(held_out, tied)
    assert agreement.resolved_pairs <= 3


def test_ranking_agreement_refuses_what_it_cannot_rank() -> None:
    values = {f"a{k}": np.ones((2, 10)) * k for k in range(3)}
    with pytest.raises(ValueError, match="at least 3 agents, got 2"):
        two = {"a": values["a0"], "b": values["a1"]}
        ranking_agreement(two, two)
    with pytest.raises(ValueError, match="the same agents"):
        ranking_agreement(values, {**values, "extra": values["a0"]})
    with pytest.raises(ValueError, match="one shape on the same requests"):
        ranking_agreement(values, {**values, "a2": np.ones((2, 9))})


def test_run_intervals_summarise_each_measure_over_seeds_and_requests() -> None:
    runs = [{"a": np.array([1.0, 2.0, 3.0]), "b": np.zeros(3)} for _ in range(2)]
    intervals = run_intervals(runs, ["a", "b"])
    assert list(intervals) == ["a", "b"]
    assert intervals["a"] == hierarchical_interval(np.stack([run["a"] for run in runs]))
    assert intervals["a"].seeds == 2 and intervals["a"].requests == 3
    assert intervals["b"].text() == "0.000 [0.000, 0.000]"
    assert intervals["a"].text(1) == f"2.0 [{intervals['a'].low:.1f}, {intervals['a'].high:.1f}]"
