"""GR2 studies: what each stage adds, rejection vs targeted traces, and reward hacking.

``stages``: for every seed, train on ``--env`` (default ``SlateRerankGR2-v0``: K = 10
pre-ranked candidates holding the true next item) the configurations of
``--configs``:

* ``gr2-targeted-sft``: SFT on targeted traces (the answer revealed to the teacher);
* ``gr2-sft``: SFT on rejection-sampled traces;
* ``gr2``: the same SFT, then DAPO with the conditional format reward;
* ``gr2-unconditional``: the same with the unconditional format reward;
* ``gr2-no-mid`` (only when named): ``gr2`` without mid-training.

A seed is one trial that trains the stages its configurations share once and
branches between them (:meth:`GR2.branch`): one mid-training, then the targeted and
the rejection-sampled SFT from it, then both DAPO variants from the rejection SFT.
Each stage seeds itself, so a branch is the run a separate fit of that
configuration gives (tested), and differences between configurations of one seed
are the stage's alone. ``fit_s`` is the time of the stages a configuration is made of.

The report: per configuration, the mean over seeds with a 95% bootstrap interval
of Recall@1, Recall@5 and NDCG@5 of the true item on the ``--split`` requests
(``test``: the 243 of ML-100K; the other split's are reported too, as a second
sample of requests), the evaluation simulator's reward of the top L,
how much the greedy outputs copy the input order (identical share, Kendall's tau),
the true item's mean rank, the share of malformed rationales, mid-training's
report (next-SID recall@1 and held-out captioning accuracy, before and after), the
teacher's acceptance rate and the fit time; then the paired differences the
issue's targets are about (seed by seed on the same requests). The pre-ranker (the
input order) is a row of its own. Each seed's record is stored in
``<out>/runs/stages/seed<k>.json`` as it finishes (``--resume`` reuses them;
``--backend ray`` runs seeds in parallel, see :mod:`agents.common.trials`), each
trained configuration in ``<out>/checkpoints/<config>-seed<k>.pt``; rows go
to ``stages.csv``, DAPO's per-iteration diagnostics to ``dapo.csv``; ``stages.png``
plots the recall metrics and ``hacking.png`` the reward-hacking diagnostics over
DAPO iterations.

``time``: the wall time of one fit per preset (``--budgets``), stage by stage.

Usage::

    python benchmarks/bench_gr2.py time --budgets quick full
    python benchmarks/bench_gr2.py stages --budget quick --seeds 5
    python benchmarks/bench_gr2.py stages --budget quick --seeds 5 --backend ray --resume
    python benchmarks/bench_gr2.py stages --from-csv runs/bench-gr2/stages.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from agents.common.commands import command_task  # noqa: E402
from agents.common.trials import (  # noqa: E402
    Trial,
    TrialStore,
    add_backend_arguments,
    ray_options_from,
    run_trials,
)
from agents.evaluation import read_csv, summarise, write_csv  # noqa: E402
from agents.gr2 import GR2, GR2Config  # noqa: E402
from agents.gr2.rewards import kendall_tau_to_input  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "gr2-targeted-sft": {"teacher": "targeted", "dapo_iterations": 0},
    "gr2-sft": {"dapo_iterations": 0},
    "gr2": {},
    "gr2-unconditional": {"format_reward": "unconditional"},
    "gr2-no-mid": {"mid_steps": 0},
}
COLUMNS = (
    "recall@1",
    "recall@5",
    "ndcg@5",
    "reward_eval",
    "copy_share",
    "kendall_tau",
    "target_rank",
    "format_breaks",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", choices=["stages", "time"])
    parser.add_argument("--env", default="SlateRerankGR2-v0")
    parser.add_argument("--budget", default="quick", choices=["tiny", "quick", "full"])
    parser.add_argument("--budgets", nargs="+", default=["quick", "full"], help="time: presets")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(CONFIGS)[:4],
        choices=list(CONFIGS),
        help="stages: configurations (default: the first four)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-gr2"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="stages: reuse the seeds stored in --out by an earlier run (same settings)",
    )
    add_backend_arguments(parser, unit="seed")
    parser.add_argument(
        "--from-csv",
        nargs="+",
        type=Path,
        default=None,
        metavar="CSV",
        help="train nothing: summarise and plot these CSVs of earlier runs",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_csv:
        dapo_csv = args.out / "dapo.csv"
        report(
            read_csv(args.from_csv),
            read_csv([dapo_csv], ("agent", "stage")) if dapo_csv.exists() else [],
            args,
        )
        return
    task = command_task(args.env, {})
    print(f"task: {task.summary()}", flush=True)
    if args.study == "time":
        preset_times(task, args)
        return
    # The other split is evaluated too (prefixed columns): a second, independent
    # sample of requests, since 243 test requests leave R@1 a standard error of 0.025.
    other = "valid" if args.split == "test" else "test"
    splits = {"": task.requests(args.split), f"{other}_": task.requests(other)}
    store = TrialStore(args.out / "runs" / "stages", fresh=not args.resume)
    configs = [label for label in CONFIGS if label in args.configs]  # branching order
    trials = [
        Trial(f"seed{seed}", seed_trial, (args.budget, seed, configs, args.out / "checkpoints"))
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    pre_ranker = {"agent": "pre-ranker", "seed": 0}
    for prefix, requests in splits.items():
        metrics = ranking_metrics(task, requests, None)
        pre_ranker |= {prefix + key: value for key, value in metrics.items()}

    def collect(trial: Trial, record: dict[str, Any]) -> None:
        for row in record["rows"]:
            print(
                f"seed {row['seed']} {row['agent']}: recall@1 {row['recall@1']:.3f}, "
                f"recall@5 {row['recall@5']:.3f}, copy {row['copy_share']:.3f}, "
                f"fit {row['fit_s']:.0f} s",
                flush=True,
            )

    records = run_trials(
        trials,
        store,
        shared=(task, splits),
        backend=args.backend,
        ray_options=ray_options_from(args),
        workers=args.workers,
        on_finish=collect,
    )
    rows = [pre_ranker] + [row for record in records.values() for row in record["rows"]]
    dapo = [row for record in records.values() for row in record["dapo"]]
    write_csv(args.out / "stages.csv", rows)
    if dapo:
        write_csv(args.out / "dapo.csv", dapo)
    report(rows, dapo, args)


def seed_trial(
    task: Any,
    splits: dict[str, np.ndarray],
    budget: str,
    seed: int,
    configs: list[str],
    checkpoints: Path | None = None,
) -> dict[str, Any]:
    """One seed of the stages study (here or in a Ray worker): every configuration's row.

    Shared stages run once; the configurations branch from them (see the module
    docstring). ``splits`` maps a column prefix to the requests it is measured on;
    each trained configuration is saved to ``checkpoints/<label>-seed<k>.pt`` when
    ``checkpoints`` is given. Returns ``{"rows": [...], "dapo": [...]}``.
    """
    rows: list[dict[str, Any]] = []
    dapo: list[dict[str, Any]] = []

    def record(label: str, agent: GR2, stages: tuple[str, ...]) -> None:
        metrics = {}
        for prefix, requests in splits.items():
            measured = ranking_metrics(task, requests, agent.outputs(task, requests))
            metrics |= {prefix + key: value for key, value in measured.items()}
        if checkpoints is not None:
            agent.save(checkpoints / f"{label}-seed{seed}.pt", {"study": "bench_gr2 stages"})
        rows.append(
            {
                "agent": label,
                "seed": seed,
                **metrics,
                **agent.mid_report,
                "acceptance_rate": agent.teacher_stats["acceptance_rate"],
                "fit_s": sum(agent.stage_seconds[stage] for stage in stages),
            }
        )
        dapo.extend(
            {"agent": label, "seed": seed, **row} for row in agent.history if row["stage"] == "dapo"
        )

    base = GR2(GR2Config.preset(budget, seed=seed)).setup(task).mid_train(task)
    if "gr2-targeted-sft" in configs:
        targeted = base.branch(**CONFIGS["gr2-targeted-sft"]).supervise(task)
        record("gr2-targeted-sft", targeted, ("mid", "sft"))
    if {"gr2-sft", "gr2", "gr2-unconditional"} & set(configs):
        supervised = base.supervise(task)  # base's last use: no copy needed
        if "gr2-sft" in configs:
            record("gr2-sft", supervised, ("mid", "sft"))
        for label in ("gr2", "gr2-unconditional"):
            if label in configs:
                tuned = supervised.branch(**CONFIGS[label]).reinforce(task)
                record(label, tuned, ("mid", "sft", "dapo"))
    if "gr2-no-mid" in configs:
        alone = GR2(GR2Config.preset(budget, seed=seed, **CONFIGS["gr2-no-mid"])).fit(task)
        record("gr2-no-mid", alone, ("mid", "sft", "dapo"))
    return {"rows": rows, "dapo": dapo}


def ranking_metrics(task: Any, requests: np.ndarray, outputs: dict | None) -> dict[str, float]:
    """Recall@1/5, NDCG@5, held-out reward and copy diagnostics (``None``: the input order)."""
    k = task.num_candidates
    if outputs is None:
        rankings = np.tile(np.arange(k), (len(requests), 1))
        formed = np.full(len(requests), np.nan)
    else:
        rankings, formed = outputs["rankings"], outputs["well_formed"].astype(float)
    targets = task.pool.gr2_target_pos[requests]
    rank = (rankings == targets[:, None]).argmax(axis=1)
    lists = rankings[:, : task.slate_length]
    return {
        "recall@1": float((rank < 1).mean()),
        "recall@5": float((rank < 5).mean()),
        "ndcg@5": float(np.where(rank < 5, 1 / np.log2(rank + 2.0), 0).mean()),
        "reward_eval": float(task.expected_reward(requests, lists, "eval").mean()),
        "copy_share": float((rankings == np.arange(k)).all(axis=1).mean()),
        "kendall_tau": float(kendall_tau_to_input(rankings).mean()),
        "target_rank": float((rank + 1).mean()),
        "format_breaks": float(1 - np.mean(formed)),
    }


#: Iterations in the running mean of the reward-hacking plot (per-iteration values of
#: 16 prompts are noisy).
SMOOTHING = 10


def _smoothed(values: list[float]) -> np.ndarray:
    """Running mean over the last :data:`SMOOTHING` values (fewer at the start)."""
    sums = np.cumsum(np.r_[0.0, values])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - SMOOTHING)
    return (sums[ends] - sums[starts]) / (ends - starts)


#: The paired differences the issue's targets are about: (name, minuend, subtrahend, metrics).
DIFFERENCES = (
    ("gr2 - pre-ranker", "gr2", "pre-ranker", ("recall@1", "recall@5", "ndcg@5")),
    ("gr2 - gr2-sft", "gr2", "gr2-sft", ("recall@1", "recall@5", "ndcg@5")),
    ("gr2-sft - gr2-targeted-sft", "gr2-sft", "gr2-targeted-sft", ("recall@1", "recall@5")),
    (
        "gr2-unconditional - gr2",
        "gr2-unconditional",
        "gr2",
        ("copy_share", "kendall_tau", "recall@1", "recall@5"),
    ),
)


def paired_differences(rows: list[dict[str, Any]], prefix: str = "") -> None:
    """Print seed-by-seed differences between configurations (mean [95% CI] over seeds).

    The pre-ranker's row (one, deterministic) is paired with every seed; ``prefix``
    selects the columns of another split (``"valid_"``).
    """
    by_key = {(row["agent"], row["seed"]): row for row in rows}
    seeds = sorted({row["seed"] for row in rows if row["agent"] != "pre-ranker"})
    differences = []
    for name, left, right, metrics in DIFFERENCES:
        for seed in seeds:
            a = by_key.get((left, seed))
            b = by_key.get((right, 0 if right == "pre-ranker" else seed))
            if a is not None and b is not None:
                differences.append(
                    {
                        "agent": name,
                        "seed": seed,
                        **{m: a[prefix + m] - b[prefix + m] for m in metrics if prefix + m in a},
                    }
                )
    if not differences:
        return
    metrics = list(dict.fromkeys(m for *_, names in DIFFERENCES for m in names))
    for row in differences:
        for metric in metrics:
            row.setdefault(metric, float("nan"))
    split = prefix.rstrip("_") or "the main split"
    print(
        f"\nPaired differences on {split}, seed by seed on the same requests "
        "(mean [95% CI]; (wins/seeds))"
    )
    print("| difference | " + " | ".join(metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    for entry in summarise(differences, metrics):
        mine = [row for row in differences if row["agent"] == entry["agent"]]
        cells = []
        for metric in metrics:
            if np.isnan(entry[metric]):
                cells.append("")
                continue
            wins = sum(row[metric] > 0 for row in mine)
            cells.append(
                f"{entry[metric]:+.3f} [{entry[metric + '_low']:+.3f}, "
                f"{entry[metric + '_high']:+.3f}] ({wins}/{len(mine)})"
            )
        print(f"| {entry['agent']} | " + " | ".join(cells) + " |")


def preset_times(task: Any, args: argparse.Namespace) -> None:
    """One fit per preset, timed stage by stage from the training log."""
    print("| preset | parameters | mid-training | teacher + SFT | DAPO | total |")
    print("|---|---|---|---|---|---|")
    for budget in args.budgets:
        agent = GR2(GR2Config.preset(budget, seed=args.first_seed))
        start = time.perf_counter()
        agent.fit(task)
        total = time.perf_counter() - start
        times = agent.stage_seconds
        print(
            f"| {budget} | {agent.parameter_count():,} | {times['mid']:.0f} s | "
            f"{times['sft']:.0f} s | {times['dapo']:.0f} s | {total:.0f} s |",
            flush=True,
        )


def report(rows: list[dict[str, Any]], dapo: list[dict[str, Any]], args) -> None:
    """Print the table (mean [95% CI] over seeds) and plot it and DAPO's diagnostics."""
    extra = [
        k
        for k in (
            "next_sid_recall@1_before",
            "next_sid_recall@1_after",
            "caption_genre_accuracy_before",
            "caption_genre_accuracy_after",
            "acceptance_rate",
            "fit_s",
        )
        if k in rows[-1]
    ]
    for row in rows:
        for key in extra:
            row.setdefault(key, float("nan"))
    summary = summarise(rows, [*COLUMNS, *extra])
    seeds = len({row["seed"] for row in rows if row["agent"] != "pre-ranker"})
    print(
        f"\nGR2 stages on {args.env} ({args.split}), budget {args.budget}, {seeds} seeds "
        "(mean [95% CI])"
    )
    print("| configuration | " + " | ".join(COLUMNS) + " | fit s |")
    print("|---|" + "---|" * (len(COLUMNS) + 1))
    for entry in summary:
        cells = [
            "-"
            if np.isnan(entry[m])
            else f"{entry[m]:.3f}"
            if entry[m + "_low"] == entry[m + "_high"]
            else f"{entry[m]:.3f} [{entry[m + '_low']:.3f}, {entry[m + '_high']:.3f}]"
            for m in COLUMNS
        ]
        fit = entry.get("fit_s", float("nan"))
        print(f"| {entry['agent']} | " + " | ".join(cells) + f" | {fit:.0f} |")
    if "next_sid_recall@1_after" in extra:
        print(
            "\n| configuration | next-SID recall@1 before / after | caption genre accuracy "
            "before / after | teacher acceptance |"
        )
        print("|---|---|---|---|")
        for entry in summary[1:]:
            print(
                f"| {entry['agent']} | {entry['next_sid_recall@1_before']:.3f} / "
                f"{entry['next_sid_recall@1_after']:.3f} | "
                f"{entry['caption_genre_accuracy_before']:.3f} / "
                f"{entry['caption_genre_accuracy_after']:.3f} | "
                f"{entry['acceptance_rate']:.3f} |"
            )
    paired_differences(rows)
    prefix = next((p for p in ("valid_", "test_") if p + "recall@1" in rows[-1]), None)
    if prefix is not None:
        print(f"\nThe other split, {prefix.rstrip('_')} (mean [95% CI])")
        print("| configuration | recall@1 | recall@5 | ndcg@5 |\n|---|---|---|---|")
        for entry in summarise(rows, [prefix + m for m in ("recall@1", "recall@5", "ndcg@5")]):
            cells = [
                f"{entry[prefix + m]:.3f} [{entry[prefix + m + '_low']:.3f}, "
                f"{entry[prefix + m + '_high']:.3f}]"
                for m in ("recall@1", "recall@5", "ndcg@5")
            ]
            print(f"| {entry['agent']} | " + " | ".join(cells) + " |")
        paired_differences(rows, prefix)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for axis, metric in zip(axes, ("recall@1", "recall@5", "ndcg@5"), strict=True):
        for index, entry in enumerate(summary):
            mean, low, high = entry[metric], entry[metric + "_low"], entry[metric + "_high"]
            axis.errorbar(index, mean, yerr=[[mean - low], [high - mean]], fmt="o", capsize=4)
        axis.set_xticks(
            range(len(summary)), [e["agent"] for e in summary], rotation=30, ha="right", fontsize=8
        )
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    figure.suptitle(f"GR2 on {args.env} ({args.split}), {seeds} seeds, 95% CI")
    figure.tight_layout()
    figure.savefig(args.out / "stages.png", dpi=120)
    plt.close(figure)
    if dapo:
        panels = {
            "copy_share": "identical to the input order",
            "kendall_tau": "Kendall tau to input",
            "target_rank_after": "rank of x* after (before: dotted)",
            "format_breaks": "malformed rationales",
        }
        figure, axes = plt.subplots(1, len(panels), figsize=(16, 3.6))
        for index, label in enumerate(dict.fromkeys(row["agent"] for row in dapo)):
            mine = [row for row in dapo if row["agent"] == label]
            steps = sorted({row["iteration"] for row in mine})
            for axis, (key, title) in zip(axes, panels.items(), strict=True):
                means = [np.mean([r[key] for r in mine if r["iteration"] == s]) for s in steps]
                axis.plot(steps, _smoothed(means), label=label, color=f"C{index}")
                if key == "target_rank_after":
                    before = [
                        np.mean([r["target_rank_before"] for r in mine if r["iteration"] == s])
                        for s in steps
                    ]
                    axis.plot(steps, _smoothed(before), ":", color=f"C{index}")
                axis.set_xlabel("DAPO iteration")
                axis.set_title(title + " (sampled)", fontsize=9)
                axis.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        figure.suptitle(
            f"Reward hacking: copying the input order, mean over {seeds} seeds "
            f"(running mean of {SMOOTHING} iterations)"
        )
        figure.tight_layout()
        figure.savefig(args.out / "hacking.png", dpi=120)
        plt.close(figure)
    print(f"plots: {args.out / 'stages.png'}, {args.out / 'hacking.png'}")


if __name__ == "__main__":
    main()
