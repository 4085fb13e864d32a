"""Is SB3 training bound by the environment or by its own update?

Usage::

    python benchmarks/bench_ppo_env_share.py [--timesteps 8192] [--simulator transformer]

Trains sb3-contrib's MaskablePPO (MultiInputPolicy, n_steps 2048, 10 epochs of
minibatch 64: SB3's defaults) on the single ``SlateRerank-v0`` env and splits the
wall time into time inside ``env.reset``/``env.step``, the rest of the rollout
(policy forward, buffer), and the update.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback

import rerank_env  # noqa: F401  (registers the environments)


class TimedEnv(gym.Wrapper):
    """Adds up the seconds spent in ``reset`` and ``step``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def reset(self, **kwargs):
        start = time.perf_counter()
        result = self.env.reset(**kwargs)
        self.seconds += time.perf_counter() - start
        return result

    def step(self, action):
        start = time.perf_counter()
        result = self.env.step(action)
        self.seconds += time.perf_counter() - start
        return result

    def action_masks(self):
        return self.env.unwrapped.action_masks()


class RolloutTimer(BaseCallback):
    """Adds up the seconds spent collecting rollouts (the rest of learn() is updates)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._start = 0.0

    def _on_rollout_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, default=8192)
    parser.add_argument("--simulator", default="transformer")
    args = parser.parse_args()
    env = TimedEnv(gym.make("SlateRerank-v0", simulator=args.simulator))
    model = MaskablePPO("MultiInputPolicy", env, seed=0, device="cpu")
    timer = RolloutTimer()
    start = time.perf_counter()
    model.learn(total_timesteps=args.timesteps, callback=timer)
    total = time.perf_counter() - start
    rows = [
        ("environment (reset + step)", env.seconds),
        ("rest of rollout (policy forward, buffer)", timer.seconds - env.seconds),
        ("PPO update", total - timer.seconds),
        ("total", total),
    ]
    print(
        f"MaskablePPO, {args.timesteps} steps, {args.simulator} simulator, "
        f"torch threads {torch.get_num_threads()}\n"
    )
    print("| part | seconds | share |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {100 * seconds / total:.0f}% |")


if __name__ == "__main__":
    main()
