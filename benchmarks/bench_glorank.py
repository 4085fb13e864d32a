"""GloRank studies: the global head against its local-index twin, and each stage's worth.

``heads``: for every seed, train on ``--env`` (default ``SlateRerank-v0``):

* ``glorank-sft`` / ``glorank-local-sft``: stage 1 alone (SFT on beam-search lists);
* ``glorank`` / ``glorank-local``: the same SFT, then PPO (same seed: the SFT part
  is identical, so the difference is PPO's);
* ``glorank-scratch``: PPO alone, from a random policy;
* ``glorank-index`` (only when named in ``--configs``): the index twin, SFT + PPO;
* ``glorank-unordered`` / ``glorank-local-unordered`` (only when named): both heads
  with an encoder that does not see the initial rank (``initial_order=False``);

and report, per configuration, the mean over seeds with a 95% bootstrap interval of
the held-out reward (the evaluation simulator, on ``--requests`` test requests),
the training simulator's reward, the true reward in the synthetic world, greedy
latency per request (one batched call) and fit time, as a table, a CSV
(``heads.csv``, one row per run) and a plot. Each run is stored in
``<out>/runs/heads/<config>/seed<k>.json`` as it ends (``--resume`` reuses them;
``--backend ray`` runs them as Ray tasks: :mod:`agents.common.trials`). The learning
curves (validation reward under the training simulator) go to ``curves.csv``.
Every run also measures input-order dependence
(:func:`~agents.evaluation.order_agreement`: the same requests ranked again with
their candidates shuffled; ``same_list``, ``same_items``).

``--cold-start F`` trains on a task that withholds a share ``F`` of the items
(``ColdStartConfig(F, seed=0)``: the same items for every seed) from the training
and validation requests, the tokenizer and the agents' features; the test requests
(nearly all of which hold withheld items at ``F = 0.2``) are ranked as usual, and
``withheld_listed`` / ``withheld_offered`` say how often the lists show withheld
items against how often they are among the candidates.

``sb3``: whether sb3-contrib's ``MaskablePPO`` (``MultiInputPolicy``, dense reward,
8 environments) drives ``SlateRerankGlobal-v0`` itself: train ``--timesteps``
token steps per seed, then report the held-out reward of its deterministic policy
on ``--requests`` test requests, stepped one episode at a time.

``variance``: the output layer's gradient spread across mini-batches
(:func:`~agents.glorank.output_gradient_variance`) for the global head (tied to the
token embeddings, and with a free output layer), the local (pointer) twin and the
index twin (``Linear(d, N)`` over positions, the layer of the paper's argument),
untrained and after SFT alone: the SFT loss of the logged-positive lists of 512 validation
requests in 16 mini-batches of 32.

``latency``: greedy ranking time per request of GloRank (global, local and index heads)
against DeGRe and Seq2Slate (their full presets, untrained: time does not depend
on the weights) in one run: ``--repeats`` batched ``rank`` calls over ``--requests``
test requests per agent, interleaved, reporting the median and the ratio to DeGRe.

Usage::

    python benchmarks/bench_glorank.py latency --budget full --repeats 7

    python benchmarks/bench_glorank.py variance --seeds 5

    python benchmarks/bench_glorank.py sb3 --seeds 1 --requests 300
    python benchmarks/bench_glorank.py heads --budget quick --seeds 5
    python benchmarks/bench_glorank.py heads --env SlateRerankSynthetic-v0 --seeds 5
    python benchmarks/bench_glorank.py heads --cold-start 0.2 --configs glorank glorank-local
    python benchmarks/bench_glorank.py heads --from-csv runs/bench-glorank/heads.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agents.common.commands import command_task  # noqa: E402
from agents.common.trials import (  # noqa: E402
    Trial,
    TrialStore,
    add_backend_arguments,
    ray_options_from,
    run_trials,
)
from agents.evaluation import (  # noqa: E402
    order_agreement,
    read_csv,
    reward_and_latency,
    summarise,
    write_csv,
)
from agents.glorank import GloRank, GloRankConfig  # noqa: E402
from rerank_env import ColdStartConfig  # noqa: E402

#: The configurations of the heads study: label -> config overrides.
HEADS = {
    "glorank-sft": {"ppo_iterations": 0},
    "glorank": {},
    "glorank-local-sft": {"head": "local", "ppo_iterations": 0},
    "glorank-local": {"head": "local"},
    "glorank-scratch": {"sft_source": "none"},
    "glorank-index": {"head": "index"},
    "glorank-unordered": {"initial_order": False},
    "glorank-local-unordered": {"head": "local", "initial_order": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", choices=["heads", "sb3", "variance", "latency"])
    parser.add_argument("--repeats", type=int, default=7, help="latency: timed calls")
    parser.add_argument("--timesteps", type=int, default=65536, help="sb3: token steps")
    parser.add_argument("--env", default="SlateRerank-v0")
    parser.add_argument("--budget", default="quick", choices=["tiny", "quick", "full"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=1000, help="test requests")
    parser.add_argument(
        "--cold-start",
        type=float,
        default=None,
        metavar="F",
        help="heads: withhold this share of items from training (ColdStartConfig(F, seed=0))",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(HEADS)[:5],
        choices=list(HEADS),
        help="heads: configurations (default: the first five)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-glorank"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="heads: reuse the runs stored in --out by an earlier run (same settings)",
    )
    add_backend_arguments(parser)
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
        report(read_csv(args.from_csv), args)
        return
    if args.study == "sb3":
        maskable_ppo(args)
        return
    if args.study == "variance":
        gradient_variance(args)
        return
    if args.study == "latency":
        ranking_latency(args)
        return
    cold = None if args.cold_start is None else ColdStartConfig(args.cold_start, seed=0)
    task = command_task(args.env, {} if cold is None else {"cold_start": cold})
    requests = task.requests("test")[: args.requests]
    print(f"task: {task.summary()}, cold start: {cold}", flush=True)
    # Every (configuration, seed) run is a trial stored in out/runs/heads as it ends
    # (--resume reads them back), here or on Ray (--backend ray).
    store = TrialStore(args.out / "runs" / "heads", fresh=not args.resume)
    trials = [
        Trial(f"{label}/seed{seed}", heads_trial, (args, seed, label, cold is not None))
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for label in args.configs
    ]
    records = run_trials(
        trials,
        store,
        shared=(task, requests),
        backend=args.backend,
        ray_options=ray_options_from(args),
        workers=args.workers,
    )
    rows = [record["row"] for record in records.values()]
    write_csv(args.out / "heads.csv", rows)
    write_csv(args.out / "curves.csv", [c for r in records.values() for c in r["curves"]])
    report(rows, args)


def heads_trial(
    task: Any, requests: Any, args: argparse.Namespace, seed: int, label: str, cold: bool
) -> dict[str, Any]:
    """One (configuration, seed) run of the heads study, here or in a Ray worker."""
    agent = GloRank(GloRankConfig.preset(args.budget, seed=seed, **HEADS[label]))
    start = time.perf_counter()
    agent.fit(task)
    fit = time.perf_counter() - start
    metrics = reward_and_latency(agent, task, requests)
    metrics |= order_agreement(agent, task, requests, seed=seed)
    if cold:
        metrics |= withheld_shares(agent, task, requests)
    held_out, latency = metrics["reward_eval"], metrics["latency_ms"]
    print(
        f"seed {seed} {label}: held-out {held_out:.4f}, {latency:.2f} ms/request, fit {fit:.0f} s",
        flush=True,
    )
    return {
        "row": {
            "agent": label,
            "seed": seed,
            **metrics,
            "fit_s": fit,
            "parameters": agent.parameter_count(),
        },
        "curves": [
            {"agent": label, "seed": seed, **row}
            for row in agent.history
            if row["stage"] == "curve"
        ],
    }


def withheld_shares(agent: GloRank, task: Any, requests: Any) -> dict[str, float]:
    """Share of listed items that are withheld, and of offered candidates that are."""
    import numpy as np  # noqa: PLC0415

    candidates = task.candidates_np[requests]
    listed = np.take_along_axis(candidates, agent.rank(task, requests), axis=1)
    return {
        "withheld_listed": float(task.withheld_items[listed].mean()),
        "withheld_offered": float(task.withheld_items[candidates].mean()),
    }


#: The variance study's configurations (stage 1 alone): label -> config overrides.
VARIANCE = {
    "global (tied)": {},
    "global (free output)": {"tied_output": False},
    "local twin": {"head": "local"},
    "index twin (Linear(d, N))": {"head": "index"},
}


def gradient_variance(args: argparse.Namespace) -> None:
    """The variance study: relative output-gradient variance, untrained and after SFT."""
    import numpy as np  # noqa: PLC0415

    from agents.glorank import output_gradient_variance  # noqa: PLC0415

    task = command_task(args.env, {})
    requests = task.requests("valid")[:512]
    positive = task.logged_positives(requests)
    n = task.num_candidates
    lists = np.argsort(-(positive * n + (n - np.arange(n))), axis=1, kind="stable")
    lists = lists[:, : task.slate_length]
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for label, overrides in VARIANCE.items():
            config = GloRankConfig.preset(args.budget, seed=seed, ppo_iterations=0, **overrides)
            agent = GloRank(config).setup(task)
            for stage in ("untrained", "sft"):
                if stage == "sft":
                    agent.fit(task)
                measured = output_gradient_variance(agent.modules["policy"], task, requests, lists)
                rows.append({"agent": f"{label}, {stage}", "seed": seed, **measured})
                print(
                    f"seed {seed} {label} {stage}: relative variance {measured['relative']:.3f}",
                    flush=True,
                )
                write_csv(args.out / "variance.csv", rows)
    summary = summarise(rows, ["relative", "variance", "mean_norm2"])
    print(f"\nOutput-layer gradient across 16 mini-batches, {args.seeds} seeds (mean [95% CI])")
    print("| head, stage | relative variance | variance (trace) | squared mean norm |")
    print("|---|---|---|---|")
    for entry in summary:
        cells = [
            f"{entry[m]:.4g} [{entry[m + '_low']:.4g}, {entry[m + '_high']:.4g}]"
            for m in ("relative", "variance", "mean_norm2")
        ]
        print(f"| {entry['agent']} | " + " | ".join(cells) + " |")


def maskable_ppo(args: argparse.Namespace) -> None:
    """Train MaskablePPO on SlateRerankGlobal-v0 and evaluate it on test requests."""
    import gymnasium as gym  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from sb3_contrib import MaskablePPO  # noqa: PLC0415
    from sb3_contrib.common.wrappers import ActionMasker  # noqa: PLC0415
    from stable_baselines3.common.env_util import make_vec_env  # noqa: PLC0415

    def make() -> gym.Env:
        env = gym.make("SlateRerankGlobal-v0", reward_mode="dense")
        return ActionMasker(env, lambda e: e.unwrapped.action_masks())

    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        model = MaskablePPO(
            "MultiInputPolicy",
            make_vec_env(make, n_envs=8, seed=seed),
            n_steps=256,
            batch_size=128,
            learning_rate=1e-3,
            seed=seed,
            verbose=0,
        )
        start = time.perf_counter()
        model.learn(args.timesteps)
        fit = time.perf_counter() - start
        test = gym.make("SlateRerankGlobal-v0", split="test").unwrapped
        rewards, start = [], time.perf_counter()
        for request in test.task.requests("test")[: args.requests]:
            obs, _ = test.reset(options={"request": int(request)})
            done = False
            while not done:
                action, _ = model.predict(obs, deterministic=True, action_masks=test.action_masks())
                obs, _, done, _, info = test.step(int(action))
            rewards.append(info["eval_reward"])
        latency = (time.perf_counter() - start) * 1000 / len(rewards)
        rows.append(
            {
                "agent": "maskable-ppo-global",
                "seed": seed,
                "reward_eval": np.mean(rewards),
                "latency_ms": latency,
                "fit_s": fit,
            }
        )
        print(
            f"seed {seed}: {args.timesteps} token steps, fit {fit:.0f} s, held-out "
            f"{np.mean(rewards):.4f} on {len(rewards)} test requests, "
            f"{latency:.1f} ms/request"
        )
        write_csv(args.out / "sb3.csv", rows)


def ranking_latency(args: argparse.Namespace) -> None:
    """Median greedy ranking time per request, GloRank's heads against DeGRe's."""
    import numpy as np  # noqa: PLC0415

    from agents.registry import make_agent  # noqa: PLC0415

    task = command_task(args.env, {})
    requests = task.requests("test")[: args.requests]
    agents = {
        name: make_agent(name, budget=args.budget).setup(task)
        for name in ("degre", "seq2slate", "glorank", "glorank-local", "glorank-index")
    }
    times: dict[str, list[float]] = {name: [] for name in agents}
    for agent in agents.values():
        agent.rank(task, requests[:64])  # warm-up (lazy tables)
    for _ in range(args.repeats):
        for name, agent in agents.items():  # interleaved: drifts hit every agent alike
            start = time.perf_counter()
            agent.rank(task, requests)
            times[name].append((time.perf_counter() - start) * 1000 / len(requests))
    reference = float(np.median(times["degre"]))
    print(f"\nGreedy ranking, {len(requests)} requests per call, median of {args.repeats}")
    print("| agent | ms / request | x DeGRe |")
    print("|---|---:|---:|")
    for name in agents:
        median = float(np.median(times[name]))
        print(f"| {name} | {median:.3f} | {median / reference:.2f} |")


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the table (mean [95% CI] over seeds) and plot held-out reward per config."""
    metrics = [k for k in rows[0] if k not in ("agent", "seed")]
    summary = summarise(rows, metrics)
    seeds = len({row["seed"] for row in rows})
    columns = [
        m
        for m in (
            "reward_eval",
            "reward_true",
            "reward_train",
            "same_list",
            "same_items",
            "withheld_listed",
            "withheld_offered",
        )
        if m in metrics
    ]
    cold = "" if getattr(args, "cold_start", None) is None else f", cold start {args.cold_start}"
    print(f"\nGloRank {args.study} on {args.env}{cold}, {seeds} seeds (mean [95% CI])")
    print("| configuration | " + " | ".join(columns) + " | ms/request | fit s | parameters |")
    print("|---|" + "---|" * (len(columns) + 3))
    for entry in summary:
        cells = [
            f"{entry[m]:.4f} [{entry[m + '_low']:.4f}, {entry[m + '_high']:.4f}]" for m in columns
        ]
        print(
            f"| {entry['agent']} | "
            + " | ".join(cells)
            + f" | {entry['latency_ms']:.2f} | {entry['fit_s']:.0f} | "
            f"{entry['parameters']:,.0f} |"
        )
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for index, entry in enumerate(summary):
        low, high = entry["reward_eval_low"], entry["reward_eval_high"]
        axis.errorbar(
            index,
            entry["reward_eval"],
            yerr=[[entry["reward_eval"] - low], [high - entry["reward_eval"]]],
            fmt="o",
            capsize=4,
        )
    axis.set_xticks(range(len(summary)), [entry["agent"] for entry in summary], rotation=20)
    axis.set_ylabel("held-out reward (eval simulator)")
    axis.set_title(f"GloRank {args.study}, {args.env}, {seeds} seeds, 95% CI")
    figure.tight_layout()
    figure.savefig(args.out / f"{args.study}.png", dpi=120)
    print(f"plot: {args.out / (args.study + '.png')}")


if __name__ == "__main__":
    main()
