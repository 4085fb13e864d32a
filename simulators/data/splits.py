"""k-core filtering, logged slates and the train / valid / test split (steps 2-4).

See :mod:`simulators.data.pipeline` for the steps in order and ``docs/data.md``
for the choices.
"""

from __future__ import annotations

import numpy as np

from simulators.data.errors import ConfigError
from simulators.data.pipeline_config import PipelineConfig

SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = 0, 1, 2


def split_code(split: str) -> int:
    """The code (0 train, 1 valid, 2 test) of a split name."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return SPLITS.index(split)


def k_core_mask(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Return the mask of ratings kept by iterative k-core filtering.

    Users and items with fewer than ``k`` kept ratings are removed until every
    remaining user and item has at least ``k``.
    """
    keep = np.ones(len(user), dtype=bool)
    while True:
        user_counts = np.bincount(user[keep], minlength=int(user.max()) + 1)
        item_counts = np.bincount(item[keep], minlength=int(item.max()) + 1)
        still = keep & (user_counts[user] >= k) & (item_counts[item] >= k)
        if still.sum() == keep.sum():
            return keep
        keep = still


def mix_hash(user: np.ndarray, item: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random uint64 per (user, item, seed) (splitmix64 finaliser)."""
    x = user.astype(np.uint64) * np.uint64(0x100000001B3) ^ item.astype(np.uint64)
    x = x + np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def slates_and_split(
    offsets: np.ndarray, time: np.ndarray, config: PipelineConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each user's sequence into slates and assign every slate a split.

    Returns:
        ``(slate_user, slate_pos, slate_split, interaction_split)``.
    """
    length = config.slate_length
    n_users = len(offsets) - 1
    counts = np.diff(offsets)
    n_slates = counts // length
    if n_slates.sum() == 0:
        raise ConfigError(
            f"no user has slate_length={length} ratings (after k-core); lower slate_length"
        )
    if config.split == "user" and (n_slates >= 3).sum() == 0:
        raise ConfigError(
            f"no user has the 3 slates of slate_length={length} that a train/valid/test "
            "split per user needs; lower slate_length or use split='global'"
        )
    slate_user = np.repeat(np.arange(n_users), n_slates)
    # Slate j of a user starts at j * L: the cut never depends on later ratings.
    rank = np.arange(len(slate_user)) - np.repeat(np.cumsum(n_slates) - n_slates, n_slates)
    slate_pos = rank * length

    if config.split == "user":
        n_test = np.maximum(1, np.round(config.test_fraction * n_slates)).astype(np.int64)
        n_valid = np.maximum(1, np.round(config.valid_fraction * n_slates)).astype(np.int64)
        too_few = n_slates - n_test - n_valid < 1
        n_test[too_few] = 0
        n_valid[too_few] = 0
        from_end = np.repeat(n_slates, n_slates) - 1 - rank  # 0 for the user's last slate
        slate_split = np.full(len(slate_user), TRAIN, dtype=np.int8)
        slate_split[from_end < np.repeat(n_test + n_valid, n_slates)] = VALID
        slate_split[from_end < np.repeat(n_test, n_slates)] = TEST
        # Ratings after a user's last slate belong to the user's last split.
        last_split = np.where(n_test > 0, TEST, TRAIN).astype(np.int8)
        interaction_split = np.repeat(last_split, counts)
        starts = offsets[slate_user] + slate_pos
        for offset in range(length):
            interaction_split[starts + offset] = slate_split
    else:
        slate_end_time = time[offsets[slate_user] + slate_pos + length - 1]
        cut_valid, cut_test = np.quantile(
            slate_end_time,
            [1 - config.valid_fraction - config.test_fraction, 1 - config.test_fraction],
            method="lower",
        )
        slate_split = np.where(
            slate_end_time <= cut_valid, TRAIN, np.where(slate_end_time <= cut_test, VALID, TEST)
        ).astype(np.int8)
        # Interactions are train only if no later than the train cut-off, so nothing
        # after it (from any user) reaches the retriever or any model fitted on train.
        interaction_split = np.where(
            time <= cut_valid, TRAIN, np.where(time <= cut_test, VALID, TEST)
        ).astype(np.int8)
        starts = offsets[slate_user] + slate_pos
        for offset in range(length):
            # A slate that straddles a cut-off belongs to its later split as a whole.
            interaction_split[starts + offset] = np.maximum(
                interaction_split[starts + offset], slate_split
            )
    return slate_user, slate_pos.astype(np.int64), slate_split, interaction_split
