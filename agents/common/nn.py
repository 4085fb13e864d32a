"""Building blocks every neural reranker shares.

* :func:`request_inputs`: the features of a batch of requests as tensors (user
  features, candidate features, standardised initial-ranker scores), the same
  tables the environments' dense observations hold;
* :class:`CandidateSetEncoder`: a Transformer over a request's candidate set,
  personalised by the user and (optionally) aware of the initial order;
* :func:`transformer_stack`: the pre-norm Transformer every model here uses;
  :func:`decoder_stack` its cross-attending twin, with :class:`DecoderCache` for
  incremental (key-value cached) decoding.

The pointer decoder and policy built on them are :mod:`agents.common.pointer`.

Lists are candidate positions (``0 .. N-1``), ``-1`` pads a prefix's empty slots,
as everywhere in the suite.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rerank_env.task import RerankTask
from simulators.base import PAD


@dataclass(frozen=True)
class RequestInputs:
    """Features of a batch of requests (tensors on the task's device).

    Attributes:
        user: Standardised user features, float ``[B, Du]``.
        items: Standardised candidate features, float ``[B, N, Di]``.
        scores: Initial-ranker scores, standardised within each request, ``[B, N]``.
    """

    user: torch.Tensor
    items: torch.Tensor
    scores: torch.Tensor

    @property
    def batch(self) -> int:
        """B."""
        return self.user.shape[0]

    def repeat(self, times: int) -> RequestInputs:
        """Each request repeated ``times`` times in a row (``[B * times, ...]``)."""
        return RequestInputs(
            self.user.repeat_interleave(times, 0),
            self.items.repeat_interleave(times, 0),
            self.scores.repeat_interleave(times, 0),
        )

    def select(self, rows: torch.Tensor) -> RequestInputs:
        """The requests at ``rows`` (long ``[b]``), in that order."""
        return RequestInputs(self.user[rows], self.items[rows], self.scores[rows])


class FeatureTables:
    """A task's standardised feature tables, on the task's device (built once per task).

    Attributes:
        users: Standardised user features ``[U, Du]``.
        items: Standardised item features ``[I, Di]``.
        scores: Initial-ranker scores of every request's candidates ``[R, N]``.
        request_user: User of each request ``[R]``.
    """

    def __init__(self, task: RerankTask) -> None:
        def standardised(table: np.ndarray) -> torch.Tensor:
            values = torch.tensor(table, dtype=torch.float32)
            spread = values.std(dim=0).clamp(min=1e-6)
            return ((values - values.mean(dim=0)) / spread).to(task.device)

        self.users = standardised(task.user_table)
        self.items = standardised(task.item_table)
        self.scores = torch.tensor(task.scores_np, dtype=torch.float32, device=task.device)
        self.request_user = torch.as_tensor(task.pool.request_user, device=task.device)
        self._histories = task.histories

    def history_mean(self, rows: torch.Tensor) -> torch.Tensor:
        """Mean item features of each request's history, ``[B, Di]`` (zeros if empty)."""
        history = self._histories[rows]
        known = (history != PAD)[..., None]
        summed = (self.items[history.clamp(min=0)] * known).sum(dim=1)
        return summed / known.sum(dim=1).clamp(min=1)


_TABLES: weakref.WeakKeyDictionary[RerankTask, FeatureTables] = weakref.WeakKeyDictionary()


def feature_tables(task: RerankTask) -> FeatureTables:
    """The :class:`FeatureTables` of ``task`` (cached while the task lives)."""
    if task not in _TABLES:
        _TABLES[task] = FeatureTables(task)
    return _TABLES[task]


def request_inputs(task: RerankTask, requests: np.ndarray | torch.Tensor) -> RequestInputs:
    """The features of ``requests`` (indices into the task's requests)."""
    tables = feature_tables(task)
    rows = torch.tensor(np.asarray(requests), dtype=torch.long, device=task.device)
    return RequestInputs(
        tables.users[tables.request_user[rows]],
        tables.items[task.candidates[rows]],
        standardised_scores(tables.scores[rows]),
    )


def standardised_scores(scores: torch.Tensor) -> torch.Tensor:
    """Initial-ranker scores ``[B, N]`` standardised within each request (row).

    A row of one candidate, or of equal scores, becomes zeros.
    """
    spread = scores.std(dim=1, keepdim=True).nan_to_num(1.0).clamp(min=1e-6)
    return (scores - scores.mean(dim=1, keepdim=True)) / spread


def masked_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each distribution over the last axis; masked (``-inf``) entries add 0."""
    return -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(dim=-1)


def input_dims(task: RerankTask) -> tuple[int, int]:
    """``(Du, Di)``: user and item feature sizes of ``task``."""
    return task.user_table.shape[1], task.item_table.shape[1]


def transformer_stack(
    dim: int, heads: int, layers: int, dropout: float = 0.0
) -> nn.TransformerEncoder:
    """``layers`` pre-norm Transformer layers of width ``dim`` (feed-forward ``2 * dim``).

    The one stack every model of the suite uses (encoders, causal decoders with a
    mask, DeGRe's evaluator), so its shape is chosen in one place.
    """
    layer = nn.TransformerEncoderLayer(
        dim, heads, 2 * dim, dropout=dropout, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def decoder_stack(dim: int, heads: int, layers: int, dropout: float = 0.0) -> nn.TransformerDecoder:
    """:func:`transformer_stack`'s decoder twin: causal self-attention plus cross-attention.

    For generators whose steps are not candidates (GloRank's semantic-ID tokens):
    they read the encoded candidate set through cross-attention.
    """
    layer = nn.TransformerDecoderLayer(
        dim, heads, 2 * dim, dropout=dropout, batch_first=True, norm_first=True
    )
    return nn.TransformerDecoder(layer, layers)


class DecoderCache:
    """Incremental decoding through a :func:`decoder_stack`: one new position per call.

    ``nn.TransformerDecoder`` recomputes every position at every step; this runs
    the same layers (pre-norm, batch-first) on the newest position only, keeping
    each layer's self-attention keys and values of the positions so far and the
    cross-attention keys and values of ``memory`` (projected once). Outputs equal
    the full decoder's under a causal mask (tested); inference only (no dropout).

    Args:
        decoder: The decoder (its layers are used as they are, not copied).
        memory: What the decoder cross-attends to, ``[M, N, d]``.
    """

    def __init__(self, decoder: nn.TransformerDecoder, memory: torch.Tensor) -> None:
        self.decoder = decoder
        self.self_keys: list[torch.Tensor | None] = [None] * len(decoder.layers)
        self.self_values: list[torch.Tensor | None] = [None] * len(decoder.layers)
        self.memory_keys, self.memory_values = [], []
        for layer in decoder.layers:
            if not layer.norm_first:
                raise ValueError("DecoderCache runs pre-norm layers (norm_first=True) only")
            attention = layer.multihead_attn
            _, key, value = self._projections(attention, memory, parts=(1, 2))
            self.memory_keys.append(key)
            self.memory_values.append(value)

    @staticmethod
    def _projections(
        attention: nn.MultiheadAttention, x: torch.Tensor, parts: tuple[int, ...]
    ) -> list[torch.Tensor | None]:
        """Query (0), key (1) and value (2) projections of ``x`` as ``[M, heads, T, d/h]``."""
        dim, heads = attention.embed_dim, attention.num_heads
        out: list[torch.Tensor | None] = [None, None, None]
        for part in parts:
            weight = attention.in_proj_weight[part * dim : (part + 1) * dim]
            bias = attention.in_proj_bias[part * dim : (part + 1) * dim]
            projected = nn.functional.linear(x, weight, bias)
            out[part] = projected.reshape(*x.shape[:2], heads, dim // heads).transpose(1, 2)
        return out

    @staticmethod
    def _attend(
        attention: nn.MultiheadAttention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
    ) -> torch.Tensor:
        mixed = nn.functional.scaled_dot_product_attention(query, key, value)
        mixed = mixed.transpose(1, 2).reshape(query.shape[0], query.shape[2], -1)
        return attention.out_proj(mixed)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output at the new position ``x`` ``[M, 1, d]`` (after the others)."""
        for index, layer in enumerate(self.decoder.layers):
            query, key, value = self._projections(layer.self_attn, layer.norm1(x), (0, 1, 2))
            if self.self_keys[index] is not None:
                key = torch.cat([self.self_keys[index], key], dim=2)
                value = torch.cat([self.self_values[index], value], dim=2)
            self.self_keys[index], self.self_values[index] = key, value
            x = x + layer.dropout1(self._attend(layer.self_attn, query, key, value))
            (query, _, _) = self._projections(layer.multihead_attn, layer.norm2(x), (0,))
            memory = self._attend(
                layer.multihead_attn, query, self.memory_keys[index], self.memory_values[index]
            )
            x = x + layer.dropout2(memory)
            hidden = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(x)))))
            x = x + layer.dropout3(hidden)
        return x if self.decoder.norm is None else self.decoder.norm(x)

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` in that order (a beam's parents)."""
        self.self_keys = [None if k is None else k[rows] for k in self.self_keys]
        self.self_values = [None if v is None else v[rows] for v in self.self_values]
        self.memory_keys = [k[rows] for k in self.memory_keys]
        self.memory_values = [v[rows] for v in self.memory_values]


class CandidateSetEncoder(nn.Module):
    """Transformer over a request's candidates, personalised by the user.

    Each candidate's token is the projection of its features and initial score,
    plus the projected user (PRM's personalised vector) and, with
    ``initial_order=True``, an embedding of its rank in the initial list (PRM's
    position embedding). Without it the encoder is permutation-equivariant.

    Args:
        user_dim: Du.
        item_dim: Di.
        dim: Model width.
        layers: Transformer encoder layers.
        heads: Attention heads.
        initial_order: Add an embedding of the initial rank.
        max_candidates: Largest N the rank embedding covers.
        dropout: Dropout inside the Transformer.
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        *,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        initial_order: bool = True,
        max_candidates: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim, self.max_candidates = dim, max_candidates
        self.item_proj = nn.Linear(item_dim + 1, dim)
        self.user_proj = nn.Linear(user_dim, dim)
        self.rank = nn.Embedding(max_candidates, dim) if initial_order else None
        self.encoder = transformer_stack(dim, heads, layers, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, inputs: RequestInputs, extra: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(candidates [B, N, d], user [B, d])``.

        ``extra`` (``[B, N, d]``) is added to each candidate's token before the
        Transformer (GloRank adds the embedding of the candidate's semantic ID).
        """
        n = inputs.items.shape[1]
        if n > self.max_candidates:
            raise ValueError(
                f"{n} candidates per request; this encoder was built for at most "
                f"max_candidates={self.max_candidates}"
            )
        user = self.user_proj(inputs.user)
        tokens = self.item_proj(torch.cat([inputs.items, inputs.scores[..., None]], dim=2))
        tokens = tokens + user[:, None]
        if extra is not None:
            tokens = tokens + extra
        if self.rank is not None:
            tokens = tokens + self.rank.weight[:n]
        return self.norm(self.encoder(tokens)), user
