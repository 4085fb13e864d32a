"""Action spaces whose ``sample()`` only draws valid actions.

Both are plain Gymnasium spaces to every consumer (``isinstance`` ``Discrete`` /
``MultiDiscrete``, same ``contains``, same ``n`` / ``nvec``), so Stable-Baselines3 and
wrappers treat them as usual. Only the default of ``sample()`` differs: a random
agent written as ``env.action_space.sample()`` never picks an item twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


class MaskedDiscrete(spaces.Discrete):
    """``Discrete(n)`` whose ``sample()`` defaults to the environment's current mask.

    Args:
        n: Number of actions.
        mask: The environment's live action mask (int8 ``[n]``, 1 = valid); the
            environment updates it in place. ``sample(mask=...)`` still overrides it.
        seed: Seed of the space's own generator.
    """

    def __init__(self, n: int, mask: np.ndarray, seed: int | None = None) -> None:
        super().__init__(n, seed=seed)
        self.live_mask = mask

    def sample(self, mask: Any = None, probability: Any = None) -> np.int64:
        """A valid action drawn uniformly (or from ``mask`` / ``probability`` if given)."""
        if mask is None and probability is None and self.live_mask.any():
            mask = self.live_mask.astype(np.int8)
        return super().sample(mask=mask, probability=probability)

    def __repr__(self) -> str:
        return f"MaskedDiscrete({self.n})"


class MaskedMultiDiscrete(spaces.MultiDiscrete):
    """The vector environment's ``MultiDiscrete([n] * num_envs)`` with masked sampling.

    Args:
        n: Actions per sub-environment.
        mask: The live masks, int8 ``[num_envs, n]``, updated in place by the env.
        seed: Seed of the space's own generator.
    """

    def __init__(self, n: int, mask: np.ndarray, seed: int | None = None) -> None:
        super().__init__(np.full(len(mask), n, dtype=np.int64), seed=seed)
        self.live_mask = mask

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A valid action for every sub-environment (unless ``mask`` is given)."""
        if mask is None and probability is None:
            mask = tuple(row.astype(np.int8) for row in self.live_mask)
        return super().sample(mask=mask, probability=probability)

    def __repr__(self) -> str:
        return f"MaskedMultiDiscrete({len(self.nvec)} x {int(self.nvec[0])})"


class Permutation(spaces.MultiDiscrete):
    """Ordered lists of ``length`` distinct values from ``0 .. n-1``.

    A ``MultiDiscrete([n] * length)`` whose ``contains`` also requires distinct
    values and whose ``sample()`` draws without replacement.
    """

    def __init__(self, n: int, length: int, seed: int | None = None) -> None:
        if length > n:
            raise ValueError(f"a permutation of length {length} needs n >= {length}, got n = {n}")
        super().__init__(np.full(length, n, dtype=np.int64), seed=seed)
        self.n = n
        self.length = length

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """``length`` distinct values in random order."""
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        return self.np_random.permutation(self.n)[: self.length].astype(self.dtype)

    def contains(self, x: Any) -> bool:
        """In ``MultiDiscrete`` and no value repeated."""
        return bool(super().contains(x) and len(np.unique(np.asarray(x))) == self.length)

    def __repr__(self) -> str:
        return f"Permutation(n={self.n}, length={self.length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Permutation) and (other.n, other.length) == (self.n, self.length)
