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
from simulators.training import bootstrap_users


def _spec(**changes) -> SimulatorSpec:
    base = dict(kind="pbm", n_users=5, n_items=9, user_feature_dim=3, item_feature_dim=4, dim=4,
                max_positions=4, ensemble_size=3, seed=1)  # fmt: skip
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


def test_bootstrap_resamples_whole_training_users(data_root) -> None:
    from simulators.data import PipelineConfig, load_rerank_data

    data = load_rerank_data("ml-100k", data_root, PipelineConfig(retriever="pop"), progress=False)
    rows = bootstrap_users(data, seed=0)
    train_users = data.request_user[data.split_indices("train")]
    drawn = train_users[rows]
    # Every drawn user comes with all of their training slates (a multiple of them).
    counts = np.bincount(drawn, minlength=data.n_users)
    full = np.bincount(train_users, minlength=data.n_users)
    assert ((counts % np.maximum(full, 1)) == 0).all()
    assert 0.5 < len(np.unique(drawn)) / len(np.unique(train_users)) < 0.75  # about 1 - 1/e
    assert np.array_equal(rows, bootstrap_users(data, seed=0))
    assert not np.array_equal(rows, bootstrap_users(data, seed=1))
