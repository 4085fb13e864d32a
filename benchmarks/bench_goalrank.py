"""GoalRank studies: group size, model size, and GoalRank vs generator-evaluators.

Usage::

    python benchmarks/bench_goalrank.py groups [--seeds 5]
    python benchmarks/bench_goalrank.py scaling [--seeds 5]
    python benchmarks/bench_goalrank.py matched [--seeds 5]
    python benchmarks/bench_goalrank.py temperature [--seeds 1]   # validation requests
    python benchmarks/bench_goalrank.py agreement [--seeds 5]

Common options: ``--env SlateRerank-v0``, ``--requests 500`` (evaluation requests),
``--iterations 300``, ``--reward-model learned|simulator``, ``--out runs/bench-goalrank``,
``--split test|valid`` (``valid`` evaluates on the last validation requests, apart from
the learning curve's first ones; the studies that choose a setting, ``temperature``,
run on it and refuse ``test``).
A study writes its CSV after every run and stores each run's record in
``<out>/runs/<study>/`` (``--resume`` reuses them); ``--backend ray`` runs every
(configuration, seed) as a Ray task (``--address`` for a cluster; see
:mod:`agents.common.trials`). ``--first-seed`` and ``--from-csv`` split a long one
over machines or sessions and summarise the parts together.

``groups`` trains GoalRank with group sizes 4, 8, 16, 32 and 64 (the paper found
8-20 best; ``--matched-calls`` gives each G the reward-model calls of G = 16 by
scaling its steps); ``scaling`` trains the generator presets 0.1M ... 10M parameters
(``--sizes`` picks some);
``matched`` compares GoalRank trained on groups of G lists with a
generator-evaluator and a multi-generator G-E choosing among G lists per request,
both scored by the same reward model, for G = 8, 16, 32: GoalRank spends its G
reward-model calls per request in training, G-E at every served request. Each
prints held-out reward with 95% bootstrap CIs over seeds (and true reward in the
synthetic world), writes a CSV, and plots held-out reward against the swept
quantity. ``temperature`` sweeps the reference policy's tau (1, 0.3, 0.1, 0.03).
``agreement`` trains GoalRank with the learned reward model, builds its groups on the
evaluation requests and measures how well the learned model orders each group
(:func:`~agents.goalrank.group_agreement`) against the training simulator (what
``reward_model="simulator"`` learns from) and the held-out simulator, with the
training simulator against the held-out one as the ceiling (in the synthetic world
also against the true user model).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from agents.base import Agent, TrainableAgent  # noqa: E402
from agents.baselines import InitialOrder, PointwiseGreedy  # noqa: E402
from agents.common.commands import command_task, evaluation_split  # noqa: E402
from agents.common.trials import (  # noqa: E402
    Trial,
    TrialStore,
    add_backend_arguments,
    ray_options_from,
    run_trials,
)
from agents.evaluation import read_csv, reward_and_latency, summarise, write_csv  # noqa: E402
from agents.generator_evaluator import GeneratorEvaluator  # noqa: E402
from agents.goalrank import SIZE_PRESETS, GoalRank, group_agreement  # noqa: E402
from agents.prm import PRM  # noqa: E402
from rerank_env.task import RerankTask  # noqa: E402

GROUP_SIZES = (4, 8, 16, 32, 64)
TEMPERATURES = (1.0, 0.3, 0.1, 0.03)
MATCHED_SIZES = (8, 16, 32)
#: Studies that choose a setting: they run on validation requests and refuse the test split.
TUNING_STUDIES = ("temperature",)


def configurations(args: argparse.Namespace, seed: int) -> dict[str, tuple[Any, Agent]]:
    """``{label: (swept value, agent)}`` of the study."""

    def goalrank(**options: Any) -> GoalRank:
        options.setdefault("iterations", args.iterations)
        return GoalRank(reward_model=args.reward_model, **options, seed=seed)

    if args.study == "groups" and args.matched_calls:
        # G x iterations fixed at that of G = 16: every G gets the same reward calls.
        return {
            f"G={g}": (g, goalrank(group_size=g, iterations=args.iterations * 16 // g))
            for g in GROUP_SIZES
        }
    if args.study == "groups":
        return {f"G={g}": (g, goalrank(group_size=g)) for g in GROUP_SIZES}
    if args.study == "scaling":
        return {f"size {s}": (s, goalrank(size=s)) for s in args.sizes}
    if args.study == "temperature":
        return {f"tau={t}": (t, goalrank(temperature=t)) for t in TEMPERATURES}
    evaluator = "simulator" if args.reward_model == "simulator" else "learned"
    agents: dict[str, tuple[Any, Agent]] = {}
    for g in MATCHED_SIZES:
        agents[f"GoalRank G={g}"] = (g, goalrank(group_size=g))
        agents[f"G-E {g} lists"] = (
            g,
            GeneratorEvaluator(
                [PointwiseGreedy(seed=seed)],
                lists_per_generator=g,
                evaluator=evaluator,
                seed=seed,
            ),
        )
        agents[f"multi-G-E {g} lists"] = (
            g,
            GeneratorEvaluator(
                [InitialOrder(), PointwiseGreedy(seed=seed), PRM(seed=seed)],
                lists_per_generator=max(1, g // 3),
                evaluator=evaluator,
                seed=seed,
            ),
        )
    return agents


def study_trial(
    task: RerankTask, requests: np.ndarray, args: argparse.Namespace, seed: int, label: str
) -> dict[str, Any]:
    """One (configuration, seed) run of a study, here or in a Ray worker: its CSV row."""
    _, agent = configurations(args, seed)[label]
    start = time.perf_counter()
    if isinstance(agent, TrainableAgent):
        agent.fit(task)
    fit = time.perf_counter() - start
    metrics = reward_and_latency(agent, task, requests)
    parameters = agent.parameter_count() if isinstance(agent, GoalRank) else math.nan
    return {"agent": label, "seed": seed, **metrics, "fit_s": fit, "parameters": parameters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "study", choices=["groups", "scaling", "matched", "temperature", "agreement"]
    )
    parser.add_argument("--env", default="SlateRerank-v0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds first-seed ... first-seed + seeds - 1 (to split a long study "
        "over machines; then summarise their CSVs together with --from-csv)",
    )
    parser.add_argument(
        "--from-csv",
        nargs="+",
        type=Path,
        default=None,
        metavar="CSV",
        help="train nothing: summarise and plot the rows of these CSVs of earlier runs "
        "of the same study",
    )
    parser.add_argument("--requests", type=int, default=500, help="evaluation requests")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--reward-model", default="learned", choices=["learned", "simulator"])
    parser.add_argument("--device", default="cpu", help="torch device of the task and agents")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs stored in --out by an earlier run of this study (same settings)",
    )
    add_backend_arguments(parser)
    parser.add_argument("--out", default="runs/bench-goalrank")
    parser.add_argument(
        "--split",
        default=None,
        choices=["test", "valid"],
        help="requests evaluated (default: valid for the temperature study, which chooses "
        "a setting, test for the others, which report)",
    )
    parser.add_argument(
        "--matched-calls",
        action="store_true",
        help="groups study: train G for iterations x 16 / G steps, so every group size "
        "spends the reward-model calls of G = 16",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=list(SIZE_PRESETS),
        choices=list(SIZE_PRESETS),
        help="generator presets of the scaling study (on 2 CPU cores a 0.6M fit takes "
        "about 2.5 min, 2M about 6 min and 10M one to two hours: see docs/benchmarks.md)",
    )
    args = parser.parse_args()
    args.split = evaluation_split(
        parser, args.split, chooses=args.study in TUNING_STUDIES, what=f"the {args.study} study"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_csv:
        if args.study == "agreement":
            parser.error(
                "--from-csv summarises the groups, scaling, matched and temperature studies"
            )
        rows = read_csv(args.from_csv)
        swept = {label: value for label, (value, _) in configurations(args, 0).items()}
        report(rows, swept, args, f"the requests of {', '.join(map(str, args.from_csv))}", out)
        return
    task: RerankTask = command_task(args.env, {}, args.device)
    if args.split == "test":
        requests = task.requests("test")[: args.requests]
    else:  # the learning curve uses the first validation requests
        requests = task.requests("valid")[-args.requests :]
    print(f"task: {task.summary()}", flush=True)
    if args.study == "agreement":
        agreement(args, task, requests, out)
        return
    # Every (configuration, seed) run is a trial, stored in out/runs/<study> as it ends
    # (--resume reads them back), here or on Ray (--backend ray).
    store = TrialStore(out / "runs" / args.study, fresh=not args.resume)
    trials = [
        Trial(f"{label}/seed{seed}", study_trial, (args, seed, label))
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for label in configurations(args, seed)
    ]
    rows: list[dict[str, Any]] = []

    def collect(trial: Trial, row: dict[str, Any]) -> None:
        rows.append(row)
        print(
            f"seed {row['seed']} {row['agent']}: held-out {row['reward_eval']:.4f}, "
            f"fit {row['fit_s']:.0f} s",
            flush=True,
        )
        write_csv(out / f"{args.study}.csv", rows)  # so far: a stopped run keeps its rows

    records = run_trials(
        trials,
        store,
        shared=(task, requests),
        backend=args.backend,
        ray_options=ray_options_from(args),
        workers=args.workers,
        on_finish=collect,
    )
    rows = list(records.values())  # every trial, in order (stored ones too)
    write_csv(out / f"{args.study}.csv", rows)
    swept = {label: value for label, (value, _) in configurations(args, 0).items()}
    report(rows, swept, args, f"{len(requests)} {args.split} requests", out)


def report(
    rows: list[dict[str, Any]],
    swept: dict[str, Any],
    args: argparse.Namespace,
    evaluated: str,
    out: Path,
) -> None:
    """Print the study's table (mean [95% CI] over seeds) and plot it."""
    metrics = [k for k in rows[0] if k not in ("agent", "seed")]
    summary = summarise(rows, metrics)
    seeds = len({row["seed"] for row in rows})
    print(
        f"\nGoalRank {args.study}, reward model = {args.reward_model}, {seeds} seeds, "
        f"{evaluated} (mean [95% CI])"
    )
    columns = [m for m in ("reward_eval", "reward_true", "reward_train") if m in metrics]
    print("| configuration | " + " | ".join(columns) + " | ms/request | fit s | parameters |")
    print("|---|" + "---|" * (len(columns) + 3))
    for entry in summary:
        cells = [
            f"{entry[m]:.4f} [{entry[m + '_low']:.4f}, {entry[m + '_high']:.4f}]" for m in columns
        ]
        parameters = entry.get("parameters", math.nan)
        print(
            f"| {entry['agent']} | "
            + " | ".join(cells)
            + f" | {entry['latency_ms']:.2f} | {entry['fit_s']:.0f} | "
            + (f"{parameters:,.0f}" if parameters == parameters else "")
            + " |"
        )
    plot(summary, swept, args, out)


def agreement(args: argparse.Namespace, task: RerankTask, requests: Any, out: Path) -> None:
    """How well the learned reward model orders GoalRank's groups (see the docstring)."""
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        agent = GoalRank(reward_model="learned", iterations=args.iterations, seed=seed).fit(task)
        group = agent.group(task, requests, torch.Generator().manual_seed(seed), iteration=0)
        flat_requests = np.repeat(np.asarray(requests), group.shape[1])
        flat_lists = group.reshape(-1, group.shape[2])
        # The synthetic world also has the true user model to judge by.
        roles = ["train", "eval"] + (["true"] if task.has_simulator("true") else [])
        values = {"learned": agent.rewards(task, requests, group)}
        for role in roles:
            values[role] = task.expected_reward(flat_requests, flat_lists, role).reshape(
                group.shape[:2]
            )
        pairs = [("learned", role) for role in roles] + [("train", r) for r in roles[1:]]
        # Late in training the policy's own samples are where the signal must come from.
        subsets = {"whole group": slice(None), "policy samples": slice(0, agent.policy_lists)}
        for subset, columns in subsets.items():
            for model, reference in pairs:
                label = f"{model} vs {reference}, {subset}"
                metrics = group_agreement(values[model][:, columns], values[reference][:, columns])
                rows.append({"agent": label, "seed": seed, **metrics})
                print(
                    f"seed {seed} {label}: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                    flush=True,
                )
    metrics = [k for k in rows[0] if k not in ("agent", "seed")]
    print(
        f"\nLearned reward model on GoalRank's groups (G = {group.shape[1]}), {args.seeds} "
        f"seeds, {len(requests)} {args.split} requests (mean [95% CI])"
    )
    print("| model vs reference | " + " | ".join(metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    for entry in summarise(rows, metrics):
        print(
            f"| {entry['agent']} | "
            + " | ".join(
                f"{entry[m]:.3f} [{entry[m + '_low']:.3f}, {entry[m + '_high']:.3f}]"
                for m in metrics
            )
            + " |"
        )
    write_csv(out / "agreement.csv", rows)


def plot(summary: list[dict], swept: dict[str, Any], args: argparse.Namespace, out: Path) -> None:
    """Held-out reward (mean, CI bars) against the swept quantity."""
    figure, axis = plt.subplots(figsize=(6, 4))
    families: dict[str, list[dict]] = {}
    for entry in summary:
        # "GoalRank G=8", "G-E 8 lists", "multi-G-E 8 lists": the family is the first word.
        family = entry["agent"].split(" ", 1)[0] if args.study == "matched" else "GoalRank"
        families.setdefault(family, []).append(entry)
    for family, entries in families.items():
        if args.study == "scaling":
            xs = [entry["parameters"] for entry in entries]
        else:
            xs = [swept[entry["agent"]] for entry in entries]
        ys = [entry["reward_eval"] for entry in entries]
        low = [y - e["reward_eval_low"] for y, e in zip(ys, entries, strict=True)]
        high = [e["reward_eval_high"] - y for y, e in zip(ys, entries, strict=True)]
        errors = [low, high]
        axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=family)
    axis.set_xscale("log")
    # Few values: label each one, not powers of ten.
    if args.study == "scaling":
        values = sorted({entry["parameters"] for entry in summary})
        axis.set_xticks(values, [f"{v / 1e6:.2g}M" for v in values])
    else:
        values = sorted({swept[entry["agent"]] for entry in summary})
        axis.set_xticks(values, [f"{v:g}" for v in values])
    axis.minorticks_off()
    axis.set_xlabel(
        {
            "groups": "group size G",
            "scaling": "generator parameters",
            "matched": "reward-model calls per request (G)",
            "temperature": "reference-policy temperature tau",
        }[args.study]
    )
    axis.set_ylabel("held-out reward")
    matched_calls = ", matched calls" if args.study == "groups" and args.matched_calls else ""
    seeds = max(entry["seeds"] for entry in summary)
    axis.set_title(f"GoalRank {args.study}{matched_calls} ({seeds} seeds, 95% CI)")
    axis.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(out / f"{args.study}.png", dpi=120)
    print(f"\nwrote {out / (args.study + '.png')}")


if __name__ == "__main__":
    main()
