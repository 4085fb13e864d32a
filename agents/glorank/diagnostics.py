"""GloRank's diagnostic: how much the output layer's gradient varies across mini-batches.

GloRank's Proposition 2.1: with a local-index output, row ``j`` of the output layer
serves a different item in every request, which adds a variance of at least
``(1/N)(1 - 1/N)|mu_j|^2`` to its gradient; a global vocabulary removes it. This
measures, for any :class:`~agents.glorank.model.GloRankPolicy`, the gradient of the
token (or slot) cross-entropy of given lists with respect to the output layer
(:meth:`~agents.glorank.model.GloRankPolicy.output_parameters`) on disjoint
mini-batches of requests, and how it spreads.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.common.nn import request_inputs
from agents.glorank.model import GloRankPolicy, candidate_tokens
from rerank_env.task import RerankTask


def output_gradient_variance(
    policy: GloRankPolicy,
    task: RerankTask,
    requests: np.ndarray,
    lists: np.ndarray,
    *,
    batch_size: int = 32,
) -> dict[str, float]:
    """Spread of the output layer's gradient over disjoint mini-batches of ``requests``.

    Args:
        policy: The model (its weights are not changed).
        task: The task whose candidates and semantic IDs the requests use.
        requests: Request indices ``[B]``; cut into ``B // batch_size`` mini-batches.
        lists: The lists whose cross-entropy is differentiated, positions ``[B, L]``.
        batch_size: Requests per mini-batch.

    Returns:
        ``batches``; ``variance``: the trace of the gradient's covariance across
        mini-batches (the sum over the layer's entries of their variance);
        ``mean_norm2``: the squared norm of the mean gradient; ``relative``:
        ``variance / mean_norm2`` (noise to signal, comparable across heads whose
        layers differ in size); ``per_entry``: ``variance`` over the entry count.
        With a tied global head the layer is the token embedding, whose gradient
        also carries the embedding's input uses.

    Raises:
        ValueError: Fewer than two mini-batches.
    """
    batches = len(requests) // batch_size
    if batches < 2:
        raise ValueError(
            f"{len(requests)} requests make {batches} mini-batch(es) of {batch_size}: a "
            "variance needs at least 2; pass more requests or a smaller batch_size"
        )
    parameters = policy.output_parameters()
    gradients = []
    policy.eval()
    for index in range(batches):
        rows = np.asarray(requests[index * batch_size : (index + 1) * batch_size])
        with torch.enable_grad():
            log_probs, _, _, _ = policy.evaluate(
                request_inputs(task, rows),
                candidate_tokens(task, rows),
                torch.as_tensor(
                    np.asarray(lists[index * batch_size : (index + 1) * batch_size]),
                    device=task.device,
                ),
            )
            grads = torch.autograd.grad(-log_probs.mean(), parameters)
        gradients.append(torch.cat([g.reshape(-1) for g in grads]).double())
    stacked = torch.stack(gradients)
    variance = stacked.var(dim=0, unbiased=True).sum().item()
    mean_norm2 = stacked.mean(dim=0).pow(2).sum().item()
    return {
        "batches": float(batches),
        "variance": variance,
        "mean_norm2": mean_norm2,
        "relative": variance / mean_norm2 if mean_norm2 > 0 else float("inf"),
        "per_entry": variance / stacked.shape[1],
    }
