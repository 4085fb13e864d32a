"""DeGRe studies: dense vs sparse credit assignment, and the ablations of issue 6.

Usage::

    python benchmarks/bench_degre.py credit [--seeds 5] [--evaluator simulator] [--beam-width 8]
    python benchmarks/bench_degre.py ablations [--seeds 3]

Common options: ``--env SlateRerank-v0``, ``--requests 500`` (test requests),
``--mining-requests 500``, ``--out runs/bench-degre``, ``--first-seed``. Every run (a
seed of ``credit``: both arms; a configuration and seed of ``ablations``) is stored
in ``<out>/runs/<study>/`` as it ends (``--resume`` reuses them); ``--backend ray``
runs them as Ray tasks (:mod:`agents.common.trials`).

``credit`` trains the same pointer generator two ways against the same evaluator
(by default the training simulator, so evaluator calls are simulator calls):
``dense``, DeGRe's mined step labels, and ``sparse``, REINFORCE with the list value
at the same number of evaluator calls. It prints the held-out reward of each with
95% bootstrap CIs over seeds and writes ``credit_curves.csv`` and
``credit_curves.png`` (validation reward against evaluator calls). ``--beam-width 1``
mines greedily: about N * L calls per request instead of about B * N * L, so the
dense arm sees B times more requests at the same budget.

``ablations`` trains DeGRe (learned evaluator) with hard + soft labels and with hard
labels only, with mining beam widths 1 / 4 / 8 / 16, and with the training simulator
as its evaluator. For every run it also serves the run's own evaluator by beam
search (width 8), the teacher, so the table shows DeGRe-greedy's reward as a share
of its teacher's and the latency of both.
"""

from __future__ import annotations

import argparse
import math
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
from agents.degre import DeGRe  # noqa: E402
from agents.evaluation import reward_and_latency, summarise, write_csv  # noqa: E402
from rerank_env.task import RerankTask  # noqa: E402


def teacher(agent: DeGRe, width: int = 8) -> DeGRe:
    """The evaluator of a fitted ``agent`` served by beam search of ``width``."""
    config = {**agent.config(), "decode": "evaluator-beam", "beam_width": width}
    config["keep_lists"] = min(config["keep_lists"], width)
    beam = DeGRe(**config)
    beam.build_info = dict(agent.build_info)
    beam._build()
    if "evaluator" in agent.modules:
        beam.modules["evaluator"].load_state_dict(agent.modules["evaluator"].state_dict())
        beam.modules["evaluator"].eval()
    beam.fitted = True
    return beam


def credit(args: argparse.Namespace, task: RerankTask, requests: np.ndarray, out: Path) -> None:
    records = run_study(
        args,
        task,
        requests,
        out / "runs" / "credit",
        [Trial(f"seed{seed}", credit_trial, (args, seed)) for seed in seeds(args)],
    )
    rows = [row for record in records for row in record["rows"]]
    curves = [curve for record in records for curve in record["curves"]]
    summary = summarise(rows, ["reward_eval", "reward_train", "fit_s", "evaluator_calls"])
    print(
        f"\nDense vs sparse, evaluator = {args.evaluator}, mining beam width "
        f"{args.beam_width}, {args.mining_requests} mined requests, {args.seeds} seeds, "
        f"{len(requests)} test requests (mean [95% CI])"
    )
    print("| training | held-out reward | training-sim reward | evaluator calls | fit s |")
    print("|---|---|---|---|---|")
    for entry in summary:
        print(
            f"| {entry['agent']} | {_ci(entry, 'reward_eval')} | {_ci(entry, 'reward_train')} "
            f"| {entry['evaluator_calls']:,.0f} | {entry['fit_s']:.0f} |"
        )
    write_csv(out / "credit.csv", rows)
    write_csv(out / "credit_curves.csv", curves)
    figure, axis = plt.subplots(figsize=(6, 4))
    for arm in ("dense", "sparse"):
        mine = [c for c in curves if c["arm"] == arm]
        by_calls: dict[int, list[float]] = {}
        for c in mine:
            by_calls.setdefault(c["evaluator_calls"], []).append(c["valid_reward"])
        xs = sorted(by_calls)
        ys = [by_calls[x] for x in xs]
        mean = [float(np.mean(y)) for y in ys]
        axis.plot(xs, mean, marker="o", markersize=3, label=f"{arm} ({args.seeds} seeds)")
        axis.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], alpha=0.2)
    axis.set_xlabel(f"evaluator calls ({args.evaluator})")
    axis.set_ylabel("validation reward (training simulator)")
    axis.set_title(f"Dense step labels (beam {args.beam_width}) vs sparse list reward")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "credit_curves.png", dpi=120)
    print(f"\nwrote {out / 'credit_curves.png'}")


def credit_trial(
    task: RerankTask, requests: np.ndarray, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """One seed of the credit study (here or in a Ray worker): both arms' rows and curves."""
    rows, curves = [], []
    dense = DeGRe(
        evaluator=args.evaluator,
        mining_requests=args.mining_requests,
        rounds=5,
        epochs=args.epochs,
        beam_width=args.beam_width,
        keep_lists=min(4, args.beam_width),
        seed=seed,
    )
    # The sparse arm gets exactly the evaluator calls the dense run spent.
    for arm in ("dense", "sparse"):
        if arm == "dense":
            agent = dense
        else:
            agent = DeGRe(
                **{
                    **dense.config(),
                    "supervision": "sparse",
                    "sparse_batch": 256,
                    "sparse_samples": 8,
                    "sparse_iterations": math.ceil(dense.evaluator_calls / (256 * 8)),
                },
            )
        start = time.perf_counter()
        agent.fit(task)
        fit = time.perf_counter() - start
        metrics = reward_and_latency(agent, task, requests)
        rows.append(
            {
                "agent": arm,
                "seed": seed,
                **metrics,
                "fit_s": fit,
                "evaluator_calls": agent.evaluator_calls,
            }
        )
        curves += [
            {
                "arm": arm,
                "seed": seed,
                "evaluator_calls": p["evaluator_calls"],
                "valid_reward": p["valid_reward"],
            }
            for p in agent.history
            if "valid_reward" in p
        ]
        print(
            f"seed {seed} {arm}: held-out {metrics['reward_eval']:.4f}, fit {fit:.0f} s, "
            f"{agent.evaluator_calls:,} evaluator calls",
            flush=True,
        )
    return {"rows": rows, "curves": curves}


#: The ablations study's configurations (DeGRe keyword arguments).
ABLATIONS: dict[str, dict[str, Any]] = {
    "hard+soft, B=8": {},
    "hard only, B=8": {"soft_weight": 0.0},
    "hard+soft, B=1": {"beam_width": 1, "keep_lists": 1},
    "hard+soft, B=4": {"beam_width": 4},
    "hard+soft, B=16": {"beam_width": 16},
    "simulator evaluator, B=8": {"evaluator": "simulator"},
}


def ablation_trial(
    task: RerankTask, requests: np.ndarray, args: argparse.Namespace, seed: int, name: str
) -> dict[str, Any]:
    """One (configuration, seed) run of the ablations (here or in a Ray worker): its row."""
    agent = DeGRe(
        mining_requests=args.mining_requests, epochs=args.epochs, **ABLATIONS[name], seed=seed
    )
    start = time.perf_counter()
    agent.fit(task)
    fit = time.perf_counter() - start
    greedy = reward_and_latency(agent, task, requests)
    beam = reward_and_latency(teacher(agent), task, requests)
    print(
        f"seed {seed} {name}: held-out {greedy['reward_eval']:.4f} "
        f"(teacher {beam['reward_eval']:.4f}), fit {fit:.0f} s",
        flush=True,
    )
    return {
        "agent": name,
        "seed": seed,
        **greedy,
        "fit_s": fit,
        "teacher_reward_eval": beam["reward_eval"],
        "teacher_latency_ms": beam["latency_ms"],
        "share_of_teacher": greedy["reward_eval"] / beam["reward_eval"],
    }


def ablations(args: argparse.Namespace, task: RerankTask, requests: np.ndarray, out: Path) -> None:
    trials = [
        Trial(f"{_key(name)}/seed{seed}", ablation_trial, (args, seed, name))
        for seed in seeds(args)
        for name in ABLATIONS
    ]
    rows = run_study(args, task, requests, out / "runs" / "ablations", trials)
    summary = summarise(rows, [k for k in rows[0] if k not in ("agent", "seed")])
    print(
        f"\nDeGRe ablations, {args.seeds} seeds, {len(requests)} test requests, "
        f"{args.mining_requests} mined requests (mean [95% CI])"
    )
    print(
        "| configuration | held-out reward | teacher (evaluator beam-8) | share of teacher "
        "| ms/request greedy | ms/request teacher | fit s |"
    )
    print("|---|---|---|---|---|---|---|")
    for entry in summary:
        print(
            f"| {entry['agent']} | {_ci(entry, 'reward_eval')} | "
            f"{_ci(entry, 'teacher_reward_eval')} | {_ci(entry, 'share_of_teacher', percent=True)} "
            f"| {entry['latency_ms']:.2f} | {entry['teacher_latency_ms']:.1f} "
            f"| {entry['fit_s']:.0f} |"
        )
    write_csv(out / "ablations.csv", rows)


def seeds(args: argparse.Namespace) -> range:
    """The study's seeds: ``--first-seed`` .. ``--first-seed + --seeds - 1``."""
    return range(args.first_seed, args.first_seed + args.seeds)


def run_study(
    args: argparse.Namespace,
    task: RerankTask,
    requests: np.ndarray,
    folder: Path,
    trials: list[Trial],
) -> list[dict[str, Any]]:
    """Run (or, with ``--resume``, read back) every trial; their records in order.

    Each record is stored in ``folder`` as it finishes, so a stopped study loses no
    finished run; ``--backend ray`` runs them as Ray tasks.
    """
    store = TrialStore(folder, fresh=not args.resume)
    records = run_trials(
        trials,
        store,
        shared=(task, requests),
        backend=args.backend,
        ray_options=ray_options_from(args),
        workers=args.workers,
    )
    return list(records.values())


def _key(name: str) -> str:
    """A configuration's name as a file name (``hard+soft, B=8`` -> ``hard+soft-B8``)."""
    return name.replace(", ", "-").replace("=", "").replace(" ", "-")


def _ci(entry: dict[str, Any], metric: str, percent: bool = False) -> str:
    scale, unit = (100, "%") if percent else (1, "")
    mean, low, high = (
        entry[metric] * scale,
        entry[f"{metric}_low"] * scale,
        entry[f"{metric}_high"] * scale,
    )
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}{unit} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", choices=["credit", "ablations"])
    parser.add_argument("--env", default="SlateRerank-v0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds first-seed ... first-seed + seeds - 1 (to split a study over machines)",
    )
    parser.add_argument("--requests", type=int, default=500, help="test requests")
    parser.add_argument("--mining-requests", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4, help="generator epochs per round")
    parser.add_argument(
        "--evaluator",
        default="simulator",
        choices=["simulator", "learned"],
        help="credit study: the evaluator both arms learn from",
    )
    parser.add_argument(
        "--beam-width", type=int, default=8, help="credit study: the dense arm's mining beam width"
    )
    parser.add_argument("--out", default="runs/bench-degre")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs stored in --out by an earlier run of this study (same settings)",
    )
    add_backend_arguments(parser)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = command_task(args.env, {})
    requests = task.requests("test")[: args.requests]
    print(f"task: {task.summary()}", flush=True)
    (credit if args.study == "credit" else ablations)(args, task, requests, out)


if __name__ == "__main__":
    main()
