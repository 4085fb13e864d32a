"""Agent-owned randomness: per-request Gumbel noise and seeded torch generators.

No global random state: every draw comes from a generator seeded by the agent.
"""

from __future__ import annotations

import numpy as np
import torch


def request_gumbel(seed: int, requests: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Gumbel noise ``[B, *shape]`` whose row ``b`` depends only on ``(seed, requests[b])``.

    Sampling agents draw from it so that a request's lists do not depend on which
    other requests share the batch (batch and step-wise ranking then agree).
    """
    noise = np.empty((len(requests), *shape))
    for row, request in enumerate(np.asarray(requests)):
        uniform = np.random.default_rng((int(seed), int(request))).random(shape)
        noise[row] = -np.log(-np.log(np.clip(uniform, 1e-12, 1 - 1e-12)))
    return noise


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded ``seed`` (agents own their randomness)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
