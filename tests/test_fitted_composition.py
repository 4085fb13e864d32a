"""Fitted composition: examination and list effects by maximum likelihood (issue 20)."""

from __future__ import annotations

import pytest
import torch

from simulators.composed import fit_composition
from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.synthetic_config import SyntheticConfig
from simulators.factory import SimulatorSpec, build_simulator


def _world_data(satiation: float, position_bias: float):
    world = SyntheticConfig(n_users=300, satiation=satiation, position_bias=position_bias, seed=0)
    return load_rerank_data(
        "synthetic", config=PipelineConfig(num_candidates=30, retriever="pop"), synthetic=world,
        progress=False,
    )  # fmt: skip


def _fit(data, **options):
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    base = build_simulator(SimulatorSpec.for_data(data, "pointwise", dim=16), users, items)
    return fit_composition(base, data, items[:, :-1], epochs=8, patience=3, **options)


def test_fitted_strengths_follow_the_worlds_effects() -> None:
    # Directional: the recovery study (bench) measures how close; here, that the fit
    # sees a strong satiation and position effect where the world has them and not
    # where it has none.
    strong, _ = _fit(_world_data(satiation=4.0, position_bias=2.0))
    none, _ = _fit(_world_data(satiation=0.0, position_bias=0.0))
    strong, none = strong.composition(), none.composition()
    assert strong.diversity_strength > none.diversity_strength + 0.5
    assert strong.position_bias > none.position_bias + 0.5
    assert strong.examination[0] == none.examination[0] == 1.0


def test_fitting_after_the_base_leaves_it_unchanged() -> None:
    data = _world_data(satiation=1.0, position_bias=1.0)
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    base = build_simulator(SimulatorSpec.for_data(data, "pointwise", dim=8), users, items)
    before = {name: value.clone() for name, value in base.state_dict().items()}
    model, result = fit_composition(
        base, data, items[:, :-1], mode="after", epochs=2, complementarity=False
    )
    for name, value in base.state_dict().items():
        torch.testing.assert_close(value, before[name])
    assert all(parameter.requires_grad for parameter in base.parameters())  # restored
    assert model.pair_matrix is None and len(result.valid_nll) == 2
    assert model.diversity_strength != 0.0  # the effects did move


def test_an_unknown_fit_mode_is_refused() -> None:
    data = _world_data(satiation=1.0, position_bias=1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        _fit(data, mode="before")
