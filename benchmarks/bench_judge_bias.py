"""Where the held-out judge errs against the truth, per agent, in the synthetic world.

Usage::

    python benchmarks/bench_judge_bias.py [--seeds 3] [--budget quick] [--requests 500]
    python benchmarks/bench_judge_bias.py --split valid --env-kwarg weight_decay_per_epoch=50

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

Last, the agent-ranking agreement of the judge with the truth (Kendall's tau of
the agents' mean held-out and true rewards, with its two-way interval), the
benchmark's validity figure, and the share of the agent pairs the truth separates
that the judge orders as the truth does
(:func:`agents.intervals.ranking_agreement`).

The agents default to the README job's (``compare --quick``). By default it reads
the test requests the comparisons report on; ``--env-kwarg`` changes the world or
how its simulators are fitted (e.g. ``weight_decay_per_epoch=50``), and a study
that compares such settings to choose one runs with ``--split valid``.
Records go to ``--out`` as each agent finishes (``<agent>.json``), the agreement
last (``agreement.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agents.base import TrainableAgent
from agents.common.commands import command_task, parse_env_kwargs
from agents.compare.presets import QUICK_AGENTS
from agents.intervals import ranking_agreement, run_intervals
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
    parser.add_argument("--requests", type=int, default=500, help="requests of --split")
    parser.add_argument(
        "--split",
        default="test",
        choices=["valid", "test"],
        help="requests to judge on: valid when the run is used to choose a setting",
    )
    parser.add_argument(
        "--env-kwarg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword of gym.make(--env) (repeatable), e.g. weight_decay_per_epoch=50",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-judge-bias"))
    args = parser.parse_args()
    env_kwargs = parse_env_kwargs(args.env_kwarg)
    args.out.mkdir(parents=True, exist_ok=True)
    task = command_task(args.env, env_kwargs)
    if task.description.get("dataset") != "synthetic":
        parser.error(f"--env {args.env} has no true reward: use a synthetic-world id")
    requests = task.requests(args.split)[: args.requests]
    popularity = item_popularity(task)
    print(f"task: {task.summary()}; {len(requests)} {args.split} requests", flush=True)
    header = [*MEASURES, "corr(judge error, popularity)"]
    print("| agent | " + " | ".join(header) + " |\n|---|" + "---:|" * len(header))
    held_out: dict[str, np.ndarray] = {}
    true: dict[str, np.ndarray] = {}
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
        held_out[name] = np.stack([run["held-out"] for run in runs])
        true[name] = np.stack([run["true"] for run in runs])
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
    if len(held_out) >= 3:
        agreement = ranking_agreement(held_out, true)
        summary = {
            "env": args.env,
            "env_kwargs": env_kwargs,
            "split": args.split,
            "seeds": args.seeds,
            "budget": args.budget,
            "requests": len(requests),
            "tau": [agreement.tau, agreement.low, agreement.high],
            "resolved_pairs": agreement.resolved_pairs,
            "resolved_agreement": agreement.resolved_agreement,
        }
        (args.out / "agreement.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(
            f"agent-ranking agreement with the truth: Kendall's tau {agreement.tau:.3f} "
            f"[{agreement.low:.3f}, {agreement.high:.3f}] over {agreement.agents} agents; "
            f"{agreement.resolved_agreement:.0%} of the {agreement.resolved_pairs} pairs the "
            "truth separates ordered as the truth orders them"
        )


if __name__ == "__main__":
    main()
