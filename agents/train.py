"""Train one agent and save its checkpoint; under ``torchrun``, data-parallel.

Usage::

    python -m agents.train goalrank --budget quick --out runs/goalrank.pt
    torchrun --nproc_per_node 2 -m agents.train goalrank --budget quick --out runs/goalrank.pt
    torchrun --nproc_per_node 4 -m agents.train goalrank --config size=10M --device cuda --out g.pt

Builds the environment's task (``--env``, ``--env-kwarg``), the agent by its
registered name at a budget preset (``--config FIELD=VALUE`` changes its fields)
and trains it. With ``torchrun`` every process runs this script; the trainers that
support it (GoalRank) share each step's gradient pass out over the processes
(:mod:`agents.common.distributed`; gloo on CPU, nccl on CUDA), the others train the
same model in every process. Rank 0 alone writes the checkpoint (with the world
size in its metadata) and the training log (``--log-dir``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agents.base import TrainableAgent
from agents.common.commands import DEFAULT_ENV, command_task, parse_env_kwargs, run_handler
from agents.common.distributed import data_parallel
from agents.registry import make_agent
from simulators.data.errors import ConfigError
from simulators.progress import log_line


def train(args: argparse.Namespace) -> int:
    """Build, train and (rank 0) save the agent of ``args``."""
    task = command_task(args.env, parse_env_kwargs(args.env_kwarg), args.device)
    parallel = data_parallel(task.device)
    try:
        agent = make_agent(args.agent, seed=args.seed, budget=args.budget)
        overrides = parse_env_kwargs(args.config, option="--config")
        if overrides:  # the preset's settings with some fields changed
            unknown = sorted(set(overrides) - set(agent.config()))
            if unknown:
                raise ValueError(f"no config field(s) {unknown}; fields: {sorted(agent.config())}")
            agent = type(agent)(**{**agent.config(), **overrides})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"cannot build agent {args.agent!r}: {err}") from None
    if not isinstance(agent, TrainableAgent):
        raise ConfigError(f"agent {args.agent!r} has nothing to train")
    if args.log_dir is not None and parallel.is_main:
        agent.log_dir = Path(args.log_dir)
    start = time.perf_counter()
    agent.fit(task, progress=parallel.is_main and not args.quiet)
    seconds = time.perf_counter() - start
    if parallel.is_main:
        metadata = {"world_size": parallel.world_size, "fit_s": seconds, "env": args.env}
        path = agent.save(args.out, metadata=metadata)
        log_line(
            f"{agent.name}: trained in {seconds:.1f} s on {parallel.world_size} process(es); "
            f"wrote {path}",
            not args.quiet,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """``python -m agents.train``'s options."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("agent", help="a registered agent name (rerank-env compare --help)")
    parser.add_argument("--out", required=True, help="checkpoint path (rank 0 writes it)")
    parser.add_argument("--env", default=DEFAULT_ENV)
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--budget", default="full", choices=("tiny", "quick", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a field of the preset's config, repeatable, e.g. size='10M' "
        "(GoalRank's generator) or iterations=300",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    parser.add_argument("--log-dir", help="training log folder (curves.csv, TensorBoard)")
    parser.add_argument("--quiet", action="store_true", help="no progress")
    parser.set_defaults(handler=train, command="train")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.train``."""
    return run_handler(build_parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
