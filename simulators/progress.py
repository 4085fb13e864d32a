"""Progress for long work: a tqdm bar on a terminal, timestamped log lines elsewhere.

A tqdm bar redraws one line with carriage returns, which is unreadable in a log
file and, piped (``rerank-env compare | tee log``), shows nothing for minutes. So
when stderr is not a terminal, :func:`progress_bar` returns a :class:`LogProgress`
instead: the same calls (``update``, ``set_postfix``, ``set_description``,
``close``, iteration, ``with``) written as one flushed line when a phase starts, at
most every ``interval`` seconds while it advances, and when it ends::

    [11:52:01] PRM: started, 0/40
    [11:52:11] PRM: 17/40 (42%), 10 s, loss=0.412
    [11:52:25] PRM: done, 40/40 in 24 s, loss=0.398

Every layer uses it (the data pipeline, simulator fitting, the agents' trainers).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

#: Seconds between two log lines of an advancing phase (the issue's bound is 30 s).
LOG_INTERVAL_S = 10.0


class LogProgress:
    """tqdm's interface as timestamped log lines (see the module docstring).

    Args:
        iterable: Iterate over it, counting one step per item (as ``tqdm(iterable)``).
        total: Steps of the phase (``None``: unknown; ``len(iterable)`` when it has one).
        description: Name of the phase at the start of every line.
        interval: Least seconds between two lines while the phase advances.
        stream: Where lines go (default ``sys.stderr`` at the time of writing).
        clock: Seconds for the interval and the elapsed time (tests pass a fake one).
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: int | None = None,
        description: str = "",
        *,
        interval: float = LOG_INTERVAL_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc = iterable, total, description
        self.n, self.postfix = 0, ""
        self.interval, self.stream, self.clock = interval, stream, clock
        self.start = self.last = clock()
        self.closed = False
        self._write(f"started, 0/{total}" if total is not None else "started")

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this LogProgress was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` steps; write a line when ``interval`` seconds passed since the last."""
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._write(self._position())

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **values: Any
    ) -> None:
        """Values shown at the end of the next lines (as tqdm's ``set_postfix``)."""
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{key}={_number(value)}" for key, value in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename the phase (later lines carry the new name)."""
        self.desc = desc or ""

    def close(self) -> None:
        """Write the phase's last line (once)."""
        if self.closed:
            return
        self.closed = True
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n} steps"
        self._write(f"done, {done} in {self.clock() - self.start:.0f} s")

    def _position(self) -> str:
        elapsed = f"{self.clock() - self.start:.0f} s"
        if not self.total:
            return f"{self.n} steps, {elapsed}"
        return f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%), {elapsed}"

    def _write(self, text: str) -> None:
        self.last = self.clock()
        suffix = f", {self.postfix}" if self.postfix else ""
        log_line(f"{self.desc}: {text}{suffix}", stream=self.stream)


def log_line(text: str, enabled: bool = True, *, stream: TextIO | None = None) -> None:
    """Write ``[HH:MM:SS] text`` to stderr (or ``stream``), flushed; above any tqdm bar."""
    if not enabled:
        return
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    if stream is None and _is_terminal(sys.stderr):
        tqdm.write(line, file=sys.stderr)  # keeps a running bar intact
    else:
        print(line, file=stream or sys.stderr, flush=True)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def progress_bar(
    total: int | None = None,
    description: str = "",
    enabled: bool = True,
    *,
    iterable: Iterable[Any] | None = None,
    leave: bool = False,
) -> tqdm | LogProgress:
    """Progress of one phase of work; nothing when ``enabled`` is false.

    A tqdm bar when stderr is a terminal (a widget in a Jupyter notebook),
    :class:`LogProgress` lines when it is not (a log file, a pipe, CI).

    Args:
        total: Steps of the phase (``None``: unknown, or ``len(iterable)``).
        description: Name of the phase.
        enabled: Whether to show anything.
        iterable: Iterate over it through the returned object (as ``tqdm(iterable)``).
        leave: Keep a terminal bar on screen after it closes.
    """
    if enabled and not (_is_terminal(sys.stderr) or _in_notebook()):
        return LogProgress(iterable, total, description)
    return tqdm(
        iterable,
        total=total,
        desc=description,
        disable=not enabled,
        leave=leave,
        dynamic_ncols=True,
    )


def _in_notebook() -> bool:
    """Inside a Jupyter kernel, where ``tqdm.auto`` draws a widget."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
