"""Pieces every trained agent's loop shares: mini-batches, progress bars, threads."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm


def minibatches(
    rows: np.ndarray, size: int, generator: np.random.Generator
) -> Iterator[np.ndarray]:
    """``rows`` shuffled by ``generator`` and cut into batches of at most ``size``."""
    order = generator.permutation(rows)
    for start in range(0, len(order), size):
        yield order[start : start + size]


def progress_bar(total: int, description: str, enabled: bool) -> tqdm:
    """A tqdm bar over ``total`` steps, shown only when enabled and on a terminal."""
    return tqdm(
        total=total,
        desc=description,
        disable=not enabled or not sys.stderr.isatty(),
        leave=False,
        dynamic_ncols=True,
    )


@contextlib.contextmanager
def training_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Modules in train mode with gradients on inside, eval mode after."""
    for module in modules:
        module.train()
    try:
        with torch.enable_grad():
            yield
    finally:
        for module in modules:
            module.eval()
