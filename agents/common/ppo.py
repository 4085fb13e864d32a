"""PPO's clipped update, written once: PolicyGradient, GloRank and GR2 call it.

A trainer samples sequences (lists, token sequences), scores them, computes their
advantages (and, with a critic, its targets), then calls :func:`ppo_update` for
``epochs`` passes of clipped-surrogate steps over shuffled minibatches. What differs
between trainers is how the policy evaluates a minibatch: a callback returns a
:class:`PolicyEvaluation` (step log-probabilities, entropies, the critic's values,
a padding mask). The settings have one name everywhere: ``clip_low``,
``clip_high``, ``entropy_coef``, ``value_coef``, ``minibatch_size``, ``group_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from agents.common.distributed import DataParallel
from agents.common.losses import clipped_surrogate_loss
from agents.common.training import gradient_step, minibatches, training_mode

#: The diagnostics :func:`ppo_update` returns (means over its gradient steps).
PPO_STATS = ("loss", "value_loss", "entropy", "kl", "approx_kl", "clip_fraction", "grad_norm")


@dataclass(frozen=True)
class PolicyEvaluation:
    """The current policy on a minibatch of sampled sequences (``m`` rows, ``T`` steps).

    Attributes:
        log_probs: Log-probability of each sampled step ``[m, T]``.
        entropy: The policy's entropy at each step ``[m, T]``.
        values: The critic's values ``[m, T]`` (regressed on ``returns``), or ``None``.
        mask: Which steps count, bool ``[m, T]`` (right-padded sequences), or ``None``.
    """

    log_probs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def ppo_update(
    evaluate: Callable[[np.ndarray], PolicyEvaluation],
    old_log_probs: torch.Tensor,
    advantage: torch.Tensor,
    *,
    optimiser: torch.optim.Optimizer,
    parameters: list[torch.nn.Parameter],
    modules: Sequence[torch.nn.Module],
    rng: np.random.Generator,
    epochs: int,
    minibatch_size: int,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    token_level: bool = False,
    entropy_coef: float = 0.0,
    returns: torch.Tensor | None = None,
    value_coef: float = 0.5,
    reference_log_probs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    group_size: int = 1,
    parallel: DataParallel | None = None,
) -> dict[str, float]:
    """``epochs`` passes of PPO's clipped-surrogate steps over one batch of samples.

    Each pass shuffles the groups (``rng``) and cuts them into minibatches of
    ``minibatch_size`` rows; each minibatch is one optimiser step on

    ``surrogate - entropy_coef * entropy + value_coef * value_loss + kl_coef * kl``

    (the value term with ``returns`` only, the KL term with ``reference_log_probs``
    only: GRPO's k3 estimate of ``KL(pi || pi_ref)`` on the sampled steps).

    Args:
        evaluate: The current policy on the given rows (int ``[m]``, into the batch),
            called with gradients on and ``modules`` in training mode.
        old_log_probs: Log-probabilities under the sampling policy ``[M, T]``; a
            narrower (right-padded) evaluation uses its first columns.
        advantage: ``[M, T]``, or ``[M]`` (one per sequence).
        optimiser: Steps ``parameters``.
        parameters: What the gradient norm is measured over.
        modules: Put in training mode for each step, evaluation mode after.
        rng: Shuffles the minibatches.
        epochs: Passes over the batch.
        minibatch_size: Rows per gradient step (a multiple of ``group_size``).
        clip_low: PPO's clip range below 1.
        clip_high: Above 1; ``None`` for ``clip_low`` (DAPO's clip-higher: 0.28).
        token_level: Average the surrogate over all unmasked steps (DAPO) instead of
            per sequence.
        entropy_coef: Weight of the entropy bonus.
        returns: The critic's targets ``[M, T]``; ``None``: no critic.
        value_coef: Weight of the critic's squared error.
        reference_log_probs: Log-probabilities under a reference policy ``[M, T]``
            for a KL penalty; ``None``: none.
        kl_coef: Weight of the KL penalty.
        group_size: Rows that stay together (a request's lists when the policy
            encodes each request once): minibatches hold whole groups.
        parallel: Data-parallel training: each rank takes its share of every
            minibatch and the logged numbers are averaged over the ranks.

    Returns:
        The means over the steps of :data:`PPO_STATS` (``loss`` is the surrogate).

    Raises:
        ValueError: ``minibatch_size`` is not a positive multiple of ``group_size``,
            or the rows are not whole groups.
    """
    if minibatch_size < group_size or minibatch_size % group_size:
        raise ValueError(
            f"minibatch_size={minibatch_size} must be a positive multiple of "
            f"group_size={group_size} (minibatches hold whole groups)"
        )
    if len(old_log_probs) % group_size:
        raise ValueError(f"{len(old_log_probs)} rows are not whole groups of {group_size}")
    parallel = DataParallel() if parallel is None else parallel
    offsets = np.arange(group_size)
    rows: list[list[float]] = []
    for _ in range(epochs):
        groups = np.arange(len(old_log_probs) // group_size)
        for whole in minibatches(groups, minibatch_size // group_size, rng):
            share = whole[parallel.shard(len(whole), even=False)]
            # A rank's mean times its share's weight: the ranks' average is the minibatch's.
            weight = parallel.share_weight(len(share), len(whole))
            batch = (share[:, None] * group_size + offsets).reshape(-1)
            with training_mode(*modules):
                out = evaluate(batch)
                log_probs, mask = out.log_probs, out.mask
                width = log_probs.shape[1]
                surrogate, stats = clipped_surrogate_loss(
                    log_probs,
                    old_log_probs[batch][:, :width],
                    advantage[batch].to(log_probs.dtype),
                    mask=mask,
                    clip_low=clip_low,
                    clip_high=clip_high,
                    token_level=token_level,
                )
                loss = surrogate
                if entropy_coef:
                    loss = loss - entropy_coef * _mean(out.entropy, mask)
                value_loss = torch.zeros(())
                if returns is not None:
                    if out.values is None:
                        raise ValueError("returns were given but evaluate() gave no values")
                    value_loss = (out.values - returns[batch]).pow(2).mean()
                    loss = loss + value_coef * value_loss
                kl = torch.zeros(())
                if reference_log_probs is not None:
                    delta = reference_log_probs[batch][:, :width] - log_probs
                    kl = _mean(delta.exp() - delta - 1, mask)
                    loss = loss + kl_coef * kl
                norm = gradient_step(optimiser, loss * weight, parameters)
            entropy = (
                out.entropy.mean().item()
                if mask is None
                else (out.entropy * mask).sum().item() / mask.sum().item()
            )
            values = [
                surrogate.item(),
                value_loss.item(),
                entropy,
                kl.item(),
                stats.approx_kl,
                stats.clip_fraction,
            ]
            rows.append([parallel.mean(v * weight) for v in values] + [norm])
    return dict(zip(PPO_STATS, np.mean(rows, axis=0).tolist(), strict=True))


def _mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over the steps ``mask`` keeps (all without a mask)."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1)
