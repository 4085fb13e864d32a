"""How well a reward model orders GoalRank's groups (the diagnostic that matters for it)."""

from __future__ import annotations

import torch


def group_agreement(
    model_rewards: torch.Tensor, reference_rewards: torch.Tensor
) -> dict[str, float]:
    """How well a reward model orders the lists of each group, judged by reference rewards.

    GoalRank only learns what the reward model's *within-group* ordering says, so this
    is the diagnostic that matters for it (not the model's NLL on the logs).

    Args:
        model_rewards: The reward model's value of each list ``[B, G]``.
        reference_rewards: The reference's (e.g. a simulator's) value of the same
            lists ``[B, G]``.

    Returns:
        ``spearman``: mean within-group rank correlation (groups where either side
        is constant are left out); ``pick_gain``: mean reference reward of the
        model's favourite list minus the group mean; ``best_gain``: the same for the
        reference's own favourite (the most ``pick_gain`` can be);
        ``model_spread`` and ``reference_spread``: mean within-group standard
        deviations.
    """
    if model_rewards.shape != reference_rewards.shape or model_rewards.dim() != 2:
        raise ValueError(
            f"expected two [B, G] tensors of one shape, got {tuple(model_rewards.shape)} "
            f"and {tuple(reference_rewards.shape)}"
        )
    model = model_rewards.double().cpu()
    reference = reference_rewards.double().cpu()

    def centred_ranks(values: torch.Tensor) -> torch.Tensor:
        ranks = values.argsort(dim=1, stable=True).argsort(dim=1).double()
        return ranks - ranks.mean(dim=1, keepdim=True)

    varied = (model.std(dim=1) > 0) & (reference.std(dim=1) > 0)
    a, b = centred_ranks(model[varied]), centred_ranks(reference[varied])
    correlation = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))
    mean = reference.mean(dim=1)
    picked = reference.gather(1, model.argmax(dim=1, keepdim=True)).squeeze(1)
    return {
        "spearman": correlation.mean().item() if len(correlation) else float("nan"),
        "pick_gain": (picked - mean).mean().item(),
        "best_gain": (reference.max(dim=1).values - mean).mean().item(),
        "model_spread": model.std(dim=1, unbiased=False).mean().item(),
        "reference_spread": reference.std(dim=1, unbiased=False).mean().item(),
    }
