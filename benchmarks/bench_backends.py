"""Wall time of ``rerank-env compare`` on the local backend, in worker processes and on Ray.

Usage::

    python benchmarks/bench_backends.py [--agents prm,seq2slate,gen-eval] [--seeds 4]
        [--budget quick] [--requests 200] [--workers 1 2] [--backends processes ray]
        [--out runs/bench-backends]

Runs the same comparison (same agents, seeds, budgets, evaluation set) once on the
local backend (one run after another, every core's torch threads for each) and once
per ``--workers`` value on each of ``--backends``: ``processes`` (that many forked
worker processes) and ``ray`` (a local Ray with ``num_cpus`` = workers), both with
one torch thread per run, each into a fresh run folder. Prints a table of wall time,
speed-up over local, and whether the held-out rewards equal the last run's (they do
when the threads per run match; see :mod:`agents.common.trials`). The task and the
evaluation set's references are built in every run, so the times include them. The
README's main job is ``--agents`` of the quick preset, ``--seeds 5 --requests 500``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import torch

from agents.common.trials import RayOptions, require_ray
from agents.compare import run_compare


def _rewards(folder: Path) -> dict[tuple[str, str], str]:
    rows = csv.DictReader((folder / "per_seed.csv").open())
    return {(row["agent"], row["seed"]): row["reward_eval"] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="prm,seq2slate,gen-eval")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--budget", default="quick", choices=("tiny", "quick", "full"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--backends", nargs="+", choices=("processes", "ray"), default=["processes", "ray"]
    )
    parser.add_argument("--out", default="runs/bench-backends")
    args = parser.parse_args()
    ray = require_ray() if "ray" in args.backends else None
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    settings = {
        "agents": args.agents.split(","),
        "seeds": args.seeds,
        "budget": args.budget,
        "requests": args.requests,
        "out": out,
        "progress": False,
    }
    runs = []
    start = time.perf_counter()
    local = run_compare(name="local", **settings)
    runs.append(
        (
            f"local ({torch.get_num_threads()} torch threads per run)",
            local,
            time.perf_counter() - start,
        )
    )
    for workers in args.workers if "processes" in args.backends else ():
        start = time.perf_counter()
        folder = run_compare(
            name=f"processes-{workers}", backend="processes", workers=workers, **settings
        )
        runs.append(
            (f"processes, {workers} worker(s), 1 thread each", folder, time.perf_counter() - start)
        )
    for workers in args.workers if ray is not None else ():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            start = time.perf_counter()
            folder = run_compare(
                name=f"ray-{workers}",
                backend="ray",
                ray_options=RayOptions(cpus_per_trial=1),
                **settings,
            )
            runs.append(
                (f"ray, {workers} worker(s), 1 thread each", folder, time.perf_counter() - start)
            )
        finally:
            ray.shutdown()
    base = runs[0][2]
    reference = _rewards(runs[-1][1])
    print(f"\n{args.agents} x {args.seeds} seeds, budget {args.budget}, {args.requests} requests")
    print("| backend | wall s | speed-up vs local | rewards = the last run's |")
    print("|---|---:|---:|---|")
    for label, folder, seconds in runs:
        same = "yes" if _rewards(folder) == reference else "no"
        print(f"| {label} | {seconds:.0f} | {base / seconds:.2f}x | {same} |")


if __name__ == "__main__":
    main()
