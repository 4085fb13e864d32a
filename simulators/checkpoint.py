"""Versioned, atomic simulator checkpoints.

A checkpoint is one ``torch.save`` file holding the format version, the
:class:`~simulators.factory.SimulatorSpec`, the weights (``state_dict``, features
included) and metadata (training config, data checksum, metrics). It is loaded with
``weights_only=True`` (no arbitrary code runs) and rebuilt from the spec; a file of
another format version, or one that does not match its spec, is refused.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import torch

from simulators._io import atomic_torch_save
from simulators.base import ClickSimulator
from simulators.factory import SimulatorSpec, build_simulator

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A simulator checkpoint cannot be used (other version, corrupt, mismatched)."""


def save_simulator(
    path: str | Path, model: ClickSimulator, spec: SimulatorSpec, metadata: dict[str, Any]
) -> Path:
    """Write ``model`` and its ``spec`` to ``path`` atomically; returns the path.

    Args:
        path: Destination file.
        model: The fitted simulator (built from ``spec``).
        spec: Its architecture.
        metadata: JSON-like extras: training config, data checksum, metrics.
    """
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "spec": spec.to_dict(),
        "state_dict": {name: t.detach().cpu() for name, t in model.state_dict().items()},
        "metadata": {
            **metadata,
            "saved_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    return atomic_torch_save(path, payload)


def load_simulator(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ClickSimulator, SimulatorSpec, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_simulator`.

    Returns:
        ``(model, spec, metadata)``; the model is in eval mode on ``device``.

    Raises:
        CheckpointError: Unreadable file, other format version, or weights that do not
            fit the spec.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises many types for a damaged file
        # torch's own message suggests weights_only=False, which would run arbitrary
        # code from the file: never do that; say what is wrong instead.
        raise CheckpointError(
            f"cannot read simulator checkpoint {path}: the file is damaged or not a "
            f"rerank-env checkpoint ({type(err).__name__}). Retrain it "
            "(rerank-env simulator train ...)"
        ) from err
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this rerank-env reads version "
            f"{CHECKPOINT_FORMAT_VERSION}. Retrain it with this version "
            "(rerank-env simulator train ...)"
        )
    try:
        spec = SimulatorSpec(**payload["spec"])
        model = build_simulator(spec)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} does not match its own spec: {err}") from err
    return model.to(device).eval(), spec, payload.get("metadata", {})
