"""Why simulated reward and logged-click metrics rank rerankers differently on ML-100K.

Usage::

    python benchmarks/bench_judges_disagree.py [--seeds 3] [--budget quick] [--out DIR]

A logged ML-100K "slate" is the next few movies a user rated, and a click is a
rating of 4 or 5. Logged-click metrics (NDCG@L of the clicked items among the
candidates) therefore reward a list for holding the movies the user went on to
*rate at all* and, among those, the ones they liked; the simulators' reward (and a
click model trained on the logged slates) scores only the second: how likely a user
is to click an item *if it is shown*. This script separates the two on every test
request, for the initial order (the retriever), pointwise greedy (a click model),
PRM trained on logged clicks and ``prm-sim`` (PRM on the training simulator's
clicks):

* ``rated@L``: the share of the request's logged items (rated, clicked or not) that
  are among the candidates and in the agent's top L (selection: what gets watched);
* ``clicked@L``: the same for the clicked logged items (what the NDCG@L counts);
* ``liked|rated``: among the logged items that are candidates, the AUC of the
  agent's scores for clicked against unclicked ones (liking, given watched), on the
  requests that have both;
* ``held-out``: expected clicks of its list under the judge.

Each is a mean over requests (and ``--seeds`` seeds for the trained agents) with a
95% two-way bootstrap interval. Records go to ``--out`` as each agent finishes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agents.evaluation import probability_of_improvement
from agents.intervals import run_intervals
from agents.registry import make_agent
from rerank_env import make_task

AGENTS = ("initial-order", "pointwise-greedy", "prm", "prm-sim")


def _scores(task, agent, requests: np.ndarray) -> np.ndarray:
    """Per-candidate scores ``[B, N]``, higher first (the initial order: minus the position)."""
    if hasattr(agent, "scores"):
        return np.asarray(agent.scores(task, requests), dtype=float)
    return -np.broadcast_to(
        np.arange(task.num_candidates, dtype=float), (len(requests), task.num_candidates)
    )


def measures(task, agent, requests: np.ndarray) -> dict[str, np.ndarray]:
    """``rated@L``, ``clicked@L``, ``liked|rated`` and ``held-out`` per request."""
    lists = agent.rank(task, requests)
    candidates = task.candidates_np[requests]
    chosen = np.take_along_axis(candidates, lists, axis=1)
    logged = task.pool.logged_items[requests]
    clicked = task.pool.logged_clicks[requests] & (logged >= 0)
    matches = logged[:, :, None] == candidates[:, None, :]  # [B, L, N]
    in_candidates = matches.any(axis=2) & (logged >= 0)
    in_list = (logged[:, :, None] == chosen[:, None, :]).any(axis=2)

    def share(mask: np.ndarray) -> np.ndarray:
        total = mask.sum(axis=1)
        with np.errstate(invalid="ignore"):
            return np.where(total > 0, (mask & in_list).sum(axis=1) / total, np.nan)

    scores = _scores(task, agent, requests)
    logged_scores = np.take_along_axis(scores, matches.argmax(axis=2), axis=1)
    auc = np.full(len(requests), np.nan)
    for row in range(len(requests)):
        liked = logged_scores[row, clicked[row] & in_candidates[row]]
        disliked = logged_scores[row, ~clicked[row] & in_candidates[row]]
        if len(liked) and len(disliked):  # the AUC is P(liked > disliked), ties half
            auc[row] = probability_of_improvement(liked, disliked)
    return {
        "rated@L": share(in_candidates),
        "clicked@L": share(in_candidates & clicked),
        "liked|rated": auc,
        "held-out": task.expected_reward(requests, lists, "eval").cpu().numpy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", default="quick", choices=["tiny", "quick", "full"])
    parser.add_argument("--requests", type=int, default=0, help="test requests (0: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-judges-disagree"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    task = make_task(progress=False)
    requests = task.requests("test")
    requests = requests[: args.requests] if args.requests else requests
    print(f"task: {task.summary()}; {len(requests)} test requests", flush=True)
    names = ("rated@L", "clicked@L", "liked|rated", "held-out")
    print("| agent | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for name in AGENTS:
        start = time.perf_counter()
        runs = []
        for seed in range(args.seeds if name != "initial-order" else 1):
            agent = make_agent(name, seed=seed, budget=args.budget)
            if hasattr(agent, "fit"):
                agent.fit(task, progress=False)
            runs.append(measures(task, agent, requests))
        intervals = run_intervals(runs, names)
        record = {"agent": name, "seeds": len(runs), "requests": len(requests)}
        record.update({m: [i.mean, i.low, i.high] for m, i in intervals.items()})
        cells = [interval.text() for interval in intervals.values()]
        record["seconds"] = time.perf_counter() - start
        (args.out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
