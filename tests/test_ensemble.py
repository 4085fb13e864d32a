"""Simulator ensembles: mean, disagreement, held-out evaluation member, bootstrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simulators.base import SlateBatch
from simulators.checkpoint import load_simulator, save_simulator
from simulators.composed import ComposedSimulator
from simulators.ensemble import SimulatorEnsemble
from simulators.factory import SimulatorSpec, build_simulator, evaluation_split, learned_members
from simulators.training import bootstrap_slates


def _spec(**changes) -> SimulatorSpec:
    base = dict(
        kind="pbm",
        n_users=5,
        n_items=9,
        user_feature_dim=3,
        item_feature_dim=4,
        dim=4,
        max_positions=4,
        ensemble_size=3,
        seed=1,
    )
    return SimulatorSpec(**{**base, **changes})


def _features():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(5, 3, generator=generator), torch.rand(9, 4, generator=generator)


BATCH = SlateBatch(
    torch.tensor([0, 4]),
    torch.tensor([[1, 2, 3, 4], [8, 7, 6, -1]]),
    torch.empty(2, 0, dtype=torch.long),
)


def test_ensemble_is_the_mean_of_distinct_members() -> None:
    model = build_simulator(_spec(), *_features())
    assert isinstance(model, SimulatorEnsemble) and len(model.members) == 3
    with torch.no_grad():
        members = torch.stack([m.click_probs(BATCH) for m in model.members])
        torch.testing.assert_close(model.click_probs(BATCH), members.mean(0))
        assert (model.disagreement(BATCH) > 0).all()  # different seeds, different members


def test_evaluation_split_holds_one_member_out() -> None:
    model = build_simulator(_spec(composed=True, similarity_dim=4), *_features(), _features()[1])
    train, held_out = evaluation_split(model)
    assert isinstance(train, ComposedSimulator) and isinstance(held_out, ComposedSimulator)
    assert len(train.base.members) == 2 and held_out.base is model.base.members[-1]
    with torch.no_grad():
        assert not torch.allclose(train.click_probs(BATCH), held_out.click_probs(BATCH))
        torch.testing.assert_close(held_out.examination, model.examination)
    with pytest.raises(ValueError, match="needs an ensemble"):
        evaluation_split(build_simulator(_spec(ensemble_size=1), *_features()))


def test_ensemble_checkpoint_round_trip(tmp_path: Path) -> None:
    spec = _spec(kind="transformer", dim=8)
    model = build_simulator(spec, *_features()).eval()
    path = save_simulator(tmp_path / "ens.pt", model, spec, {})
    loaded, loaded_spec, _ = load_simulator(path)
    assert loaded_spec.ensemble_size == 3 and len(learned_members(loaded)) == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded.click_probs(BATCH), model.click_probs(BATCH))


def test_bootstrap_resamples_training_slates(data_root) -> None:
    from simulators.data import PipelineConfig, load_rerank_data

    data = load_rerank_data("ml-100k", data_root, PipelineConfig(retriever="pop"), progress=False)
    rows = bootstrap_slates(data, seed=0)
    train_count = len(data.split_indices("train"))
    assert len(rows) == train_count and rows.min() >= 0 and rows.max() < train_count
    assert 0.6 < len(np.unique(rows)) / train_count < 0.66  # about 1 - 1/e
    # Most training users keep some slates (a user with k slates loses all with
    # probability about e^-k; ML-100K has users with 2-3 training slates).
    train_users = data.request_user[data.split_indices("train")]
    kept = len(np.unique(train_users[rows])) / len(np.unique(train_users))
    assert kept > 0.9
    assert np.array_equal(rows, bootstrap_slates(data, seed=0))
    assert not np.array_equal(rows, bootstrap_slates(data, seed=1))
