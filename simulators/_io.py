"""File helpers shared by caches, checkpoints and bundles: atomic writes, checksums."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
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


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_folder(staging: Path, out: Path) -> None:
    """Move the finished ``staging`` folder to ``out``, replacing an older one.

    The old folder is renamed aside first and removed last, so ``out`` is at every
    moment either the old folder or the complete new one.
    """
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
