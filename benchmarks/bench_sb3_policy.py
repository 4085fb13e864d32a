"""SB3's MaskablePPO on SlateRerank-v0: SlatePolicy against the default MultiInputPolicy.

Usage::

    python benchmarks/bench_sb3_policy.py [--seeds 5] [--checkpoints 8192 16384]

Trains ``SB3Agent("MaskablePPO")`` with the registered ``maskable-ppo`` settings
(dense reward, 4 environments, ``n_steps`` 256, batch 128, learning rate 1e-3) under
each policy, and evaluates the held-out reward of its greedy lists on the first
``--requests`` test requests at each checkpoint: the run continues from one
checkpoint to the next (the learning rate is constant, so the 16,384-step row is
the 8,192-step run trained on). Pointwise greedy (the ``--quick`` budget's 5
epochs) and the initial order are the references: the issue's target is
MaskablePPO with SlatePolicy reaching pointwise greedy's held-out reward within
the quick budget (8,192 steps) or twice it. Prints the table (mean [95% bootstrap
CI] over seeds, paired differences), writes ``sb3_policy.csv`` after every run and
plots held-out reward against training steps.

Options: ``--env SlateRerank-v0``, ``--requests 500``, ``--out runs/bench-sb3-policy``,
``--from-csv`` (summarise earlier runs' rows), ``--first-seed``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agents.base import TrainableAgent  # noqa: E402
from agents.baselines import InitialOrder  # noqa: E402
from agents.common.commands import command_task  # noqa: E402
from agents.evaluation import (  # noqa: E402
    confidence_interval,
    read_csv,
    reward_and_latency,
    summarise,
    write_csv,
)
from agents.registry import make_agent, registered  # noqa: E402
from agents.sb3 import SB3Agent  # noqa: E402
from rerank_env.task import RerankTask  # noqa: E402

POLICIES = ("SlatePolicy", "MultiInputPolicy")


def ppo_runs(
    task: RerankTask, requests: np.ndarray, seed: int, checkpoints: list[int]
) -> list[dict[str, Any]]:
    """One seed of every policy, evaluated at every checkpoint."""
    rows = []
    for policy in POLICIES:
        settings = {**registered()["maskable-ppo"].kwargs, "policy": policy}
        agent = SB3Agent(total_timesteps=checkpoints[0], seed=seed, **settings)
        start = time.perf_counter()
        agent.fit(task)
        done = checkpoints[0]
        for checkpoint in checkpoints:
            if checkpoint > done:  # train on from the previous checkpoint
                agent.model.learn(checkpoint - done, reset_num_timesteps=False)
                done = checkpoint
            fit = time.perf_counter() - start
            metrics = reward_and_latency(agent, task, requests)
            label = f"{policy} {checkpoint}"
            rows.append(
                {
                    "agent": label,
                    "policy": policy,
                    "timesteps": checkpoint,
                    "seed": seed,
                    **metrics,
                    "fit_s": fit,
                }
            )
            print(
                f"seed {seed} {policy} at {checkpoint} steps: held-out "
                f"{metrics['reward_eval']:.4f}, fit {fit:.0f} s",
                flush=True,
            )
    return rows


def references(task: RerankTask, requests: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """Pointwise greedy at the quick budget (per seed) and the initial order."""
    rows = []
    for name, agent in (
        ("pointwise-greedy", make_agent("pointwise-greedy", seed=seed, budget="quick")),
        ("initial-order", InitialOrder()),
    ):
        start = time.perf_counter()
        if isinstance(agent, TrainableAgent):
            agent.fit(task)
        metrics = reward_and_latency(agent, task, requests)
        rows.append(
            {
                "agent": name,
                "policy": "",
                "timesteps": 0,
                "seed": seed,
                **metrics,
                "fit_s": time.perf_counter() - start,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="SlateRerank-v0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=500, help="test requests evaluated")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-sb3-policy"))
    parser.add_argument(
        "--from-csv",
        nargs="+",
        type=Path,
        default=None,
        metavar="CSV",
        help="train nothing: summarise these CSVs of earlier runs",
    )
    args = parser.parse_args()
    if sorted(args.checkpoints) != args.checkpoints or args.checkpoints[0] < 1:
        parser.error(f"--checkpoints must be positive and increasing, got {args.checkpoints}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_csv:
        report(read_csv(args.from_csv, ("agent", "policy")), args)
        return
    task = command_task(args.env, {})
    requests = task.requests("test")[: args.requests]
    print(f"task: {task.summary()}", flush=True)
    rows: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows += references(task, requests, seed)
        rows += ppo_runs(task, requests, seed, args.checkpoints)
        write_csv(args.out / "sb3_policy.csv", rows)  # a stopped run keeps its rows
    report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The table, the paired differences against pointwise greedy, and the figure."""
    summary = summarise(rows, ["reward_eval", "latency_ms", "fit_s"])
    seeds = len({row["seed"] for row in rows})
    print(f"\nMaskablePPO policies on {args.env}, {seeds} seeds (mean [95% CI])")
    print("| agent | held-out reward | ms / request | fit s |\n|---|---|---:|---:|")
    for entry in summary:
        print(
            f"| {entry['agent']} | {entry['reward_eval']:.4f} [{entry['reward_eval_low']:.4f}, "
            f"{entry['reward_eval_high']:.4f}] | {entry['latency_ms']:.2f} | "
            f"{entry['fit_s']:.0f} |"
        )
    greedy = {row["seed"]: row["reward_eval"] for row in rows if row["agent"] == "pointwise-greedy"}
    print("\npaired difference to pointwise greedy (same seed):")
    for entry in summary:
        if entry["agent"].split(" ")[0] not in POLICIES:
            continue
        gaps = np.array(
            [
                row["reward_eval"] - greedy[row["seed"]]
                for row in rows
                if row["agent"] == entry["agent"] and row["seed"] in greedy
            ]
        )
        mean, low, high = confidence_interval(gaps)
        print(
            f"  {entry['agent']}: {mean:+.4f} [{low:+.4f}, {high:+.4f}] "
            f"(ahead on {int((gaps > 0).sum())} of {len(gaps)} seeds)"
        )
    plot(summary, rows, args)


def plot(
    summary: list[dict[str, Any]], rows: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    """Held-out reward against training steps, one line per policy, references dashed."""
    figure, axis = plt.subplots(figsize=(6, 4))
    by_agent = {entry["agent"]: entry for entry in summary}
    steps = {row["agent"]: row["timesteps"] for row in rows}
    for marker, policy in zip("os", POLICIES, strict=True):
        entries = sorted(
            (e for a, e in by_agent.items() if a.split(" ")[0] == policy),
            key=lambda e: steps[e["agent"]],
        )
        xs = [steps[e["agent"]] for e in entries]
        ys = np.array([e["reward_eval"] for e in entries])
        errors = [
            ys - [e["reward_eval_low"] for e in entries],
            [e["reward_eval_high"] for e in entries] - ys,
        ]
        axis.errorbar(xs, ys, yerr=errors, marker=marker, capsize=3, label=f"MaskablePPO, {policy}")
    for style, name in (("--", "pointwise-greedy"), (":", "initial-order")):
        if name in by_agent:
            axis.axhline(by_agent[name]["reward_eval"], linestyle=style, color="grey", label=name)
    axis.set_xlabel("training steps (slot decisions)")
    axis.set_ylabel("held-out reward (expected clicks)")
    seeds = max(entry["seeds"] for entry in summary)
    axis.set_title(f"MaskablePPO on {args.env} ({seeds} seeds, 95% CI)")
    axis.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(args.out / "sb3_policy.png", dpi=120)
    print(f"\nwrote {args.out / 'sb3_policy.png'}")


if __name__ == "__main__":
    main()
