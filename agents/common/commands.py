"""What the command lines share: the task they run on, ``KEY=VALUE`` options, errors.

Shared by ``rerank-env`` (:mod:`agents.cli`), ``python -m agents.compare``,
``python -m agents.train`` and the benchmarks, so none imports another.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from typing import Any

from rerank_env.config import TaskConfig
from rerank_env.task import RerankTask, make_task
from simulators.checkpoint import CheckpointError
from simulators.data.errors import ConfigError, DataError

#: The environment a command runs on when ``--env`` is not given.
DEFAULT_ENV = "SlateRerank-v0"


def command_task(
    env_id: str, env_kwargs: dict[str, Any] | None = None, device: str = "cpu"
) -> RerankTask:
    """The task behind ``gym.make(env_id, **env_kwargs)``, on ``device``.

    Raises:
        ConfigError: ``device`` among ``env_kwargs`` (the command's ``--device`` sets
            it), or what :meth:`~rerank_env.config.TaskConfig.for_env` refuses.
    """
    if "device" in (env_kwargs or {}):
        raise ConfigError(
            "the task's device is not an environment keyword argument here: use --device "
            "(device= in Python)"
        )
    return make_task(TaskConfig.for_env(env_id, env_kwargs), device=device)


def parse_env_kwargs(items: Sequence[str], option: str = "--env-kwarg") -> dict[str, Any]:
    """``["num_candidates=20", "simulator='pbm'"]`` -> dict (values as Python literals).

    ``option`` names the command-line option in the error message.
    """
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {item!r} must look like KEY=VALUE, e.g. num_candidates=20")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value  # a bare word: a string
    return kwargs


def evaluation_split(
    parser: argparse.ArgumentParser, split: str | None, *, chooses: bool, what: str
) -> str:
    """The split a benchmark study evaluates on: ``split``, or ``valid`` / ``test`` by default.

    A study that chooses a setting (``chooses``) runs on validation requests and is
    refused the test split, which is read only to report; the others default to
    ``test``. ``what`` names the study in the error (e.g. ``"the temperature study"``).
    """
    if split is None:
        return "valid" if chooses else "test"
    if chooses and split == "test":
        parser.error(
            f"{what} chooses a setting, and settings are chosen on validation requests only "
            "(the test split is read only to report): run it with --split valid"
        )
    return split


def run_handler(args: argparse.Namespace) -> int:
    """``args.handler(args)``; expected user errors print one line and return 2.

    Anything else is a bug and keeps its traceback.
    """
    try:
        return int(args.handler(args))
    except (DataError, ConfigError, CheckpointError) as err:
        print(f"rerank-env {args.command}: error: {err}", file=sys.stderr)
        return 2
