"""The evaluation harness and ``rerank-env compare`` end to end (tiny preset)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from agents.base import Agent, InvalidListError, complete_by_scores
from agents.baselines import InitialOrder, RandomAgent
from agents.cli import main
from agents.common.commands import command_task, parse_env_kwargs
from agents.compare import run_compare
from agents.evaluation import (
    confidence_interval,
    evaluate_agent,
    gr2_metrics,
    make_evaluation_set,
    summarise,
)
from simulators.data.errors import ConfigError

TINY = {"num_candidates": 10, "slate_length": 4}


@pytest.fixture(scope="module")
def evaluation(small_task):
    return make_evaluation_set(small_task, requests=40, permutations=50)


def test_confidence_interval_brackets_the_mean_and_collapses_when_constant() -> None:
    mean, low, high = confidence_interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert mean == 3.0 and low < 3.0 < high and low >= 1.0 and high <= 5.0
    assert confidence_interval(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0, 2.0)
    assert confidence_interval(np.array([1.0, np.nan, 3.0]))[0] == 2.0
    assert all(math.isnan(v) for v in confidence_interval(np.array([np.nan])))


def test_evaluation_references_and_metrics(evaluation) -> None:
    # Beam search is within 2% of the oracle (the references are consistent).
    assert evaluation.oracle_reward is not None
    assert evaluation.beam_reward.mean() >= 0.98 * evaluation.oracle_reward.mean()
    result = evaluate_agent(InitialOrder(), evaluation)
    metrics = result.metrics
    assert 0 < metrics["pct_oracle"] <= 100 + 1e-6
    assert 0 <= metrics["hr@1%"] <= metrics["hr@5%"] <= 1
    assert np.isclose(result.position_clicks.sum(), metrics["reward_eval"])
    assert math.isnan(metrics["reward_true"])  # ML-100K has no true model
    expected = evaluation.beam_reward.mean() / evaluation.pointwise_reward.mean() - 1
    assert evaluation.headroom == pytest.approx(expected)
    assert f"{100 * expected:+.1f}%" in evaluation.headroom_line()


def test_evaluate_agent_keeps_the_per_request_values_behind_its_means(evaluation) -> None:
    result = evaluate_agent(RandomAgent(1), evaluation)
    values, requests = result.per_request.values, result.per_request.requests
    np.testing.assert_array_equal(requests["test"], evaluation.requests)
    np.testing.assert_array_equal(requests["gr2"], evaluation.gr2_requests)
    for metric in ("reward_eval", "reward_train", "hr@1%", "ndcg", "hit", "gr2_recall@5"):
        assert float(np.nanmean(values[metric])) == pytest.approx(result.metrics[metric])
    assert len(values["gr2_ndcg@5"]) == len(evaluation.gr2_requests)
    assert np.isnan(values["ndcg"]).any()  # requests without a logged positive: undefined
    assert float(values["reward_eval"].mean()) == result.metrics["reward_eval"]  # the same sum
    # No true model on ML-100K; coverage and latency are one value per run.
    assert not {"reward_true", "coverage", "latency_ms"} & set(values)


def test_gr2_metrics_of_the_initial_order_are_the_pre_rankers(evaluation) -> None:
    """The GR2 view's initial order is the pre-ranker: recall@1 = share of targets first."""
    gr2 = evaluation.gr2_task
    targets = gr2.pool.gr2_target_pos[evaluation.gr2_requests]
    metrics = gr2_metrics(InitialOrder(), evaluation)
    assert metrics["gr2_recall@1"] == pytest.approx((targets == 0).mean())
    assert metrics["gr2_recall@5"] == pytest.approx((targets < 5).mean())


class _Repeats(Agent):
    name = "repeats"

    def rank(self, task, requests, prefixes=None):
        return np.zeros((len(requests), task.slate_length), dtype=np.int64)


def test_an_invalid_agent_fails_the_evaluation_naming_it(evaluation) -> None:
    with pytest.raises(InvalidListError, match="agent 'repeats'.*request .*twice"):
        evaluate_agent(_Repeats(), evaluation)


def test_summarise_reports_mean_and_interval_per_agent(evaluation) -> None:
    rows = [
        {"agent": "random", "seed": seed, **evaluate_agent(RandomAgent(seed), evaluation).metrics}
        for seed in range(3)
    ]
    (entry,) = summarise(rows)
    assert entry["seeds"] == 3
    values = [row["reward_eval"] for row in rows]
    assert entry["reward_eval"] == pytest.approx(np.mean(values))
    assert entry["reward_eval_low"] <= entry["reward_eval"] <= entry["reward_eval_high"]


class LastCandidatesFirst(Agent):
    """A user's own agent, passed to compare as an instance."""

    name = "last-first"

    def rank(self, task, requests, prefixes=None):
        scores = np.tile(np.arange(task.num_candidates, dtype=float), (len(requests), 1))
        return complete_by_scores(scores, task.slate_length, prefixes)


@pytest.mark.slow
def test_compare_end_to_end_on_a_tiny_preset(tmp_path) -> None:
    folder = run_compare(
        env_kwargs=TINY,
        agents=[
            "initial-order",
            "random",
            "seq2slate",
            "gen-eval",
            "beam-4",
            "oracle",
            LastCandidatesFirst(),
        ],
        seeds=2,
        requests=30,
        permutations=40,
        budget="tiny",
        out=tmp_path,
        name="tiny",
        progress=False,
    )
    for name in (
        "results.md",
        "results.csv",
        "per_seed.csv",
        "curves.csv",
        "position_clicks.csv",
        "learning_curves.png",
        "pareto.png",
        "credit_profile.png",
        "config.json",
    ):
        assert (folder / name).stat().st_size > 0, name
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert [row["agent"] for row in rows] == [
        "initial-order",
        "random",
        "seq2slate",
        "gen-eval(pointwise-greedy)",
        "beam-4",
        "oracle",
        "last-first",
    ]
    by_agent = {row["agent"]: row for row in rows}
    assert float(by_agent["oracle"]["pct_oracle"]) == pytest.approx(100.0, abs=1e-3)
    assert float(by_agent["seq2slate"]["reward_eval"]) > float(by_agent["random"]["reward_eval"])
    per_seed = list(csv.DictReader((folder / "per_seed.csv").open()))
    assert len(per_seed) == 14  # 7 agents x 2 seeds (deterministic ones reused)
    curves = list(csv.DictReader((folder / "curves.csv").open()))
    assert {row["agent"] for row in curves} >= {"seq2slate"}
    # The training log: one row per update with its diagnostics, and the curve points.
    updates = [row for row in curves if row["agent"] == "seq2slate" and row["stage"] == "policy"]
    assert len(updates) == 2 * 40  # 2 seeds x the tiny preset's 40 iterations
    assert all(float(row["grad_norm"]) > 0 and float(row["entropy"]) > 0 for row in updates)
    assert (folder / "logs" / "seq2slate" / "seed1" / "curves.csv").stat().st_size > 0
    markdown = (folder / "results.md").read_text()
    assert "Headroom: beam-8" in markdown and "| oracle | 2 |" in markdown
    config = json.loads((folder / "config.json").read_text())
    assert config["seeds"] == 2 and config["requests"] == 30
    with pytest.raises(ConfigError, match="exists and is not empty.*--overwrite"):
        run_compare(env_kwargs=TINY, agents=["random"], out=tmp_path, name="tiny")
    with pytest.raises(ConfigError, match=r"registered names .* or Agent instances; got 42"):
        run_compare(env_kwargs=TINY, agents=["random", 42], out=tmp_path, name="bad")
    # Runs are stored by agent name: two agents of one name are refused before any work.
    with pytest.raises(ConfigError, match="both named 'random'.*stored as one"):
        run_compare(env_kwargs=TINY, agents=["random", RandomAgent()], out=tmp_path, name="dup")
    assert not (tmp_path / "dup").exists()


def test_compare_names_the_valid_agents_and_environments(capsys, tmp_path) -> None:
    assert main(["compare", "--agents", "prm,sequence2slate", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "unknown agent 'sequence2slate'; valid:" in error and "'seq2slate'" in error
    assert main(["compare", "--env", "CartPole-v1", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "unknown environment 'CartPole-v1'; valid:" in error and "SlateRerank-v0" in error
    assert main(["compare", "--agents", "oracle", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "agent 'oracle' cannot run on SlateRerank-v0: the oracle would score P(50, 6)" in error
    assert not any(tmp_path.iterdir())  # refused before any folder or training
    with pytest.raises(
        ConfigError, match=r"unknown environment keyword argument\(s\) \['num_candidate'\]"
    ):
        command_task("SlateRerank-v0", {"num_candidate": 10})
    with pytest.raises(ConfigError, match="use --device"):
        command_task("SlateRerank-v0", {"device": "cpu"})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_env_kwargs(["num_candidates"])
    assert parse_env_kwargs(["num_candidates=20", "simulator=pbm"]) == {
        "num_candidates": 20,
        "simulator": "pbm",
    }


def test_command_task_applies_the_variant_and_the_overrides() -> None:
    task = command_task("SlateRerank-PBM-v0", {"num_candidates": 12, "reward_mode": "dense"})
    assert task.description["simulator"] == "pbm" and task.num_candidates == 12


def test_python_dash_m_agents_compare_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agents.compare", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--quick" in result.stdout and "seq2slate" in result.stdout


def test_compare_resumes_a_run_folder_reusing_its_stored_runs(tmp_path) -> None:
    """An interrupted or partial comparison continues: stored (agent, seed) runs are read back."""
    settings = {
        "env_kwargs": TINY,
        "requests": 20,
        "permutations": 20,
        "budget": "tiny",
        "out": tmp_path,
        "name": "parts",
        "progress": False,
    }
    folder = run_compare(agents=["initial-order", "random"], seeds=2, **settings)
    first = {(r["agent"], r["seed"]): r for r in csv.DictReader((folder / "per_seed.csv").open())}
    stored = sorted(
        p.relative_to(folder / "runs").as_posix() for p in (folder / "runs").rglob("*.json")
    )
    assert stored == ["initial-order/seed-all.json", "random/seed0.json", "random/seed1.json"]

    folder = run_compare(
        agents=["initial-order", "random", LastCandidatesFirst()], seeds=3, resume=True, **settings
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["resumed_runs"] == 1 + 2  # initial-order's seed-free record, random's two
    rows = {(r["agent"], r["seed"]): r for r in csv.DictReader((folder / "per_seed.csv").open())}
    assert len(rows) == 3 * 3
    for key, row in first.items():  # read back exactly, not run again
        assert rows[key] == row
    assert rows[("random", "2")]["reward_eval"] != rows[("random", "0")]["reward_eval"]
    summary = {r["agent"]: r for r in csv.DictReader((folder / "results.csv").open())}
    assert summary["random"]["seeds"] == "3" and summary["last-first"]["seeds"] == "3"

    # Records measured under other settings are never mixed in.
    with pytest.raises(ConfigError, match=r"was run with requests = 20, this command has 30"):
        run_compare(agents=["random"], seeds=1, resume=True, **{**settings, "requests": 30})
    with pytest.raises(ConfigError, match="--resume or --overwrite, not both"):
        run_compare(agents=["random"], resume=True, overwrite=True, **settings)
    with pytest.raises(ConfigError, match="holds no spec.json"):
        run_compare(agents=["random"], resume=True, **{**settings, "name": "elsewhere"})
    # Where the bundle lies is not part of the settings (another checkout resumes it).
    spec = json.loads((folder / "spec.json").read_text())
    spec["task"]["bundle"] = "/elsewhere/simulators/bundles/ml-100k"
    (folder / "spec.json").write_text(json.dumps(spec))
    run_compare(agents=["initial-order"], seeds=1, resume=True, **settings)
    # --overwrite starts again: the stored runs are dropped.
    folder = run_compare(agents=["random"], seeds=1, overwrite=True, **settings)
    assert sorted(p.name for p in (folder / "runs").rglob("*.json")) == ["seed0.json"]
    assert json.loads((folder / "config.json").read_text())["resumed_runs"] == 0


def test_read_csv_reads_back_what_write_csv_wrote(tmp_path) -> None:
    from agents.evaluation import read_csv, write_csv

    rows = [{"agent": "a", "seed": 0, "reward": 1.5}, {"agent": "b", "seed": 1, "extra": 2.0}]
    path = write_csv(tmp_path / "rows.csv", rows)
    back = read_csv([path])
    assert back[0] == {"agent": "a", "seed": 0.0, "reward": 1.5, "extra": back[0]["extra"]}
    assert math.isnan(back[0]["extra"]) and back[1]["extra"] == 2.0
    with pytest.raises(ValueError, match="could not convert"):
        read_csv([write_csv(tmp_path / "text.csv", [{"agent": "a", "stage": "sft"}])])
    assert read_csv([tmp_path / "text.csv"], ("agent", "stage"))[0]["stage"] == "sft"
    with pytest.raises(ValueError, match="no rows"):
        read_csv([write_csv(tmp_path / "empty.csv", [])])
