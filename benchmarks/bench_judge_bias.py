"""Where the held-out judge errs against the truth, per agent, in the synthetic world.

Usage::

    python benchmarks/bench_judge_bias.py [--seeds 3] [--budget quick] [--requests 500]

The synthetic world knows each list's true expected clicks, so the judge's error on
an agent's lists (held-out minus true) can be measured directly. An agent ranking
is reordered by the judge exactly when that error differs between agents by more
than their true gaps. For each agent the script reports, as means over its lists
with a 95% two-way bootstrap interval (seeds and requests):

* ``held-out``, ``true`` and ``train`` (the training simulator's own reward: what
  the simulator-trained agents maximise);
* ``judge error`` (held-out - true) and the training simulator's error
  (train - true): if both err alike on an agent's lists, the judge shares the
  errors the agent was trained to exploit;
* ``slot-1 error``: the judge's error at the first slot alone;
* ``popularity``: the mean log count of the list's items in the agents' training
  logs, and the correlation of the judge's per-list error with it.

The agents default to the README job's (``compare --quick``). It chooses
nothing, so it reads the test requests the comparisons report on.
Records go to ``--out`` as each agent finishes (``<agent>.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agents.base import TrainableAgent
from agents.common.commands import command_task
from agents.compare.presets import QUICK_AGENTS
from agents.intervals import run_intervals
from agents.registry import make_agent
from rerank_env import RerankTask
from rerank_env.task import SimulatorRole

MEASURES = ("held-out", "true", "train", "judge error", "train error", "slot-1 error", "popularity")


def item_popularity(task: RerankTask) -> np.ndarray:
    """``log(1 + count)`` of every item among the logged slates of the training requests."""
    logged = task.pool.logged_items[task.requests("train")]
    counts = np.bincount(logged[logged >= 0].ravel(), minlength=task.pool.n_items)
    return np.log1p(counts)


def measures(
    task: RerankTask, lists: np.ndarray, requests: np.ndarray, popularity: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-request values of :data:`MEASURES` for ``lists`` ``[B, L]``."""
    probs: dict[SimulatorRole, np.ndarray] = {
        role: task.click_probs(requests, lists, role).cpu().numpy()
        for role in ("eval", "true", "train")
    }
    items = np.take_along_axis(task.candidates_np[requests], lists, axis=1)
    held, true, train = (probs[role].sum(axis=1) for role in ("eval", "true", "train"))
    return {
        "held-out": held,
        "true": true,
        "train": train,
        "judge error": held - true,
        "train error": train - true,
        "slot-1 error": probs["eval"][:, 0] - probs["true"][:, 0],
        "popularity": popularity[items].mean(axis=1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="SlateRerankSynthetic-v0")
    parser.add_argument("--agents", default=",".join(QUICK_AGENTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", default="quick", choices=["tiny", "quick", "full"])
    parser.add_argument("--requests", type=int, default=500, help="test requests")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-judge-bias"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    task = command_task(args.env, {})
    if task.description.get("dataset") != "synthetic":
        parser.error(f"--env {args.env} has no true reward: use a synthetic-world id")
    requests = task.requests("test")[: args.requests]
    popularity = item_popularity(task)
    print(f"task: {task.summary()}; {len(requests)} test requests", flush=True)
    header = [*MEASURES, "corr(judge error, popularity)"]
    print("| agent | " + " | ".join(header) + " |\n|---|" + "---:|" * len(header))
    for name in args.agents.split(","):
        start = time.perf_counter()
        runs = []
        for seed in range(args.seeds):
            agent = make_agent(name, seed=seed, budget=args.budget)
            if isinstance(agent, TrainableAgent):
                agent.fit(task, progress=False)
            elif seed > 0 and "seed" not in agent.config():
                break  # deterministic: one run counts for every seed
            lists = np.asarray(agent.rank(task, requests))
            runs.append(measures(task, lists, requests, popularity))
        intervals = run_intervals(runs, MEASURES)
        record = {"agent": name, "seeds": len(runs), "requests": len(requests)}
        record.update({m: [i.mean, i.low, i.high] for m, i in intervals.items()})
        cells = [interval.text() for interval in intervals.values()]
        errors = np.concatenate([run["judge error"] for run in runs])
        pops = np.concatenate([run["popularity"] for run in runs])
        record["corr_error_popularity"] = float(np.corrcoef(errors, pops)[0, 1])
        cells.append(f"{record['corr_error_popularity']:+.2f}")
        record["seconds"] = time.perf_counter() - start
        (args.out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
