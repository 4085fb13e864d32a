"""What the observations give away: a zero-training dot-product probe against trained baselines.

Usage::

    python benchmarks/bench_observations.py [--requests 0] [--seeds 3] [--out DIR]

For each ``representations`` setting (``"retriever"``, the default, and the
``"privileged"`` ablation, the training simulator's own vectors) it ranks the test
requests of ``SlateRerank-v0`` with ``vector-dot`` (the dot product of the observed
user and item vectors, no training), next to the initial order and pointwise greedy
(a click model trained on the logs, ``--seeds`` seeds; it reads neither setting's
vectors, so it is trained once per seed). It prints the held-out (judge) and
training-simulator rewards with 95% intervals over requests (and seeds), and the
probe's share of pointwise greedy's held-out reward: near 100% means the
observations carry the reward model. ``--requests 0`` uses every test request.
Records go to ``--out`` (JSON) as each row finishes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agents.intervals import hierarchical_interval
from agents.registry import make_agent
from rerank_env import make_task


def _rewards(task, agent, requests: np.ndarray) -> dict[str, np.ndarray]:
    lists = agent.rank(task, requests)
    return {
        role: task.expected_reward(requests, lists, role).cpu().numpy()
        for role in ("eval", "train")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=0, help="test requests (0: all)")
    parser.add_argument("--seeds", type=int, default=3, help="pointwise-greedy seeds")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-observations"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = {
        rep: make_task(representations=rep, progress=False) for rep in ("retriever", "privileged")
    }
    requests = tasks["retriever"].requests("test")
    if args.requests:
        requests = requests[: args.requests]
    rows: dict[str, dict[str, np.ndarray]] = {}
    start = time.perf_counter()
    greedy = []
    for seed in range(args.seeds):
        agent = make_agent("pointwise-greedy", seed=seed).fit(tasks["retriever"])
        greedy.append(_rewards(tasks["retriever"], agent, requests))
    rows["pointwise-greedy (trained)"] = {
        role: np.stack([g[role] for g in greedy]) for role in ("eval", "train")
    }
    rows["initial-order"] = {
        role: values[None]
        for role, values in _rewards(
            tasks["retriever"], make_agent("initial-order"), requests
        ).items()
    }
    for rep, task in tasks.items():
        rows[f"vector-dot ({rep})"] = {
            role: values[None]
            for role, values in _rewards(task, make_agent("vector-dot"), requests).items()
        }
    seconds = time.perf_counter() - start
    reference = rows["pointwise-greedy (trained)"]["eval"].mean()
    print(
        f"SlateRerank-v0, {len(requests)} test requests, judge: "
        f"{tasks['retriever'].description['held_out']}-half held-out simulator "
        f"({seconds:.0f} s)\n"
    )
    print("| agent | held-out | training simulator | share of greedy (held-out) |")
    print("|---|---|---|---|")
    records = {}
    for name, values in rows.items():
        judge = hierarchical_interval(values["eval"], seed=0)
        train = hierarchical_interval(values["train"], seed=0)
        share = float(100 * values["eval"].mean() / reference)
        print(
            f"| {name} | {judge.mean:.3f} [{judge.low:.3f}, {judge.high:.3f}] | "
            f"{train.mean:.3f} [{train.low:.3f}, {train.high:.3f}] | {share:.1f}% |"
        )
        records[name] = {
            "held_out": [judge.mean, judge.low, judge.high],
            "train": [train.mean, train.low, train.high],
            "share_of_greedy": share,
        }
    (args.out / "observations.json").write_text(
        json.dumps({"requests": len(requests), "seeds": args.seeds, "rows": records}, indent=2)
    )


if __name__ == "__main__":
    main()
