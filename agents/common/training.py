"""Pieces every trained agent's loop shares: mini-batches, gradient steps, RNG guards.

Progress bars are :func:`simulators.progress.progress_bar` (every layer uses them).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from agents.common.telemetry import grad_norm


def minibatches(
    rows: np.ndarray, size: int, generator: np.random.Generator
) -> Iterator[np.ndarray]:
    """``rows`` shuffled by ``generator`` and cut into batches of at most ``size``."""
    order = generator.permutation(rows)
    for start in range(0, len(order), size):
        yield order[start : start + size]


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) global random state on exit.

    For third-party code that seeds or draws from global generators (Stable-Baselines3
    seeds all of them): the caller's global state is left as it was.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)  # noqa: NPY002


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


def gradient_step(
    optimiser: torch.optim.Optimizer, loss: torch.Tensor, parameters: list[torch.nn.Parameter]
) -> float:
    """One optimiser step on ``loss``; returns the gradient norm it stepped with (for the log).

    ``zero_grad``, ``backward``, the global L2 norm of ``parameters``' gradients
    (unchanged: no clipping), ``step``.
    """
    optimiser.zero_grad()
    loss.backward()
    norm = grad_norm(parameters)
    optimiser.step()
    return norm
