"""DeGRe's dense supervision of the pointer generator by mined lists.

At each step of a mined list: cross-entropy on the hard label (the mined item)
plus ``soft_weight`` times ``KL(soft || p_theta)``, ``soft = softmax(values / tau)``
over the remaining candidates (the evaluator's value of each one-item extension);
each list weighted by its value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from agents.common.distributed import DataParallel
from agents.common.nn import masked_entropy, request_inputs
from agents.common.pointer import PointerPolicy
from agents.common.training import training_mode
from agents.degre.mining import MinedLists
from rerank_env.task import RerankTask


def list_weights(values: torch.Tensor, list_weight: str) -> torch.Tensor:
    """Weight of each mined list: ``value / mean value`` (``"value"``) or 1 (``"uniform"``)."""
    if list_weight == "value":
        return values / values.mean().clamp(min=1e-6)
    return torch.ones_like(values)


def dense_loss(
    task: RerankTask,
    policy: PointerPolicy,
    data: MinedLists,
    weights: torch.Tensor,
    batch: np.ndarray,
    *,
    soft_weight: float,
    temperature: float,
    parallel: DataParallel | None = None,
    step_logits: Callable[..., torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, mean step entropy)`` of ``batch``'s mined lists.

    The loss is the value-weighted ``sum_t CE(hard_t) + lambda * KL(soft_t || p_t)``;
    the entropy (no gradient) is the policy's mean per-step entropy, for the log.

    Data-parallel (``parallel`` over several processes, ``step_logits`` the policy's
    method wrapped by :meth:`DataParallel.wrap`): this rank's share of ``batch``,
    normalised by the whole batch's weight and scaled by the world size, so that the
    gradients DDP averages are the whole batch's.
    """
    parallel = parallel or DataParallel()
    normaliser = weights[torch.as_tensor(batch, device=task.device)].sum().clamp(min=1e-12)
    whole = len(batch)
    batch = batch[parallel.shard(whole, even=False)]
    rows = torch.as_tensor(batch, device=task.device)
    lists = data.lists[rows]
    with training_mode(policy):
        forward = step_logits or policy.step_logits
        logits = forward(request_inputs(task, data.requests[batch]), lists)
        log_probs = torch.log_softmax(logits, dim=2)
        loss = -log_probs.gather(2, lists[..., None])[..., 0]  # hard labels, [b, L]
        if soft_weight:
            soft_logits = data.extension_values[rows] / temperature
            soft = torch.softmax(soft_logits, dim=2)
            log_soft = torch.log_softmax(soft_logits, dim=2)
            kl = torch.where(soft > 0, soft * (log_soft - log_probs), 0.0).sum(dim=2)
            loss = loss + soft_weight * kl
        w = weights[rows]
        with torch.no_grad():  # this share's part of the whole batch's mean
            entropy = masked_entropy(log_probs)
            entropy = entropy.sum() / (whole * entropy.shape[1]) * parallel.world_size
        return (w * loss.sum(dim=1)).sum() / normaliser * parallel.world_size, entropy
