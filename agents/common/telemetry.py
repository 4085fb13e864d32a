"""The training logger every trainer uses: one row per update, to CSV and TensorBoard.

A trainer calls :meth:`TrainingLogger.log` once per optimiser step (or epoch) with
what it measured: losses, entropy, approximate KL and clip fraction where they
apply, gradient norm, reward, and simulator (or reward-model) calls so far; and
once per evaluation (the learning-curve points). Rows go to the agent's
``history`` (saved in checkpoints), and, when the agent has a ``log_dir``, to
``log_dir/curves.csv`` and to TensorBoard event files in ``log_dir`` (when the
``tensorboard`` package is installed: ``pip install -e ".[tensorboard]"``).

Every row has ``stage`` (which model or phase: ``"generator"``, ``"evaluator"``,
``"reward_model"``, ...) and ``step`` (the stage's update count). Metric names are
fixed across trainers so curves compare: ``loss``, ``entropy``, ``approx_kl``,
``clip_fraction``, ``grad_norm``, ``reward``, ``simulator_calls``, ``valid_reward``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> float:
    """The global L2 norm of the parameters' gradients (after ``backward``), unchanged."""
    norms = [p.grad.detach().norm() for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)).item() if norms else 0.0


def tensorboard_writer(folder: Path) -> Any | None:
    """A TensorBoard ``SummaryWriter`` on ``folder``, or ``None`` without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra is not installed
        return None
    return SummaryWriter(str(folder))


def write_rows_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as a CSV with the union of their keys as columns (first-seen order).

    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or ["step"], restval="")
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)
    return path


class TrainingLogger:
    """Appends training rows to ``history``; mirrors them to ``log_dir`` when given.

    Args:
        history: The list rows are appended to (the agent's ``history``).
        log_dir: Folder for ``curves.csv`` and TensorBoard events; ``None``: in memory only.
        flush_every: Write ``curves.csv`` every this many rows (and on :meth:`close`).
        curve_x: The learning curve's x key (e.g. ``"evaluator_calls"``): TensorBoard
            plots ``"curve"`` rows against it instead of their step.
    """

    def __init__(
        self,
        history: list[dict[str, Any]],
        log_dir: str | Path | None = None,
        *,
        flush_every: int = 100,
        curve_x: str | None = None,
    ) -> None:
        self.history = history
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.flush_every = flush_every
        self.curve_x = curve_x
        # A second logger on the same history (a later training stage) continues each
        # stage's step count instead of repeating its step numbers.
        self._steps: dict[str, int] = {}
        for row in history:
            self._steps[row["stage"]] = max(self._steps.get(row["stage"], 0), int(row["step"]))
        self._unflushed = 0
        self._written = 0  # rows of history already in curves.csv
        self._columns: list[str] = []
        self._writer = None
        # The folder, curves.csv and TensorBoard events are made by the first row: a
        # trainer with nothing to log leaves no files.
        self._opened = False

    def log(self, stage: str, *, step: int | None = None, **values: float) -> dict[str, Any]:
        """Record one row of ``stage`` and return it.

        Args:
            stage: The model or phase the values belong to.
            step: The stage's step; default one more than its last logged step.
            **values: Numbers (tensors are converted with ``.item()``).
        """
        if self.log_dir is not None and not self._opened:
            self._opened = True
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tensorboard_writer(self.log_dir)
        step = self._steps.get(stage, 0) + 1 if step is None else int(step)
        self._steps[stage] = step
        row: dict[str, Any] = {"stage": stage, "step": step}
        for key, value in values.items():
            row[key] = value.item() if torch.is_tensor(value) else value
        self.history.append(row)
        if self._writer is not None:
            x = row.get(self.curve_x) if stage == "curve" and self.curve_x else None
            step = int(x) if isinstance(x, (int, float)) else step
            for key, value in row.items():
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                if key not in ("stage", "step") and numeric and not math.isnan(value):
                    self._writer.add_scalar(f"{stage}/{key}", value, step)
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self.flush()
        return row

    def flush(self) -> None:
        """Write ``curves.csv`` (all rows so far) and flush TensorBoard."""
        self._unflushed = 0
        if self.log_dir is None or not self._opened:
            return
        path = self.log_dir / "curves.csv"
        new_rows = self.history[self._written :]
        columns = list(dict.fromkeys([*self._columns, *(k for row in new_rows for k in row)]))
        if columns == self._columns and path.exists():  # same header: append the new rows
            with path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=columns, restval="").writerows(new_rows)
        else:  # a new column: rewrite the file with the wider header
            write_rows_csv(path, self.history)
        self._columns, self._written = columns, len(self.history)
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and release the TensorBoard writer."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def tensorboard(self) -> bool:
        """Whether TensorBoard events are being written."""
        return self._writer is not None
