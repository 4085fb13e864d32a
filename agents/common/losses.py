"""Returns, advantages and policy-gradient losses, written once for every trainer.

Lists are sampled in groups: ``S`` lists per request in consecutive rows
(``[B * S, ...]``) or as ``[B, G]`` group tensors. What is here:

* credit: :func:`slot_returns` (every slot gets the list reward, ``"sparse"``, or its
  reward-to-go, ``"dense"``), :func:`generalized_advantages` (GAE with a critic);
* baselines: :func:`group_baseline` (the group mean, or leave-one-out as in RLOO),
  :func:`advantages` (both together, as Seq2Slate and DeGRe's sparse ablation use
  them), :func:`group_relative_advantages` (standardised within the group, GRPO /
  DAPO);
* losses: :func:`reinforce_loss`; :func:`reference_policy` and :func:`group_loss`
  (GoalRank's group-relative reference policy); :func:`clipped_surrogate_loss`
  (PPO's clipped ratio, with DAPO's asymmetric clip-higher and token-level
  normalisation as options), which returns the diagnostics a PPO-style trainer
  logs (clip fraction, approximate KL).

GloRank's PPO and GR2's DAPO extend these rather than writing their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Credit = Literal["sparse", "dense"]
Baseline = Literal["mean", "leave-one-out"]


def slot_returns(prefix_values: torch.Tensor, credit: Credit) -> torch.Tensor:
    """What each slot is credited with, ``[M, L]``.

    Args:
        prefix_values: Reward of every prefix of each list ``[M, L]`` (a top-down
            simulator's expected clicks of ``l_{1:t}``).
        credit: ``"sparse"``: every slot gets the list reward; ``"dense"``: slot ``t``
            gets its reward-to-go, the sum of the per-slot rewards from ``t`` on (the
            rewards of ``SlateRerankDense-v0``).
    """
    if credit == "sparse":
        return prefix_values[:, -1:].expand_as(prefix_values)
    if credit == "dense":
        step_rewards = torch.diff(
            prefix_values, dim=1, prepend=torch.zeros_like(prefix_values[:, :1])
        )
        return step_rewards.flip(1).cumsum(1).flip(1)
    raise ValueError(f"credit must be 'sparse' or 'dense', got {credit!r}")


def group_baseline(
    returns: torch.Tensor, samples: int, baseline: Baseline = "mean"
) -> torch.Tensor:
    """``returns`` minus a baseline from the same request's other samples.

    Args:
        returns: ``[B * S, ...]``, request ``b``'s ``S`` samples in consecutive rows.
        samples: S (at least 2).
        baseline: ``"mean"``: the group mean (includes the sample itself);
            ``"leave-one-out"``: the mean of the other ``S - 1`` samples (RLOO, an
            unbiased baseline; equals ``S / (S - 1)`` times the ``"mean"`` advantage).
    """
    if samples < 2:
        raise ValueError(f"a group baseline needs samples >= 2, got {samples}")
    if returns.shape[0] % samples:
        raise ValueError(f"{returns.shape[0]} rows are not whole groups of {samples} samples")
    grouped = returns.reshape(-1, samples, *returns.shape[1:])
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if baseline == "leave-one-out":
        centred = centred * (samples / (samples - 1))
    elif baseline != "mean":
        raise ValueError(f"baseline must be 'mean' or 'leave-one-out', got {baseline!r}")
    return centred.reshape_as(returns)


def advantages(
    prefix_values: torch.Tensor, samples: int, credit: Credit, baseline: Baseline = "mean"
) -> torch.Tensor:
    """Per-slot advantages of ``samples`` lists per request, ``[B * S, L]``.

    :func:`slot_returns` with ``credit`` minus the request's :func:`group_baseline`
    (per slot: the dense baseline at ``t`` is the group's mean reward-to-go at ``t``).
    """
    return group_baseline(slot_returns(prefix_values, credit), samples, baseline)


def group_relative_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(R - mean_G R) / (std_G R + eps)`` within each group, ``[B, G]`` (GRPO, DAPO)."""
    mean = rewards.mean(dim=1, keepdim=True)
    return (rewards - mean) / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)


def reinforce_loss(log_probs: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """``-mean_lists sum_t A_t log pi(a_t)``: REINFORCE with per-slot advantages.

    Args:
        log_probs: Log-probability of each step of each list ``[M, L]``.
        advantage: Per-slot advantages ``[M, L]`` (no gradient flows into them).
    """
    return -(advantage.detach() * log_probs).sum(dim=1).mean()


def reference_policy(rewards: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``pi_ref(l | B)``: softmax over each group of its standardised rewards, ``[B, G]``.

    GoalRank's group-relative reference policy.

    Args:
        rewards: Reward of each list of each group ``[B, G]``.
        temperature: tau; lower puts more mass on the group's best lists.

    A group whose rewards are all equal gets the uniform distribution.
    """
    spread = rewards.std(dim=1, keepdim=True, unbiased=False)
    standardised = (rewards - rewards.mean(dim=1, keepdim=True)) / spread.clamp(min=1e-8)
    return torch.softmax(standardised / temperature, dim=1)


def group_loss(list_log_probs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``-sum_l pi_ref(l) log pi_theta(l)`` averaged over groups (GoalRank).

    Args:
        list_log_probs: ``log pi_theta(l | u)`` of each list ``[B, G]``.
        reference: ``pi_ref`` ``[B, G]`` (no gradient flows into it).
    """
    return -(reference.detach() * list_log_probs).sum(dim=1).mean()


@dataclass(frozen=True)
class SurrogateStats:
    """Diagnostics of a clipped surrogate loss (floats, for the training log).

    Attributes:
        clip_fraction: Share of (unmasked) steps whose ratio was clipped.
        approx_kl: ``E[(r - 1) - log r]``, the low-variance estimate of
            ``KL(pi_old || pi)`` (Schulman's k3).
        ratio_mean: Mean probability ratio.
    """

    clip_fraction: float
    approx_kl: float
    ratio_mean: float


def clipped_surrogate_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantage: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    token_level: bool = False,
) -> tuple[torch.Tensor, SurrogateStats]:
    """PPO's clipped objective as a loss, with DAPO's options; ``(loss, stats)``.

    ``-min(r A, clip(r, 1 - clip_low, 1 + clip_high) A)`` per step, ``r`` the ratio
    of new to old probabilities.

    Args:
        log_probs: Log-probabilities under the current policy ``[M, T]``.
        old_log_probs: The same under the policy that sampled ``[M, T]``.
        advantage: ``[M, T]``, or ``[M]`` (one advantage for every step of a sequence).
        mask: Which steps count, bool ``[M, T]`` (e.g. not padding); default all.
        clip_low: epsilon below 1 (PPO 0.2).
        clip_high: epsilon above 1; ``None`` for ``clip_low`` (PPO); DAPO's
            clip-higher uses 0.28.
        token_level: Average over all unmasked steps of the batch (DAPO: long
            sequences weigh more) instead of per sequence, then over sequences (PPO,
            GRPO).
    """
    if clip_low <= 0 or (clip_high is not None and clip_high <= 0):
        raise ValueError(f"clip ranges must be > 0, got clip_low={clip_low}, clip_high={clip_high}")
    clip_high = clip_low if clip_high is None else clip_high
    if advantage.dim() == 1:
        advantage = advantage[:, None].expand_as(log_probs)
    mask = torch.ones_like(log_probs, dtype=torch.bool) if mask is None else mask
    weights = mask.to(log_probs.dtype)
    log_ratio = log_probs - old_log_probs.detach()
    ratio = log_ratio.exp()
    advantage = advantage.detach()
    unclipped = ratio * advantage
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * advantage
    per_step = -torch.minimum(unclipped, clipped)
    if token_level:
        loss = (per_step * weights).sum() / weights.sum().clamp(min=1)
    else:
        per_sequence = (per_step * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        loss = per_sequence.mean()
    with torch.no_grad():
        count = weights.sum().clamp(min=1)
        outside = ((ratio < 1 - clip_low) | (ratio > 1 + clip_high)) & mask
        stats = SurrogateStats(
            clip_fraction=(outside.sum() / count).item(),
            approx_kl=((((ratio - 1) - log_ratio) * weights).sum() / count).item(),
            ratio_mean=((ratio * weights).sum() / count).item(),
        )
    return loss, stats


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
    last_value: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) of fixed-length episodes: ``(advantages, returns)``, ``[M, T]``.

    Args:
        rewards: Per-step rewards ``[M, T]`` (e.g. the dense env's per-slot clicks).
        values: The critic's value of the state before each step ``[M, T]``.
        gamma: Discount.
        lam: GAE's lambda (1: Monte-Carlo returns minus the critic; 0: one-step TD).
        last_value: Value after the last step ``[M]``; 0 (the episode ends) by default.
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} differ")
    steps = rewards.shape[1]
    next_value = torch.zeros_like(values[:, 0]) if last_value is None else last_value
    running = torch.zeros_like(values[:, 0])
    result = torch.empty_like(rewards)
    for t in reversed(range(steps)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        result[:, t] = running
        next_value = values[:, t]
    return result, result + values
