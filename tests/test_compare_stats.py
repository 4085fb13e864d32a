"""The statistics of ``compare``'s tables: per-request values, two-way intervals, pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.cli import main
from agents.compare import run_compare
from agents.evaluation import (
    REQUEST_VALUES_FORMAT,
    TWO_WAY_INTERVAL,
    RequestValues,
    agreement_entry,
    agreement_line,
    compact_table,
    paired_table,
    probability_of_improvement,
    reference_agent,
    summarise,
)
from agents.intervals import hierarchical_interval
from simulators.data.errors import ConfigError

TINY = {"num_candidates": 10, "slate_length": 4}


def _runs(
    generator: np.random.Generator,
    seeds: int,
    requests: int,
    *,
    shift: float = 0.0,
    shared: np.ndarray | None = None,
    true: bool = False,
) -> list[RequestValues]:
    """``seeds`` runs whose rewards vary far more across requests than across seeds."""
    base = generator.normal(0, 1.0, requests) if shared is None else shared
    runs = []
    for _ in range(seeds):
        reward = 2.0 + shift + base + generator.normal(0, 0.02) + generator.normal(0, 0.1, requests)
        values = {"reward_eval": reward, "ndcg": np.where(np.arange(requests) % 3, reward, np.nan)}
        if true:
            values["reward_true"] = reward + 0.1
        runs.append(RequestValues(values, {"test": np.arange(100, 100 + requests)}))
    return runs


def _rows(agent: str, runs: list[RequestValues], seeds: int | None = None) -> list[dict]:
    """Per-seed rows whose metrics are the runs' means (a run once: repeated per seed)."""
    runs = runs * (seeds or 1) if len(runs) == 1 and seeds else runs
    return [
        {"agent": agent, "seed": seed, **{m: float(np.nanmean(v)) for m, v in run.values.items()}}
        for seed, run in enumerate(runs)
    ]


def test_request_values_round_trip_in_a_versioned_file(tmp_path) -> None:
    values = _runs(np.random.default_rng(0), 1, 30)[0]
    path = values.save(tmp_path / "seed0.npz")
    back = RequestValues.load(path)
    assert back.values.keys() == values.values.keys()
    for name in values.values:
        np.testing.assert_array_equal(back.values[name], values.values[name])
    np.testing.assert_array_equal(back.requests["test"], values.requests["test"])
    with np.load(path) as stored:
        assert int(stored["format"]) == REQUEST_VALUES_FORMAT
    # Another version is refused, naming the file and the versions.
    later = tmp_path / "later.npz"
    np.savez(later, format=np.array(REQUEST_VALUES_FORMAT + 1), **{"requests.test": np.arange(3)})
    with pytest.raises(ValueError, match=rf"later.npz holds .* format {REQUEST_VALUES_FORMAT + 1}"):
        RequestValues.load(later)
    with pytest.raises(ValueError, match=r"'reward_eval' has values of shape \(3,\) for 30"):
        RequestValues({"reward_eval": np.zeros(3)}, {"test": np.arange(30)})
    with pytest.raises(ValueError, match="need the 'gr2' request indices"):
        RequestValues({"gr2_recall@1": np.zeros(3)}, {"test": np.arange(3)})


def test_a_failed_save_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch) -> None:
    path = _runs(np.random.default_rng(1), 1, 20)[0].save(tmp_path / "seed0.npz")
    before = path.read_bytes()

    def crash(handle, **arrays):  # a write cut short: half a file, then the error
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        _runs(np.random.default_rng(2), 1, 20)[0].save(path)
    with pytest.raises(OSError, match="disk full"):
        _runs(np.random.default_rng(2), 1, 20)[0].save(tmp_path / "seed1.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["seed0.npz"]  # no temporary, no seed1
    assert path.read_bytes() == before


def test_two_way_intervals_are_no_narrower_than_seeds_only_ones_with_request_noise() -> None:
    runs = _runs(np.random.default_rng(3), 5, 200)
    rows = _rows("agent", runs)
    (seeds_only,) = summarise(rows, ["reward_eval", "ndcg"])
    (two_way,) = summarise(rows, ["reward_eval", "ndcg"], {"agent": runs})
    assert (seeds_only["requests"], two_way["requests"]) == (0, 200)
    for metric in ("reward_eval", "ndcg"):
        assert two_way[metric] == seeds_only[metric]  # the means are the rows' means
        width = two_way[f"{metric}_high"] - two_way[f"{metric}_low"]
        assert width >= 3 * (seeds_only[f"{metric}_high"] - seeds_only[f"{metric}_low"])
        assert two_way[f"{metric}_low"] < two_way[metric] < two_way[f"{metric}_high"]
    matrix = np.stack([run.values["reward_eval"] for run in runs])
    interval = hierarchical_interval(matrix, seed=0)
    assert (two_way["reward_eval_low"], two_way["reward_eval_high"]) == (
        interval.low,
        interval.high,
    )


def test_an_agent_run_once_counts_as_one_seed() -> None:
    run = _runs(np.random.default_rng(4), 1, 100)
    (entry,) = summarise(
        _rows("initial-order", run, seeds=5), ["reward_eval"], {"initial-order": run}
    )
    assert (entry["seeds"], entry["runs"]) == (5, 1)
    # One row of requests, not five copies of it (which would narrow the interval).
    interval = hierarchical_interval(run[0].values["reward_eval"][None, :], seed=0)
    assert (entry["reward_eval_low"], entry["reward_eval_high"]) == (interval.low, interval.high)


def test_runs_on_other_requests_are_refused_with_the_agent() -> None:
    runs = _runs(np.random.default_rng(5), 2, 50)
    runs[1] = RequestValues(runs[1].values, {"test": runs[1].requests["test"] + 1})
    with pytest.raises(ValueError, match=r"run 1 of 'prm' was evaluated on other 'test' requests"):
        summarise(_rows("prm", runs), ["reward_eval"], {"prm": runs})
    with pytest.raises(ValueError, match=r"values of \['other'\], which have no rows"):
        summarise(_rows("prm", runs), ["reward_eval"], {"other": runs})


def test_paired_table_has_the_difference_its_interval_and_the_mde() -> None:
    generator = np.random.default_rng(6)
    shared = generator.normal(0, 1.0, 300)  # what makes a request easy or hard
    per_request = {
        "initial-order": _runs(generator, 1, 300, shift=-0.5, shared=shared, true=True),
        "pointwise-greedy": _runs(generator, 5, 300, shared=shared, true=True),
        "prm": _runs(generator, 5, 300, shift=0.005, shared=shared, true=True),
    }
    table = paired_table(per_request, reference_agent(list(per_request)))
    assert [(row["metric"], row["agent"]) for row in table] == [
        ("reward_eval", "initial-order"),
        ("reward_eval", "prm"),
        ("reward_true", "initial-order"),
        ("reward_true", "prm"),
    ]
    worse, tiny = table[0], table[1]
    assert worse["reference"] == "pointwise-greedy" and (worse["runs"], worse["requests"]) == (
        1,
        300,
    )
    assert worse["separated"] and worse["high"] < 0 and worse["p_improvement"] == 0.0
    assert worse["mde"] == pytest.approx(2.8016 * worse["se"], rel=1e-3)
    # A difference well under the MDE: the interval holds 0, the run could not see it.
    assert not tiny["separated"] and abs(tiny["difference"]) < tiny["mde"]
    assert tiny["low"] < 0 < tiny["high"] and 0 <= tiny["p_improvement"] <= 1


def test_agreement_ranks_agents_by_both_judges_and_needs_a_true_reward() -> None:
    generator = np.random.default_rng(7)
    shared = generator.normal(0, 1.0, 200)
    per_request = {
        name: _runs(generator, 3, 200, shift=shift, shared=shared, true=True)
        for name, shift in (("a", 0.0), ("b", 0.2), ("c", 0.4), ("d", 0.6))
    }
    # The true reward of d falls below b's: one discordant pair of six.
    for run in per_request["d"]:
        run.values["reward_true"] = run.values["reward_eval"] - 0.5
    agreement = agreement_entry(per_request)
    assert agreement["tau"] == pytest.approx(1 - 2 * 2 / 6)  # d passes b and c: 2 discordant
    assert (agreement["agents"], agreement["requests"]) == (4, 200)
    assert agreement["low"] <= agreement["tau"] <= agreement["high"]
    assert agreement_line(agreement).startswith(
        "Agent-ranking agreement (Kendall's tau between the 4 agents' mean held-out and mean "
        "true rewards): 0.333 ["
    )
    # Without true rewards (ML-100K) there is no figure, and no true column.
    for runs in per_request.values():
        for run in runs:
            del run.values["reward_true"]
    assert agreement_entry(per_request) is None
    rows = [row for agent, runs in per_request.items() for row in _rows(agent, runs)]
    summary = summarise(rows, ("reward_eval",), per_request=per_request)
    assert "true" not in compact_table(summary)


def test_probability_of_improvement_is_rliables() -> None:
    metrics = pytest.importorskip("rliable.metrics")
    generator = np.random.default_rng(7)
    for x, y in [
        (generator.normal(0, 1, 5), generator.normal(0.2, 1, 5)),
        (np.array([1.0, 2.0, 2.0]), np.array([2.0, 1.0])),
        (np.array([3.0]), generator.normal(3, 1, 5)),  # an agent run once
        (np.array([1.0, 2.0]), np.array([1.0, 2.0])),
    ]:
        expected = metrics.probability_of_improvement(x[:, None], y[:, None])
        assert probability_of_improvement(x, y) == pytest.approx(expected)
    with pytest.raises(ValueError, match="no NaN"):
        probability_of_improvement(np.array([np.nan]), np.array([1.0]))


def test_reference_agent_defaults_and_refuses_an_unknown_name() -> None:
    assert reference_agent(["random", "pointwise-greedy"]) == "pointwise-greedy"
    assert reference_agent(["random", "prm"]) == "random"
    assert reference_agent(["random", "prm"], "prm") == "prm"
    with pytest.raises(ValueError, match=r"unknown reference agent 'pmr'; valid: 'random', 'prm'"):
        reference_agent(["random", "prm"], "pmr")


def test_seeds_only_tables_say_so() -> None:
    from agents.evaluation import interval_note

    runs = _runs(np.random.default_rng(8), 3, 20)
    seeds_only = summarise(_rows("a", runs), ["reward_eval"])
    assert "over seeds only" in interval_note(seeds_only) and TWO_WAY_INTERVAL not in (
        interval_note(seeds_only)
    )
    both = summarise(_rows("a", runs) + _rows("b", runs), ["reward_eval"], {"a": runs})
    note = interval_note(both)
    assert TWO_WAY_INTERVAL in note and "over seeds only (b)" in note


def test_compare_stores_per_request_values_and_writes_the_paired_table(tmp_path, capsys) -> None:
    settings = {
        "env_kwargs": TINY,
        "requests": 20,
        "permutations": 20,
        "budget": "tiny",
        "out": tmp_path,
        "name": "stats",
        "progress": False,
    }
    agents = [
        "initial-order",
        "random",
        "beam-4",
    ]  # no pointwise-greedy: the first is the reference
    folder = run_compare(agents=agents, seeds=2, **settings)
    runs = folder / "runs"
    stored = sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*.npz"))
    assert stored == [
        "beam-4/seed-all.npz",
        "initial-order/seed-all.npz",
        "random/seed0.npz",
        "random/seed1.npz",
    ]
    record = json.loads((runs / "random" / "seed1.json").read_text())
    assert record["per_request_file"] == "seed1.npz" and "per_request" not in record
    values = RequestValues.load(runs / "random" / "seed1.npz")
    assert len(values.values["reward_eval"]) == len(values.requests["test"]) == 20
    assert float(values.values["reward_eval"].mean()) == record["row"]["reward_eval"]

    results = json.loads((folder / "results.json").read_text())
    summary = {entry["agent"]: entry for entry in results["summary"]}
    assert (summary["initial-order"]["seeds"], summary["initial-order"]["runs"]) == (2, 1)
    assert (summary["random"]["runs"], summary["random"]["requests"]) == (2, 20)
    assert TWO_WAY_INTERVAL in results["interval"] and results["reference"] == "initial-order"
    paired = {row["agent"]: row for row in results["paired"] if row["metric"] == "reward_eval"}
    assert set(paired) == {"random", "beam-4"}
    for row in paired.values():
        assert row["mde"] > 0 and row["low"] <= row["difference"] <= row["high"]
    assert paired["beam-4"]["separated"] and paired["beam-4"]["p_improvement"] == 1.0
    markdown = (folder / "results.md").read_text()
    assert (
        TWO_WAY_INTERVAL in markdown and "## Paired differences against initial-order" in markdown
    )
    # Which judge the headline column is, and that ML-100K's list effects are assumed.
    judge = (
        "Held-out reward (the headline column) is expected clicks under a simulator fitted on "
        "the other half of each user's sessions, which the training simulator never saw; its "
        "list effects assumed, not fitted (position_bias 1.0, diversity_strength 2.0): "
        "MovieLens logs support almost no list effect."
    )
    assert judge in markdown and results["judge"] == judge and results["agreement"] is None
    assert "| initial-order | 2 | 1 |" in markdown

    # --reference names an agent of the comparison; an unknown one is refused before any work.
    argv = ["compare", "--env-kwarg", "num_candidates=10", "--env-kwarg", "slate_length=4"]
    argv += ["--agents", "random,beam-4", "--out", str(tmp_path), "--name", "ref"]
    assert main([*argv, "--reference", "pointwise-greedy"]) == 2
    error = capsys.readouterr().err
    assert "unknown reference agent 'pointwise-greedy'; valid: 'random', 'beam-4'" in error
    assert not (tmp_path / "ref").exists()

    # Resume: a record without its per-request values (an older run folder) is refused.
    (runs / "random" / "seed1.npz").unlink()
    with pytest.raises(
        ConfigError,
        match=r"random/seed1.json has no per-request values .*seed1.npz is missing.*"
        r"re-run with --overwrite",
    ):
        run_compare(agents=agents, seeds=2, resume=True, reference="random", **settings)
    spec = json.loads((folder / "spec.json").read_text())
    (folder / "spec.json").write_text(json.dumps({**spec, "format": 1}))
    with pytest.raises(ConfigError, match="record format 1, this version reads 2: re-run it with"):
        run_compare(agents=agents, seeds=2, resume=True, **settings)
