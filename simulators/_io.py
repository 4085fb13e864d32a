"""Atomic file writes shared by caches and checkpoints."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(handle)`` atomically.

    The content goes to a temporary file in the same folder, is flushed to disk, then
    renamed over ``path``: readers see the old file or the complete new one, and an
    interrupted write leaves no partial file behind. The file is readable by all
    (mode 0644, as a plain ``open`` would make it), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_torch_save(path: str | Path, payload: Any) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (see :func:`atomic_write`); returns it."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = Path(path)
    atomic_write(path, lambda out: out.write(buffer.getvalue()))
    return path
