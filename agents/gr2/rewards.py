"""GR2's verifiable rewards, DAPO's shaping and dynamic sampling, reward-hacking diagnostics.

All take numpy or torch arrays of whole groups and are written for batches:

* :func:`rank_reward`: ``R_rank = (rank_pre(x*) - rank_post(x*)) / K``, ranks 1-based;
* :func:`format_reward`: ``alpha * R_fmt``, conditional (only when the true item
  moved up or was already first, GR2's fix) or unconditional;
* :func:`overlong_penalty`: DAPO's soft overlong punishment of the reasoning length;
* :func:`informative_groups`: dynamic sampling's filter (groups whose rewards are
  not all equal);
* :func:`order_diagnostics`: how much the outputs copy the input order.
"""

from __future__ import annotations

import numpy as np

FORMAT_MODES = ("conditional", "unconditional", "none")


def rank_reward(pre_rank: np.ndarray, post_rank: np.ndarray, k: int) -> np.ndarray:
    """``(rank_pre - rank_post) / K``: positive when the true item moved up."""
    return (np.asarray(pre_rank, dtype=np.float64) - np.asarray(post_rank)) / k


def format_reward(
    rank: np.ndarray, pre_rank: np.ndarray, well_formed: np.ndarray, alpha: float, mode: str
) -> np.ndarray:
    """The format term added to :func:`rank_reward`.

    Args:
        rank: ``R_rank`` of each output.
        pre_rank: The true item's 1-based rank in the input.
        well_formed: Whether each output follows the format (``R_fmt`` in {0, 1}).
        alpha: Weight of ``R_fmt``.
        mode: ``"conditional"``: ``alpha * R_fmt`` only if ``R_rank > 0`` or the item
            was already first; ``"unconditional"``: always; ``"none"``: 0.

    Raises:
        ValueError: ``mode`` is not one of :data:`FORMAT_MODES`.
    """
    bonus = alpha * np.asarray(well_formed, dtype=np.float64)
    if mode == "unconditional":
        return bonus
    if mode == "conditional":
        earned = (np.asarray(rank) > 0) | (np.asarray(pre_rank) == 1)
        return np.where(earned, bonus, 0.0)
    if mode == "none":
        return np.zeros_like(bonus)
    raise ValueError(f"format reward mode must be one of {FORMAT_MODES}, got {mode!r}")


def overlong_penalty(lengths: np.ndarray, max_length: int, cache: int) -> np.ndarray:
    """DAPO's soft overlong punishment: 0 up to ``max_length - cache``, then to -1 at L_max.

    ``((max_length - cache) - length) / cache`` inside the last ``cache`` tokens, -1
    beyond; ``cache = 0`` gives -1 past ``max_length`` only.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    if cache == 0:
        return np.where(lengths > max_length, -1.0, 0.0)
    free = max_length - cache
    return np.clip((free - lengths) / cache, -1.0, 0.0)


def informative_groups(rewards: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
    """Groups (rows of ``[B, G]`` rewards) that are not all equal, bool ``[B]``.

    A group whose samples all earn the same reward has zero group-relative
    advantage everywhere: DAPO's dynamic sampling drops it and samples others.
    """
    rewards = np.asarray(rewards)
    return (rewards.max(axis=1) - rewards.min(axis=1)) > tolerance


def kendall_tau_to_input(rankings: np.ndarray) -> np.ndarray:
    """Kendall's tau between each ranking (positions ``[M, K]``) and the input order."""
    rankings = np.asarray(rankings)
    k = rankings.shape[1]
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    concordant = (rankings[:, :, None] < rankings[:, None, :])[:, upper].sum(axis=1)
    pairs = k * (k - 1) / 2
    return (2 * concordant - pairs) / pairs


def order_diagnostics(
    rankings: np.ndarray, target_pos: np.ndarray, well_formed: np.ndarray
) -> dict[str, float]:
    """Reward-hacking diagnostics of outputs (positions ``[M, K]``).

    Returns:
        ``copy_share`` (outputs identical to the input order), ``kendall_tau`` (to
        the input order, mean), ``target_rank_before`` / ``target_rank_after`` (the
        true item's mean 1-based rank), ``format_breaks`` (share not well formed).
    """
    rankings = np.asarray(rankings)
    identity = np.arange(rankings.shape[1])
    after = (rankings == np.asarray(target_pos)[:, None]).argmax(axis=1) + 1
    return {
        "copy_share": float((rankings == identity).all(axis=1).mean()),
        "kendall_tau": float(kendall_tau_to_input(rankings).mean()),
        "target_rank_before": float(np.mean(np.asarray(target_pos) + 1)),
        "target_rank_after": float(after.mean()),
        "format_breaks": float(1 - np.mean(well_formed)),
    }
