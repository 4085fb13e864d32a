"""The ``compare`` command line (``rerank-env compare`` and ``python -m agents.compare``)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import rerank_env
from agents import compare as compare_package
from agents.common.commands import DEFAULT_ENV, parse_env_kwargs, run_handler
from agents.common.trials import add_backend_arguments, ray_options_from
from agents.compare.presets import PRESET_ENVS, PRESET_TIMES, PRESETS
from agents.compare.report import results_text
from agents.compare.runs import run_compare
from agents.registry import agent_names
from simulators.cli_help import HelpFormatter, plain
from simulators.data.errors import ConfigError
from simulators.progress import log_line


def add_parser(subparsers: Any) -> None:
    """Add ``compare`` to the ``rerank-env`` command line."""
    parser = subparsers.add_parser(
        "compare",
        help="train and evaluate agents on an environment; write tables and figures",
        description=_description(),
        formatter_class=HelpFormatter,
    )
    configure(parser)
    parser.set_defaults(handler=_handle)


def _description() -> str:
    """The command's help text: what it does, the presets and every agent name."""

    def item(name: str, text: str, indent: int) -> str:  # HelpFormatter wraps it under text
        return f"  {name:{indent - 4}s}  {text}"

    intro = plain(compare_package.__doc__.split("\n\n")[0]).replace("\n", " ")
    presets = "\n".join(
        item(name, f"{', '.join(agents)} ({PRESET_TIMES[name]})", 12)
        for name, agents in PRESETS.items()
    )
    agents = "\n".join(item(name, plain(text), 21) for name, text in agent_names().items())
    return (
        f"{intro}\n\nWithout --agents or --preset it runs the 'full' preset, or the 'quick' one "
        "with --quick.\n\npresets (time for 5 seeds on 2 idle cores, full budgets unless said):\n"
        f"{presets}\n\nagents (or module:Class, an Agent subclass of your own):\n{agents}"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``compare`` (shared by ``python -m agents.compare``)."""
    parser.add_argument(
        "--env",
        metavar="ENV_ID",
        help=f"environment id, one of {', '.join(sorted(rerank_env.VARIANTS))} (default: "
        f"{DEFAULT_ENV}; with --preset gr2, {PRESET_ENVS['gr2']})",
    )
    parser.add_argument(
        "--env-kwarg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment keyword argument, repeatable, e.g. num_candidates=10 (default: the "
        "environment's own)",
    )
    parser.add_argument(
        "--agents",
        help="comma-separated agent names (listed above) or entry points, e.g. "
        "prm,beam-8,mypkg.mod:MyAgent (default: the preset's agents)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named agent set, listed above with its time (default: full, or quick with --quick)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per agent")
    parser.add_argument("--requests", type=int, help="test requests evaluated (default: 500)")
    parser.add_argument(
        "--permutations", type=int, default=200, help="random lists per request for HR@k%%"
    )
    parser.add_argument(
        "--beam-width", type=int, default=8, help="width of the beam-search reference"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the agents' quick training budgets (the README's main job); "
        "without --agents or --preset it runs the quick preset. --preset quick alone runs "
        "the same agents at their full budgets",
    )
    parser.add_argument(
        "--budget",
        choices=("tiny", "quick", "full"),
        help="the agents' training budgets: tiny (seconds, smoke tests), quick or full "
        "(default: full; quick with --quick)",
    )
    parser.add_argument("--out", default="runs", help="parent folder of the run folder")
    parser.add_argument("--name", help="run folder name (default: the environment id and the time)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a non-empty run folder again (its stored runs are dropped)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run folder --name: reuse its stored (agent, seed) runs, run the rest",
    )
    parser.add_argument("--device", default="cpu", help="torch device of task and agents (cuda)")
    add_backend_arguments(
        parser,
        default_backend=None,
        default_help="processes, or local with a CUDA --device, which forked workers cannot use",
    )
    _add_output_arguments(parser)


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of what ``compare`` shows: ``--reference``, ``--quiet``, ``--full-table``."""
    parser.add_argument(
        "--reference",
        metavar="NAME",
        help="the agent of the paired table: every other agent's difference from it on the "
        "same requests, with its interval and minimum detectable difference (default: "
        "pointwise-greedy when it is compared, else the first agent)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or log lines; the results are still printed",
    )
    parser.add_argument(
        "--full-table",
        action="store_true",
        help="print results.md (every metric with its interval) instead of the compact table",
    )


def compare_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_compare`'s keyword arguments from parsed ``compare`` options."""
    if args.agents and args.preset:
        raise ConfigError("give --agents or --preset, not both")
    preset = args.preset or ("quick" if args.quick else "full")
    if args.agents:
        agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    else:
        agents = list(PRESETS[preset])
        log_line(
            f"preset {preset}: {len(agents)} agents x {args.seeds} seed(s)"
            + (f"; for 5 seeds on 2 cores {PRESET_TIMES[preset]}" if not args.quick else ""),
            not args.quiet,
        )
    return {
        "env_id": args.env or PRESET_ENVS.get(args.preset, DEFAULT_ENV),
        "env_kwargs": parse_env_kwargs(args.env_kwarg),
        "agents": agents,
        "seeds": args.seeds,
        "requests": args.requests if args.requests is not None else 500,
        "permutations": args.permutations,
        "beam_width": args.beam_width,
        "budget": args.budget or ("quick" if args.quick else "full"),
        "out": args.out,
        "name": args.name,
        "overwrite": args.overwrite,
        "resume": args.resume,
        "device": args.device,
        "progress": not args.quiet,
        "backend": args.backend or ("local" if args.device.startswith("cuda") else "processes"),
        "ray_options": ray_options_from(args),
        "workers": args.workers,
        "reference": args.reference,
    }


def _handle(args: argparse.Namespace) -> int:
    folder = run_compare(**compare_kwargs(args))
    # sentences wrapped to the terminal (at most 100 columns), or 100 in a pipe or file
    width = min(100, shutil.get_terminal_size((100, 24)).columns) if sys.stdout.isatty() else 100
    print(results_text(folder, full=args.full_table, width=width), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    """``python -m agents.compare``'s parser."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.compare",
        description=_description(),
        formatter_class=HelpFormatter,
    )
    configure(parser)
    parser.set_defaults(handler=_handle, command="compare")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.compare``: the same as ``rerank-env compare``."""
    return run_handler(_parser().parse_args(sys.argv[1:] if argv is None else argv))
