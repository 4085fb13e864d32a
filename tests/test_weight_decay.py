"""Decoupled weight decay per epoch for the learned simulators (issue 20, item 6)."""

from __future__ import annotations

import math

import pytest
import torch

from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.errors import ConfigError
from simulators.data.synthetic_config import SyntheticConfig
from simulators.factory import SimulatorSpec, build_simulator
from simulators.training import fit_simulator


@pytest.fixture(scope="module")
def data():
    return load_rerank_data(
        "synthetic",
        config=PipelineConfig(num_candidates=20, retriever="pop"),
        synthetic=SyntheticConfig(n_users=200, n_items=250, seed=0),
        progress=False,
    )


def _model(data):
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    return build_simulator(SimulatorSpec.for_data(data, "pbm", dim=8, seed=0), users, items)


def _norm(model) -> float:
    return float(sum(p.detach().pow(2).sum() for p in model.parameters()))


def test_the_decay_per_epoch_is_divided_by_the_steps(data, monkeypatch) -> None:
    built = []
    original = torch.optim.AdamW

    def recording(params, **options):
        built.append(options)
        return original(params, **options)

    monkeypatch.setattr(torch.optim, "AdamW", recording)
    fit_simulator(
        _model(data), data, epochs=1, batch_size=64, progress=False, weight_decay_per_epoch=30.0
    )
    steps = math.ceil(len(data.split_indices("train")) / 64)
    assert built == [{"lr": 5e-3, "weight_decay": pytest.approx(30.0 / steps)}]


def test_zero_decoupled_decay_is_adam_without_decay(data) -> None:
    # AdamW and Adam are one algorithm when nothing decays: the same fit, step for step.
    adam = fit_simulator(_model(data), data, epochs=2, weight_decay=0.0, progress=False)
    adamw = fit_simulator(_model(data), data, epochs=2, progress=False, weight_decay_per_epoch=0.0)
    assert adam.train_nll == pytest.approx(adamw.train_nll, rel=1e-6)


def test_a_larger_decay_per_epoch_shrinks_the_weights(data) -> None:
    norms = []
    for decay in (0.0, 50.0):
        model = _model(data)
        fit_simulator(
            model, data, epochs=2, patience=5, progress=False, weight_decay_per_epoch=decay
        )
        norms.append(_norm(model))
    assert norms[1] < 0.9 * norms[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weight_decay_per_epoch": -1.0}, "must be >= 0"),
        ({"weight_decay_per_epoch": 1.0, "optimizer": "given"}, "drop one of them"),
    ],
)
def test_bad_decay_options_are_refused(data, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_simulator(_model(data), data, epochs=1, progress=False, **options)


def test_bundle_config_and_task_refuse_a_negative_decay() -> None:
    from rerank_env import make_task
    from simulators.bundle import BundleConfig

    with pytest.raises(ConfigError, match="weight_decay_per_epoch must be None"):
        BundleConfig(weight_decay_per_epoch=-0.5)
    with pytest.raises(ConfigError, match="weight_decay_per_epoch=-1"):
        make_task(weight_decay_per_epoch=-1)
    with pytest.raises(ConfigError, match="cannot go with bundle"):
        make_task(weight_decay_per_epoch=50, bundle=".")


def test_a_task_fitted_with_decoupled_decay_records_it(monkeypatch) -> None:
    from agents.cli import build_parser
    from rerank_env import make_task
    from simulators import training

    seen = []
    original = training.fit_simulator

    def recording(model, data, **options):
        seen.append(options.get("weight_decay_per_epoch"))
        return original(model, data, **options)

    monkeypatch.setattr(training, "fit_simulator", recording)
    world = SyntheticConfig(n_users=200, n_items=250, seed=1)
    task = make_task(
        dataset="synthetic",
        simulator="pbm",
        synthetic=world,
        weight_decay_per_epoch=50,
        progress=False,
    )
    assert seen == [50, 50]  # both members, the held-out one too
    assert task.description["weight_decay_per_epoch"] == 50
    plain = make_task(dataset="synthetic", simulator="pbm", synthetic=world, progress=False)
    assert plain.description["weight_decay_per_epoch"] is None
    assert seen == [50, 50, None, None]  # another bundle (another cache key)
    arguments = build_parser().parse_args(["simulator", "bundle", "--weight-decay-per-epoch", "50"])
    assert arguments.weight_decay_per_epoch == 50.0
