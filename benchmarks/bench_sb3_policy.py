"""SB3's MaskablePPO on SlateRerank-v0: SlatePolicy against the default MultiInputPolicy.

Usage::

    python benchmarks/bench_sb3_policy.py [--seeds 5] [--checkpoints 8192 16384]
    python benchmarks/bench_sb3_policy.py --study tune [--seeds 1]   # choose the settings

Trains ``SB3Agent("MaskablePPO")`` with the registered ``maskable-ppo`` settings
(:mod:`agents.registry`: dense reward, 4 environments, the PPO settings ``--study
tune`` chose) under each policy, and evaluates the held-out reward of its greedy lists on the first
``--requests`` test requests at each checkpoint: the run continues from one
checkpoint to the next (the learning rate is constant, so the 16,384-step row is
the 8,192-step run trained on). Pointwise greedy (the ``--quick`` budget's 5
epochs) and the initial order are the references: the issue's target is
MaskablePPO with SlatePolicy reaching pointwise greedy's held-out reward within
the quick budget (8,192 steps) or twice it. Prints the table (mean [95% bootstrap
CI] over seeds, paired differences), writes ``sb3_policy.csv`` after every run and
plots held-out reward against training steps.

``--study tune`` chooses ``maskable-ppo``'s settings: it trains SlatePolicy under each
setting of :data:`TUNING_GRID` (policy size and PPO's update schedule) to each
checkpoint and evaluates the held-out reward of its greedy lists on validation
requests. It runs on the validation split only and refuses ``--split test``: the
test split is read only to report. It writes ``sb3_tune.csv`` after every run.

Options: ``--env SlateRerank-v0``, ``--requests 500``, ``--split test|valid``
(``test`` for the comparison, ``valid`` for ``tune``), ``--policies`` (the
comparison's policies, e.g. only ``SlatePolicy`` for a long learning curve),
``--out runs/bench-sb3-policy``, ``--from-csv`` (summarise earlier runs' rows),
``--first-seed``.
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
from agents.common.commands import command_task, evaluation_split  # noqa: E402
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

#: The settings ``--study tune`` compares, by label: SlatePolicy's size and PPO's
#: update schedule (``n_steps`` per environment, batch, epochs, learning rate, entropy
#: bonus); every run uses 4 environments, dense reward and ``gamma`` 1.
TUNING_GRID: dict[str, dict[str, Any]] = {
    label: {
        "n_steps": n_steps,
        "batch_size": batch,
        "n_epochs": epochs,
        "learning_rate": lr,
        "ent_coef": entropy,
        "policy_kwargs": {"features_extractor_kwargs": {"dim": dim, "encoder_layers": layers}},
    }
    for label, (dim, layers, n_steps, batch, epochs, lr, entropy) in {
        "d32-l1 64/64/5 lr2e-3 ent0.01": (32, 1, 64, 64, 5, 2e-3, 0.01),
        "d32-l1 64/64/5 lr1e-3 ent0.01": (32, 1, 64, 64, 5, 1e-3, 0.01),
        "d32-l1 64/64/5 lr4e-3 ent0.01": (32, 1, 64, 64, 5, 4e-3, 0.01),
        "d32-l1 64/64/5 lr2e-3 ent0": (32, 1, 64, 64, 5, 2e-3, 0.0),
        "d32-l1 64/64/10 lr1e-3 ent0.01": (32, 1, 64, 64, 10, 1e-3, 0.01),
        "d32-l1 32/64/5 lr2e-3 ent0.01": (32, 1, 32, 64, 5, 2e-3, 0.01),
        "d32-l1 256/128/10 lr1e-3 ent0": (32, 1, 256, 128, 10, 1e-3, 0.0),
        "d64-l2 64/64/5 lr2e-3 ent0.01": (64, 2, 64, 64, 5, 2e-3, 0.01),
    }.items()
}


def ppo_runs(
    task: RerankTask,
    requests: np.ndarray,
    seed: int,
    checkpoints: list[int],
    variants: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One seed of every variant (label -> SB3Agent settings), evaluated at every checkpoint."""
    rows = []
    for policy, settings in variants.items():
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
    parser.add_argument(
        "--study",
        choices=("policies", "tune"),
        default="policies",
        help="policies: SlatePolicy against MultiInputPolicy (reports on test); tune: "
        "choose SlatePolicy's settings on validation requests",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=500, help="requests evaluated")
    parser.add_argument(
        "--split",
        choices=("test", "valid"),
        default=None,
        help="requests evaluated (default: test for policies, valid for tune)",
    )
    parser.add_argument(
        "--policies", nargs="+", choices=POLICIES, default=list(POLICIES), metavar="POLICY"
    )
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
    args.split = evaluation_split(
        parser, args.split, chooses=args.study == "tune", what="--study tune"
    )
    if sorted(args.checkpoints) != args.checkpoints or args.checkpoints[0] < 1:
        parser.error(f"--checkpoints must be positive and increasing, got {args.checkpoints}")
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / ("sb3_tune.csv" if args.study == "tune" else "sb3_policy.csv")
    if args.from_csv:
        report(read_csv(args.from_csv, ("agent", "policy")), args)
        return
    task = command_task(args.env, {})
    requests = task.requests(args.split)[: args.requests]
    print(f"task: {task.summary()}", flush=True)
    print(f"evaluated on {len(requests)} {args.split} requests", flush=True)
    registered_settings = registered()["maskable-ppo"].kwargs
    if args.study == "tune":
        variants = {
            label: {**registered_settings, "algorithm_kwargs": settings}
            for label, settings in TUNING_GRID.items()
        }
    else:
        variants = {policy: {**registered_settings, "policy": policy} for policy in args.policies}
    rows: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows += references(task, requests, seed)
        write_csv(csv, rows)
        for label, settings in variants.items():
            rows += ppo_runs(task, requests, seed, args.checkpoints, {label: settings})
            write_csv(csv, rows)  # a stopped run keeps its rows
    report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The table, the paired differences against pointwise greedy, and the figure."""
    summary = summarise(rows, ["reward_eval", "latency_ms", "fit_s"])
    seeds = len({row["seed"] for row in rows})
    what = "settings of SlatePolicy" if args.study == "tune" else "policies"
    print(
        f"\nMaskablePPO {what} on {args.env}, {seeds} seeds, held-out reward on "
        f"{args.split} requests (mean [95% CI])"
    )
    print("| agent | held-out reward | ms / request | fit s |\n|---|---|---:|---:|")
    for entry in summary:
        print(
            f"| {entry['agent']} | {entry['reward_eval']:.4f} [{entry['reward_eval_low']:.4f}, "
            f"{entry['reward_eval_high']:.4f}] | {entry['latency_ms']:.2f} | "
            f"{entry['fit_s']:.0f} |"
        )
    greedy = {row["seed"]: row["reward_eval"] for row in rows if row["agent"] == "pointwise-greedy"}
    print("\npaired difference to pointwise greedy (same seed):")
    policy_of = {row["agent"]: row["policy"] for row in rows}
    for entry in summary:
        if not policy_of[entry["agent"]]:  # a reference
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
    policy_of = {row["agent"]: row["policy"] for row in rows}
    labels = list(dict.fromkeys(row["policy"] for row in rows if row["policy"]))
    for marker, policy in zip("osv^<>dp*hx", labels, strict=False):
        entries = sorted(
            (e for a, e in by_agent.items() if policy_of[a] == policy),
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
    seeds = max(entry["seeds"] for entry in summary)
    axis.set_ylabel(f"held-out reward, {args.split} requests (expected clicks)")
    axis.set_xscale("log", base=2)
    axis.set_title(f"MaskablePPO on {args.env} ({seeds} seeds, 95% CI)")
    axis.legend(loc="best", fontsize="x-small")
    figure.tight_layout()
    path = args.out / ("sb3_tune.png" if args.study == "tune" else "sb3_policy.png")
    figure.savefig(path, dpi=120)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
