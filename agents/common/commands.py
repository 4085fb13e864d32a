"""Running a command-line handler: user errors as one line and exit code 2.

Shared by ``rerank-env`` (:mod:`agents.cli`) and ``python -m agents.compare``, so
neither imports the other.
"""

from __future__ import annotations

import argparse
import sys

from simulators.checkpoint import CheckpointError
from simulators.data.errors import ConfigError, DataError


def run_handler(args: argparse.Namespace) -> int:
    """``args.handler(args)``; expected user errors print one line and return 2.

    Anything else is a bug and keeps its traceback.
    """
    try:
        return int(args.handler(args))
    except (DataError, ConfigError, CheckpointError) as err:
        print(f"rerank-env {args.command}: error: {err}", file=sys.stderr)
        return 2
