"""Slot decisions per second: single env, SyncVectorEnv, native vector env, raw simulator.

Usage::

    python benchmarks/env_throughput.py [--seconds 3] [--simulators transformer pbm10]
        [--threads 2] [--envs 256 1024 4096] [--repeats 3] [--device cpu] [--vector-only]

For each simulator setting it times, with a fixed cheap policy (the first valid
candidate, so the policy costs nothing):

* the single ``SlateRerank-v0`` env (``gym.make``, with Gymnasium's default wrappers);
* Gymnasium's ``SyncVectorEnv`` over 256 single envs;
* the native vector env (``gym.make_vec``) at each ``--envs`` size, with dense
  features and with ``features="indices"``;
* the raw batched simulator work for 1,024 lists (and each ``--envs`` size with
  ``--vector-only``), three ways:

  - ``training forward``: what the env asks of the training simulator, alone: its
    prefix scorer built once per episode, then one ``place`` per slot (the limit
    the issue's "raw forward" means);
  - ``training + eval forward``: that plus the held-out simulator's reward of the
    finished lists (the env's ``eval_reward``, also simulator work);
  - ``last_click_probs per slot``: the prefix re-scored at every slot, the env's
    path before prefix scorers (for comparison with earlier tables).

``pbm10`` is the PBM simulator at N = 10, L = 10 (fitted on ML-100K 10-item
pseudo-slates on first use, needs the raw data), side by side with SARDINE's
``sardine/SlateRerank-Static-v0`` (10 candidates, 10 slots, one slate per step) if
``sardine-rec`` is installed. ``--device cuda --vector-only --envs 1024 ... 65536``
gives the CUDA curve. Ratios are from this one run.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import rerank_env  # noqa: F401  (registers the environments)
from rerank_env import TaskConfig
from simulators.base import SlateBatch

SETTINGS = {
    "transformer": TaskConfig(simulator="transformer"),
    "pbm": TaskConfig(simulator="pbm"),
    "pbm10": TaskConfig(simulator="pbm", num_candidates=10, slate_length=10),
}


def _rate(run: Callable[[], int], seconds: float) -> float:
    """Decisions per second of ``run`` (returns decisions made) over ``seconds``."""
    gc.collect()  # the garbage of earlier rows' envs is not collected on this row's time
    run()  # warm up
    decisions, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        decisions += run()
    return decisions / (time.perf_counter() - start)


def single_env(config: TaskConfig, seconds: float) -> float:
    env = gym.make("SlateRerank-v0", task=config)
    env.reset(seed=0)
    length = env.unwrapped.task.slate_length

    def episode() -> int:
        obs, _ = env.reset()
        for _ in range(length):
            obs, *_ = env.step(int(np.argmax(obs["action_mask"])))
        return length

    try:
        return _rate(episode, seconds)
    finally:
        env.close()


def sync_vector(config: TaskConfig, num_envs: int, seconds: float) -> float:
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("SlateRerank-v0", task=config) for _ in range(num_envs)]
    )
    return _vector_rate(envs, seconds)


def native_vector(config: TaskConfig, num_envs: int, seconds: float, features: str) -> float:
    envs = gym.make_vec("SlateRerank-v0", num_envs=num_envs, features=features, task=config)
    return _vector_rate(envs, seconds)


def _vector_rate(envs, seconds: float) -> float:
    try:
        return _stepped_rate(envs, seconds)
    finally:
        envs.close()


def _stepped_rate(envs, seconds: float) -> float:
    obs, _ = envs.reset(seed=0)
    num_envs = envs.num_envs
    state = {"obs": obs}

    def step() -> int:
        actions = np.argmax(state["obs"]["action_mask"], axis=1)
        state["obs"], *_ = envs.step(actions)
        # A NEXT_STEP autoreset step places nothing (it returns step 0): not counted.
        return 0 if (state["obs"]["step"] == 0).all() else num_envs

    return _rate(step, seconds)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def raw_simulator(config: TaskConfig, num_envs: int, seconds: float, path: str) -> float:
    """Slot decisions/s of the simulator work alone (``path``: see the module docstring)."""
    task = rerank_env.make_task(config)
    simulator, judge = task.simulators["train"], task.simulators["eval"]
    rng = np.random.default_rng(0)
    # Fresh requests each episode, as the env draws them (one batch again and again
    # would keep its rows in cache and flatter the simulator).
    batches = []
    for _ in range(8):
        requests = torch.as_tensor(task.sample_requests("train", num_envs, rng), device=task.device)
        order = np.stack([rng.permutation(task.num_candidates) for _ in range(num_envs)])
        positions = torch.as_tensor(order[:, : task.slate_length], device=task.device)
        candidates = task.candidates[requests]
        items = torch.gather(candidates, 1, positions)
        batches.append(
            (task.users[requests], candidates, task.histories[requests], positions, items)
        )
    episodes = iter(range(1 << 62))

    def episode() -> int:
        users, candidates, histories, positions, items = batches[next(episodes) % len(batches)]
        if path == "last_click_probs":
            for t in range(task.slate_length):
                simulator.last_click_probs(SlateBatch(users, items[:, : t + 1], histories))
        else:
            scorer = simulator.prefix_scorer(users, candidates, histories, task.slate_length)
            for t in range(task.slate_length):
                scorer.place(positions[:, t])
            if path == "training + eval":
                judge.expected_reward(SlateBatch(users, items, histories), validate=False)
        _synchronize(task.device)
        return num_envs * task.slate_length

    return _rate(episode, seconds)


RAW_PATHS = {
    "training": "training forward",
    "training + eval": "training + eval forward",
    "last_click_probs": "last_click_probs per slot",
}


def sardine(seconds: float) -> float | None:
    try:
        import sardine as _  # noqa: F401, PLC0415
    except ImportError:
        return None
    env = gym.make("sardine/SlateRerank-Static-v0")
    env.reset(seed=0)
    env.action_space.seed(0)
    slots = len(env.action_space.nvec)

    def step() -> int:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
        return slots

    return _rate(step, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--simulators", nargs="+", default=["transformer", "pbm10"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--envs", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--device", default="cpu", help="where the simulators run")
    parser.add_argument(
        "--repeats", type=int, default=3, help="measurements of every row (the best is kept)"
    )
    parser.add_argument(
        "--vector-only",
        action="store_true",
        help="only the native vector env (dense features) and the raw paths at each size",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch threads: {args.threads}; device {args.device}; {args.seconds:g} s per "
        f"measurement, best of {args.repeats}\n"
    )
    if args.vector_only:
        _vector_curve(args)
        return
    print(
        "| simulator | setting | slot decisions/s | vs SyncVectorEnv(256) | vs training forward "
        "| vs training + eval forward |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.simulators:
        _table(name, args)


def _table(name: str, args: argparse.Namespace) -> None:
    """The rows of one simulator setting."""
    config = SETTINGS[name].replace(device=args.device)
    rows: dict[str, Callable[[], float]] = {
        "single env": lambda: single_env(config, args.seconds),
        "SyncVectorEnv(256)": lambda: sync_vector(config, 256, args.seconds),
    }
    for num_envs in args.envs:
        for features in ("dense", "indices"):
            rows[f"native vector env ({num_envs}, {features})"] = lambda n=num_envs, f=features: (
                native_vector(config, n, args.seconds, f)
            )
    for path, label in RAW_PATHS.items():
        rows[f"raw simulator, {label} (1024)"] = lambda p=path: raw_simulator(
            config, 1024, args.seconds, p
        )
    if name == "pbm10" and sardine(0.1) is not None:
        rows["SARDINE SlateRerank-Static-v0 (N = L = 10)"] = lambda: sardine(args.seconds)
    # Every row measured --repeats times in turn, the best kept: this machine's
    # speed drifts by tens of percent within minutes, and interleaving the rows
    # keeps the ratios of one run honest.
    rates = dict.fromkeys(rows, 0.0)
    for _ in range(args.repeats):
        for setting, measure in rows.items():
            rates[setting] = max(rates[setting], measure())
    sync = rates["SyncVectorEnv(256)"]
    train = rates["raw simulator, training forward (1024)"]
    both = rates["raw simulator, training + eval forward (1024)"]
    for setting, rate in rates.items():
        print(
            f"| {name} | {setting} | {rate:,.0f} | {rate / sync:.1f}x "
            f"| {rate / train:.2f} | {rate / both:.2f} |"
        )


def _vector_curve(args: argparse.Namespace) -> None:
    """Native vector env (dense) vs the raw paths at every ``--envs`` size."""
    print(
        "| simulator | sub-envs | native vector env | training forward | training + eval "
        "forward | env / training | env / training + eval |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.simulators:
        config = SETTINGS[name].replace(device=args.device)
        for num_envs in args.envs:
            env = native_vector(config, num_envs, args.seconds, "dense")
            train = raw_simulator(config, num_envs, args.seconds, "training")
            both = raw_simulator(config, num_envs, args.seconds, "training + eval")
            print(
                f"| {name} | {num_envs:,} | {env:,.0f} | {train:,.0f} | {both:,.0f} "
                f"| {env / train:.2f} | {env / both:.2f} |"
            )


if __name__ == "__main__":
    main()
