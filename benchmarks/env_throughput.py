"""Slot decisions per second: single env, SyncVectorEnv, native vector env, raw simulator.

Usage::

    python benchmarks/env_throughput.py [--seconds 3] [--simulators transformer pbm10]
        [--threads 1]

For each simulator setting it times, with a fixed cheap policy (the first valid
candidate, so the policy costs nothing):

* the single ``SlateRerank-v0`` env (``gym.make``, with Gymnasium's default wrappers);
* Gymnasium's ``SyncVectorEnv`` over 256 single envs;
* the native vector env (``gym.make_vec``) with 256 and 1,024 sub-environments,
  with dense features and with ``features="indices"``;
* the raw batched simulator forward alone for 1,024 lists: one
  ``last_click_probs`` call per slot, the same calls the vector env makes (the
  limit).

``pbm10`` is the PBM simulator at N = 10, L = 10 (fitted on ML-100K 10-item
pseudo-slates on first use, needs the raw data), side by side with SARDINE's
``sardine/SlateRerank-Static-v0`` (10 candidates, 10 slots, one slate per step) if
``sardine-rec`` is installed. Ratios are from this one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import rerank_env  # noqa: F401  (registers the environments)
from simulators.base import SlateBatch

SETTINGS = {
    "transformer": {"simulator": "transformer"},
    "pbm": {"simulator": "pbm"},
    "pbm10": {"simulator": "pbm", "num_candidates": 10, "slate_length": 10},
}


def _rate(run: Callable[[], int], seconds: float) -> float:
    """Decisions per second of ``run`` (returns decisions made) over ``seconds``."""
    run()  # warm up
    decisions, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        decisions += run()
    return decisions / (time.perf_counter() - start)


def single_env(kwargs: dict, seconds: float) -> float:
    env = gym.make("SlateRerank-v0", **kwargs)
    env.reset(seed=0)
    length = env.unwrapped.task.slate_length

    def episode() -> int:
        obs, _ = env.reset()
        for _ in range(length):
            obs, *_ = env.step(int(np.argmax(obs["action_mask"])))
        return length

    return _rate(episode, seconds)


def sync_vector(kwargs: dict, num_envs: int, seconds: float) -> float:
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("SlateRerank-v0", **kwargs) for _ in range(num_envs)]
    )
    return _vector_rate(envs, seconds)


def native_vector(kwargs: dict, num_envs: int, seconds: float, features: str) -> float:
    envs = gym.make_vec("SlateRerank-v0", num_envs=num_envs, features=features, **kwargs)
    return _vector_rate(envs, seconds)


def _vector_rate(envs, seconds: float) -> float:
    obs, _ = envs.reset(seed=0)
    num_envs = envs.num_envs
    state = {"obs": obs}

    def step() -> int:
        actions = np.argmax(state["obs"]["action_mask"], axis=1)
        state["obs"], *_ = envs.step(actions)
        # A NEXT_STEP autoreset step places nothing (it returns step 0): not counted.
        return 0 if (state["obs"]["step"] == 0).all() else num_envs

    return _rate(step, seconds)


@torch.no_grad()
def raw_simulator(kwargs: dict, num_envs: int, seconds: float) -> float:
    task = rerank_env.make_task(**kwargs)
    simulator = task.simulators["train"]
    rng = np.random.default_rng(0)
    requests = torch.as_tensor(task.sample_requests("train", num_envs, rng))
    lists = torch.as_tensor(
        np.stack([rng.permutation(task.num_candidates)[: task.slate_length] for _ in requests])
    )
    items = torch.gather(task.candidates[requests], 1, lists)
    users, histories = task.users[requests], task.histories[requests]

    def episode() -> int:
        for t in range(task.slate_length):
            batch = SlateBatch(users, items[:, : t + 1], histories)
            simulator.last_click_probs(batch)
        return num_envs * task.slate_length

    return _rate(episode, seconds)


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}; {args.seconds:g} s per row\n")
    print("| simulator | setting | slot decisions/s | vs SyncVectorEnv(256) | vs raw simulator |")
    print("|---|---|---|---|---|")
    for name in args.simulators:
        kwargs = SETTINGS[name]
        # The limit, measured before and after the envs (best of both: machine noise).
        raw = raw_simulator(kwargs, 1024, args.seconds)
        sync = sync_vector(kwargs, 256, args.seconds)
        rows = [
            ("single env", single_env(kwargs, args.seconds)),
            ("SyncVectorEnv(256)", sync),
        ]
        for num_envs in (256, 1024, 4096):
            for features in ("dense", "indices"):
                rate = native_vector(kwargs, num_envs, args.seconds, features)
                rows.append((f"native vector env ({num_envs}, {features})", rate))
        raw = max(raw, raw_simulator(kwargs, 1024, args.seconds))
        rows.append(("raw simulator forward (1024)", raw))
        if name == "pbm10":
            peer = sardine(args.seconds)
            if peer is not None:
                rows.append(("SARDINE SlateRerank-Static-v0 (N = L = 10)", peer))
        for setting, rate in rows:
            print(f"| {name} | {setting} | {rate:,.0f} | {rate / sync:.1f}x | {rate / raw:.2f} |")


if __name__ == "__main__":
    main()
