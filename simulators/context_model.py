"""A context-aware click simulator: a causal Transformer over the list.

Position ``k`` sees the user, a summary of the user's history, and the items at
positions ``<= k`` (top-down browsing), never the items below it, so every prefix of
a list has an exact value and dense per-step rewards exist. The click logit of
position ``k`` is the shared user-item attractiveness logit plus a correction read
from the Transformer's state at ``k``: the correction is where order and the other
items in the list come in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from simulators.base import PAD, ClickSimulator, SlateBatch, isolated_torch_rng
from simulators.click_models import Attractiveness


class ContextAwareSimulator(ClickSimulator):
    """Causal Transformer over ``[context, item_1, ..., item_K]``.

    Args:
        attractiveness: User-item model whose logits the Transformer corrects (its
            item vectors are also the item tokens).
        max_positions: Longest list the position embedding knows.
        layers: Transformer layers.
        heads: Attention heads.
        dropout: Dropout inside the Transformer (training only).
        seed: Seed of the Transformer's initialisation.
    """

    def __init__(
        self,
        attractiveness: Attractiveness,
        max_positions: int = 6,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            attractiveness.user_bias.num_embeddings,
            attractiveness.item_bias.num_embeddings,
            max_positions,
        )
        self.attractiveness = attractiveness
        dim = attractiveness.user_embedding.embedding_dim
        with isolated_torch_rng(seed):
            self.position_embedding = nn.Embedding(max_positions + 1, dim)
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            # _causal_layer_inference re-implements exactly this layer configuration.
            assert not layer.norm_first and layer.activation is F.relu
            assert layer.self_attn.in_proj_bias is not None and self.encoder.norm is None
            self.head = nn.Linear(dim, 1)
            nn.init.zeros_(self.head.weight)  # start as the attractiveness model
            nn.init.zeros_(self.head.bias)
        causal = torch.triu(torch.ones(max_positions + 1, max_positions + 1, dtype=torch.bool), 1)
        self.register_buffer("causal_mask", causal)

    def _context(self, batch: SlateBatch) -> torch.Tensor:
        """User vector plus the mean vector of the user's history, ``[B, dim]``.

        At inference, runs of rows with the same user and history (the many lists
        of one request that search, enumeration and rollouts score) share one
        computation (the mean over H history items is a large share of a short
        list's cost). A batch of one, the step-wise env's, skips the check.
        """
        if not torch.is_grad_enabled() and len(batch.users) > 1:
            key = torch.cat([batch.users[:, None], batch.histories], dim=1)
            unique, inverse = torch.unique_consecutive(key, dim=0, return_inverse=True)
            if len(unique) < len(key):
                return self._context_of(unique[:, 0], unique[:, 1:])[inverse]
        return self._context_of(batch.users, batch.histories)

    def _context_of(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        user = self.attractiveness.user_vectors(users)
        if histories.shape[1] == 0:
            return user
        known = histories != PAD
        vectors = self.attractiveness.item_vectors(histories.clamp(min=0))
        summed = (vectors * known[..., None]).sum(dim=1)
        return user + summed / known.sum(dim=1, keepdim=True).clamp(min=1)

    def position_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """Attractiveness logit plus the causal Transformer's correction."""
        k = batch.items.shape[1]
        items = self.attractiveness.item_vectors(batch.items.clamp(min=0))
        tokens = torch.cat([self._context(batch)[:, None, :], items], dim=1)
        tokens = tokens + self.position_embedding.weight[: k + 1]
        if self.training or torch.is_grad_enabled():
            states = self.encoder(tokens, mask=self.causal_mask[: k + 1, : k + 1], is_causal=True)
        else:
            states = tokens
            for layer in self.encoder.layers:
                states = _causal_layer_inference(layer, states)
        correction = self.head(states[:, 1:, :]).squeeze(-1)
        logits = self.attractiveness(batch.users, batch.items) + correction
        return torch.sigmoid(logits)


def _causal_layer_inference(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with a causal mask, in eval mode, without nn's per-call checks.

    ``nn.TransformerEncoderLayer.forward`` spends most of a small batch's time in
    Python deciding whether its fast path applies (about 0.1 ms per layer); a
    step-wise environment calls it for one short list per step. This computes the
    same post-norm layer (ReLU, no dropout at inference) from the layer's own
    weights; a test checks it against ``layer`` to float precision.
    """
    attention = layer.self_attn
    batch, length, dim = x.shape
    heads = attention.num_heads
    q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, length, heads, dim // heads).transpose(1, 2) for t in (q, k, v))
    mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mixed = mixed.transpose(1, 2).reshape(batch, length, dim)
    x = layer.norm1(x + attention.out_proj(mixed))
    return layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))
