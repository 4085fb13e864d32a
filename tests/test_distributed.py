"""Data-parallel GoalRank under torchrun (2 CPU processes, gloo) = one process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from agents.common.distributed import DataParallel, data_parallel
from agents.degre import DeGRe
from agents.glorank import GloRank
from agents.goalrank import GoalRank
from simulators.data.errors import ConfigError

ENV = ["--env-kwarg", "num_candidates=10", "--env-kwarg", "slate_length=4"]
# The tiny presets with batches that split over 2 processes and a few steps.
CONFIGS = {
    "goalrank-sim": ["batch_size=8", "iterations=6", "eval_every=3"],
    # Mining with the training simulator (no evaluator to fit); 2 rounds x 2 epochs of
    # minibatches of 16 mined lists (32, then 64 lists).
    "degre-sim": [
        "mining_requests=32",
        "rounds=2",
        "epochs=2",
        "batch_size=16",
        "eval_requests=32",
    ],
    # SFT minibatches of 45, 45 and 6 demonstrations (unequal shares 22 / 23), then
    # PPO: 4 iterations of 8 requests x 4 lists in minibatches of 12 (12, 12, 8).
    "glorank": [
        "sft_requests=96",
        "sft_batch_size=45",
        "sft_epochs=2",
        "ppo_iterations=4",
        "batch_size=8",
        "minibatch_size=12",
        "eval_requests=32",
    ],
}
LOADERS = {"goalrank-sim": GoalRank, "degre-sim": DeGRe, "glorank": GloRank}
#: The training stages each agent logs per gradient step, and their columns compared.
STAGES = {
    "goalrank-sim": {"generator": ("loss", "grad_norm", "entropy", "reward")},
    "degre-sim": {"generator": ("loss", "grad_norm", "entropy", "reward")},
    "glorank": {
        "sft": ("loss", "grad_norm", "entropy", "token_accuracy"),
        "ppo": ("loss", "grad_norm", "entropy", "reward", "approx_kl", "clip_fraction"),
    },
}


def _train(tmp_path, agent: str, name: str, processes: int) -> tuple[list[dict], object]:
    out, logs = tmp_path / f"{name}.pt", tmp_path / name
    launcher = [sys.executable, "-m", "agents.train"]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "agents.train",
        ]
    config = [arg for field in CONFIGS[agent] for arg in ("--config", field)]
    command = [
        *launcher,
        agent,
        "--budget",
        "tiny",
        *ENV,
        *config,
        "--out",
        str(out),
        "--log-dir",
        str(logs),
        "--quiet",
    ]
    # One torch thread per process either way (torchrun's default), so the sums agree.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [r for r in csv.DictReader((logs / "curves.csv").open()) if r["stage"] in STAGES[agent]]
    return rows, LOADERS[agent].load(out)


@pytest.mark.parametrize("agent", sorted(CONFIGS))
def test_two_processes_match_one_at_the_same_global_batch(tmp_path, agent) -> None:
    one, single = _train(tmp_path, agent, "one", 1)
    two, parallel = _train(tmp_path, agent, "two", 2)
    assert len(one) == len(two) >= 6
    for a, b in zip(one, two, strict=True):
        assert a["stage"] == b["stage"]
        for column in STAGES[agent][a["stage"]]:
            # Float32 sums in another order drift apart over the updates: 1.5e-5
            # relative after three PPO steps measured (the approximate KL, a mean of
            # differences of nearly equal log-probabilities, most).
            assert float(b[column]) == pytest.approx(float(a[column]), rel=1e-4, abs=1e-7), (
                a["stage"],
                a.get("step"),
                column,
            )
    assert sum(row["stage"] in STAGES[agent] for row in parallel.history) == len(one)
    # Rank 0 alone wrote the checkpoint and the log, with the world size.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "one.pt", "two", "two.pt"]
    saved = torch.load(tmp_path / "two.pt", weights_only=False)
    assert saved["metadata"]["world_size"] == 2
    # (Parameters are not compared: Adam turns the float noise of gradients that are
    # zero in exact arithmetic, e.g. a softmax's shift, into steps of its full size.)
    assert single.fitted and parallel.fitted


def test_shares_are_equal_contiguous_and_checked() -> None:
    assert [DataParallel(rank, 4).shard(8) for rank in range(4)] == [
        slice(0, 2),
        slice(2, 4),
        slice(4, 6),
        slice(6, 8),
    ]
    assert DataParallel().shard(7) == slice(0, 7)
    with pytest.raises(ConfigError, match="12 rows does not split over 5 processes"):
        DataParallel(0, 5).shard(12)
    assert [DataParallel(rank, 3).shard(7, even=False) for rank in range(3)] == [
        slice(0, 2),
        slice(2, 5),
        slice(5, 7),
    ]
    with pytest.raises(ConfigError, match="make the batch size at least 3"):
        DataParallel(0, 3).shard(2, even=False)
    assert DataParallel(1, 2).is_main is False and DataParallel().mean(2.5) == 2.5


def test_one_process_without_torchrun(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    parallel = data_parallel("cpu")
    assert parallel == DataParallel() and parallel.is_main
    module = torch.nn.Linear(2, 1)
    assert parallel.wrap(module) is module  # nothing wrapped in one process


def test_the_training_command_names_bad_settings(tmp_path, capsys) -> None:
    from agents.train import main

    out = str(tmp_path / "x.pt")
    assert main(["goalrank", "--budget", "tiny", *ENV, "--config", "sizes=2", "--out", out]) == 2
    assert "no config field(s) ['sizes']" in capsys.readouterr().err
    assert main(["random", *ENV, "--out", out]) == 2
    assert "agent 'random' has nothing to train" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
