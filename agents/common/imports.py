"""Whether naming a class may import its module: refused while a checkpoint loads.

A checkpoint is read with ``weights_only=True`` so that no code in the file runs;
the agent specs inside it (a generator-evaluator's generators, GoalRank's auxiliary
policies) name classes by entry point, and importing an arbitrary module named by a
file would undo that. While :func:`checkpoint_loading` is active, specs may only
name modules of this package or modules already imported (import your own
package before loading a checkpoint that refers to it).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_LOADING = contextvars.ContextVar("rerank_env_checkpoint_loading", default=False)


def imports_allowed() -> bool:
    """False while a checkpoint is being loaded."""
    return not _LOADING.get()


@contextlib.contextmanager
def checkpoint_loading() -> Iterator[None]:
    """Within: specs may not import modules outside ``agents`` (see the module docstring)."""
    token = _LOADING.set(True)
    try:
        yield
    finally:
        _LOADING.reset(token)
