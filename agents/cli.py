"""The ``rerank-env`` command line.

Subcommands are added by the layer that owns them; this module only dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agents.common.commands import run_handler
from agents.compare import cli as compare_cli
from simulators import cli as simulator_cli
from simulators.cli_help import HelpFormatter
from simulators.data import cli as data_cli
from simulators.data.cache import package_version


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``rerank-env``."""
    parser = argparse.ArgumentParser(
        prog="rerank-env",
        description="Slate-reranking environments, click simulators and rerankers.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cli.add_parser(subparsers)
    simulator_cli.add_parser(subparsers)
    compare_cli.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rerank-env``; returns the process exit code."""
    parser = build_parser()
    return run_handler(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
