"""Build simulators from a typed spec (so checkpoints can rebuild them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from simulators.base import ClickSimulator
from simulators.click_models import (
    Attractiveness,
    DependentClickModel,
    PointwiseModel,
    PositionBasedModel,
    cascade_model,
)
from simulators.composed import ComposedSimulator
from simulators.context_model import ContextAwareSimulator

ModelKind = Literal["pointwise", "pbm", "dcm", "cascade", "transformer"]
MODEL_KINDS: tuple[str, ...] = ("pointwise", "pbm", "dcm", "cascade", "transformer")


@dataclass(frozen=True)
class SimulatorSpec:
    """Everything needed to rebuild a simulator's architecture.

    Attributes:
        kind: Learned model: ``pointwise``, ``pbm``, ``dcm``, ``cascade`` or
            ``transformer`` (the context-aware simulator).
        n_users: Users.
        n_items: Items.
        user_feature_dim: Columns of the user features.
        item_feature_dim: Columns of the item features.
        dim: Attractiveness (and Transformer) width.
        max_positions: Longest list.
        layers: Transformer layers (``transformer`` only).
        heads: Transformer heads (``transformer`` only).
        dropout: Transformer dropout (``transformer`` only).
        seed: Initialisation seed.
        composed: Wrap the learned model in a :class:`ComposedSimulator`.
        position_bias: DCG examination exponent (``composed`` only).
        diversity_strength: Diminishing-returns strength (``composed`` only).
        similarity_dim: Columns of the item vectors used for similarity (``composed``).
    """

    kind: ModelKind
    n_users: int
    n_items: int
    user_feature_dim: int
    item_feature_dim: int
    dim: int = 32
    max_positions: int = 6
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    seed: int = 0
    composed: bool = False
    position_bias: float = 1.0
    diversity_strength: float = 2.0
    similarity_dim: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"SimulatorSpec.kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.composed and self.similarity_dim < 1:
            raise ValueError("SimulatorSpec: composed=True needs similarity_dim >= 1")

    def to_dict(self) -> dict:
        """Plain-JSON form (for checkpoint metadata)."""
        return dataclasses.asdict(self)


def build_simulator(
    spec: SimulatorSpec,
    user_features: torch.Tensor | None = None,
    item_features: torch.Tensor | None = None,
    similarity_vectors: torch.Tensor | None = None,
) -> ClickSimulator:
    """Build an (unfitted) simulator; missing tensors become zeros of the spec's shape.

    Zeros are for rebuilding before :meth:`~torch.nn.Module.load_state_dict`, which
    restores the real feature buffers.
    """
    if user_features is None:
        user_features = torch.zeros(spec.n_users, spec.user_feature_dim)
    if item_features is None:
        item_features = torch.zeros(spec.n_items, spec.item_feature_dim)
    expected = {
        "user_features": (user_features, (spec.n_users, spec.user_feature_dim)),
        "item_features": (item_features, (spec.n_items, spec.item_feature_dim)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, the spec says {shape}")
    attract = Attractiveness(user_features, item_features, dim=spec.dim, seed=spec.seed)
    positions = spec.max_positions
    model: ClickSimulator
    if spec.kind == "pointwise":
        model = PointwiseModel(attract, max_positions=positions)
    elif spec.kind == "pbm":
        model = PositionBasedModel(attract, max_positions=positions)
    elif spec.kind == "dcm":
        model = DependentClickModel(attract, max_positions=positions)
    elif spec.kind == "cascade":
        model = cascade_model(attract, max_positions=positions)
    else:
        model = ContextAwareSimulator(
            attract,
            max_positions=positions,
            layers=spec.layers,
            heads=spec.heads,
            dropout=spec.dropout,
            seed=spec.seed,
        )
    if not spec.composed:
        return model
    if similarity_vectors is None:
        similarity_vectors = torch.zeros(spec.n_items, spec.similarity_dim)
    return ComposedSimulator(
        model,
        similarity_vectors,
        position_bias=spec.position_bias,
        diversity_strength=spec.diversity_strength,
        max_positions=positions,
    )
