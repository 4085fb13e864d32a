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
from simulators.data.errors import ConfigError
from simulators.data.pipeline import RerankData
from simulators.ensemble import SimulatorEnsemble

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
        ensemble_size: Members of a :class:`SimulatorEnsemble` (1 = a single model);
            member ``k`` is initialised with ``seed + k``.
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
    ensemble_size: int = 1

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"SimulatorSpec.kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.composed and self.similarity_dim < 1:
            raise ConfigError("SimulatorSpec: composed=True needs similarity_dim >= 1")
        if self.ensemble_size < 1:
            raise ConfigError(f"SimulatorSpec.ensemble_size must be >= 1, got {self.ensemble_size}")

    @classmethod
    def for_data(cls, data: RerankData, kind: str, **settings) -> SimulatorSpec:
        """A spec sized for processed ``data`` (users, items, features, list length)."""
        settings.setdefault("max_positions", data.config.slate_length)
        return cls(
            kind=kind,
            n_users=data.n_users,
            n_items=data.n_items,
            user_feature_dim=data.user_features.shape[1],
            item_feature_dim=data.item_features.shape[1],
            **settings,
        )

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
    members = [
        _learned(spec, user_features, item_features, spec.seed + k)
        for k in range(spec.ensemble_size)
    ]
    model = members[0] if spec.ensemble_size == 1 else SimulatorEnsemble(members)
    if not spec.composed:
        return model
    if similarity_vectors is None:
        similarity_vectors = torch.zeros(spec.n_items, spec.similarity_dim)
    return ComposedSimulator(
        model,
        similarity_vectors,
        position_bias=spec.position_bias,
        diversity_strength=spec.diversity_strength,
        max_positions=spec.max_positions,
    )


def _learned(
    spec: SimulatorSpec, user_features: torch.Tensor, item_features: torch.Tensor, seed: int
) -> ClickSimulator:
    """One learned (unfitted) model of ``spec.kind``."""
    attract = Attractiveness(user_features, item_features, dim=spec.dim, seed=seed)
    positions = spec.max_positions
    if spec.kind == "pointwise":
        return PointwiseModel(attract, max_positions=positions)
    if spec.kind == "pbm":
        return PositionBasedModel(attract, max_positions=positions)
    if spec.kind == "dcm":
        return DependentClickModel(attract, max_positions=positions)
    if spec.kind == "cascade":
        return cascade_model(attract, max_positions=positions)
    return ContextAwareSimulator(
        attract,
        max_positions=positions,
        layers=spec.layers,
        heads=spec.heads,
        dropout=spec.dropout,
        seed=seed,
    )


def learned_members(model: ClickSimulator) -> list[ClickSimulator]:
    """The fitted learned models inside ``model`` (unwrapping composition and ensembles)."""
    learned = model.base if isinstance(model, ComposedSimulator) else model
    if isinstance(learned, SimulatorEnsemble):
        return list(learned.members)
    return [learned]


def evaluation_split(
    model: ClickSimulator, index: int = -1
) -> tuple[ClickSimulator, ClickSimulator]:
    """``(training reward, held-out evaluation reward)`` from an ensemble simulator.

    Works on a :class:`SimulatorEnsemble` or a :class:`ComposedSimulator` over one;
    both halves keep the same composition effects.
    """
    if isinstance(model, ComposedSimulator):
        if not isinstance(model.base, SimulatorEnsemble):
            raise ValueError("evaluation_split needs an ensemble (ensemble_size >= 2)")
        train, held_out = model.base.split_evaluation_member(index)
        return model.with_base(train), model.with_base(held_out)
    if not isinstance(model, SimulatorEnsemble):
        raise ValueError("evaluation_split needs an ensemble (ensemble_size >= 2)")
    return model.split_evaluation_member(index)
