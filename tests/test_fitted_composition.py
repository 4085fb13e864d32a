"""Fitted composition: examination and list effects by maximum likelihood (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from simulators.composition_fit import fit_composition
from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.synthetic_config import SyntheticConfig
from simulators.factory import SimulatorSpec, build_simulator


def _world_data(satiation: float, position_bias: float):
    world = SyntheticConfig(n_users=300, satiation=satiation, position_bias=position_bias, seed=0)
    return load_rerank_data(
        "synthetic",
        config=PipelineConfig(num_candidates=30, retriever="pop"),
        synthetic=world,
        progress=False,
    )


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


def test_a_joint_fit_recovers_satiation_and_position_at_the_default_world_size() -> None:
    # The recovery study's setting (600 users, a pointwise base fitted jointly) on one
    # world: within 30% here (the study's target, 20%, is over seeds; it measured
    # 1.71 and 1.89 mean for 2 and 2). Before the effects had their own step size
    # the same fit gave 0.5-0.7 for a satiation of 4.
    world = SyntheticConfig(satiation=2.0, position_bias=2.0, seed=0)
    data = load_rerank_data(
        "synthetic",
        config=PipelineConfig(num_candidates=30, retriever="pop"),
        synthetic=world,
        progress=False,
    )
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    base = build_simulator(SimulatorSpec.for_data(data, "pointwise", dim=16), users, items)
    model, _ = fit_composition(base, data, items[:, :-1], epochs=80, patience=5)
    fitted = model.composition()
    assert fitted.diversity_strength == pytest.approx(2.0, rel=0.3)
    assert fitted.position_bias == pytest.approx(2.0, rel=0.3)


def test_a_task_with_a_fitted_composition(monkeypatch: pytest.MonkeyPatch) -> None:
    import simulators.composition_fit as composition_fit_module
    from rerank_env import make_task
    from simulators.data.paths import cache_dir

    task = make_task(dataset="synthetic", simulator="pbm", composition="fitted", progress=False)
    fitted = task.description["fitted_composition"]
    assert task.description["composition"] == "fitted"
    assert fitted["mode"] == "after" and fitted["members"] == 2
    assert fitted["diversity_strength"]["min"] <= fitted["diversity_strength"]["mean"]
    assert fitted["diversity_strength"]["mean"] <= fitted["diversity_strength"]["max"]
    assert len(fitted["examination"]) == task.pool.slate_length
    # The held-out simulator carries its own member's values, the training one the
    # mean of the others' (here one), all fixed.
    # (the run's cache is shared: other tests' compositions may sit beside this one)
    checksum = json.loads((Path(task.description["bundle"]) / "manifest.json").read_text())
    cached = list((cache_dir() / "compositions").glob(f"pbm-{checksum['files']['pbm.pt'][:16]}-*"))
    assert [path.name for path in cached] == [f"pbm-{checksum['files']['pbm.pt'][:16]}-v1.json"]
    entry = json.loads(cached[0].read_text())
    held_out = task.simulators["eval"].composition()
    assert held_out.redundancy == "sum"
    assert held_out.diversity_strength == pytest.approx(entry["members"][-1]["diversity_strength"])
    assert task.simulators["train"].composition().diversity_strength == pytest.approx(
        entry["members"][0]["diversity_strength"]
    )
    assert not any(p.requires_grad for p in task.simulators["eval"].effect_parameters())
    # Cached: a second task does not fit again.
    monkeypatch.setattr(composition_fit_module, "fit_composition", _refuse)
    again = make_task(dataset="synthetic", simulator="pbm", composition="fitted", progress=False)
    assert again.description["fitted_composition"] == fitted
    # A file of another format is not trusted: it is fitted again.
    original = cached[0].read_text()
    cached[0].write_text(json.dumps({**entry, "format": 0}))
    try:
        with pytest.raises(AssertionError, match="fitted again"):
            make_task(dataset="synthetic", simulator="pbm", composition="fitted", progress=False)
    finally:  # the cache is the run's: leave the valid entry for the other tests
        cached[0].write_text(original)


def _refuse(*args, **kwargs):
    raise AssertionError("fitted again")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"composition": "learned"}, "composition must be 'none', 'assumed', 'fitted'"),
        ({"composition": {"bias": 2.0}}, r"unknown field\(s\) \['bias'\]"),
        ({"composition": {"position_bias": -1.0}}, "position_bias must be >= 0"),
        ({"composition": {"diversity_strength": "2"}}, "must be a number or None"),
        ({"position_bias": 2.0}, r"unknown TaskConfig field\(s\) \['position_bias'\]"),
    ],
)
def test_bad_composition_arguments_are_refused(kwargs: dict, message: str) -> None:
    from rerank_env import make_task
    from simulators.data.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_task(**kwargs)


def test_the_composition_optimizer_gives_each_part_its_step() -> None:
    from simulators.composed import ComposedSimulator
    from simulators.composition_fit import composition_optimizer, fittable_composition

    data = _world_data(satiation=1.0, position_bias=1.0)
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    base = build_simulator(SimulatorSpec.for_data(data, "pointwise", dim=4), users, items)
    composed = fittable_composition(base, items[:, :-1], 6)
    joint = composition_optimizer(composed, effect_learning_rate=0.1, pair_learning_rate=1e-4)
    steps = [group["lr"] for group in joint.param_groups]
    assert steps == [0.1, 1e-4, 5e-3]
    in_groups = sum(p.numel() for group in joint.param_groups for p in group["params"])
    assert in_groups == sum(p.numel() for p in composed.parameters())  # each once
    after = composition_optimizer(composed, mode="after")
    assert len(after.param_groups) == 2  # the base is left out
    with pytest.raises(ValueError, match="needs a trainable"):
        composition_optimizer(ComposedSimulator(base, items[:, :-1]))
    with pytest.raises(ValueError, match="mode must be one of"):
        composition_optimizer(composed, mode="before")


def test_a_held_out_member_on_the_other_half_of_the_logs(monkeypatch, tmp_path) -> None:
    from rerank_env import make_task
    from simulators import training
    from simulators.composition_fit import member_rows
    from simulators.data.synthetic_config import SyntheticConfig

    # A cache of its own: the default bundle must be fitted here, not found.
    monkeypatch.setenv("RERANK_ENV_CACHE", str(tmp_path))
    # 20 sessions a user: two validation slates each, one for each half.
    small = SyntheticConfig(n_users=120, n_items=200, sessions_per_user=20, seed=3)
    task = make_task(
        dataset="synthetic", synthetic=small, simulator="pbm", held_out="seed", progress=False
    )
    assert member_rows(task.pool, "seed", 3) == [None] * 3
    assert len(task.pool.reserved) == 0  # a same-logs judge reserves nothing
    rows = member_rows(task.pool, "sessions", 3, seed=1)
    assert rows[0] is rows[1]  # the training members share a half
    for split in ("train", "valid"):
        assert len(np.intersect1d(rows[0][split], rows[2][split])) == 0
    # The bundle's members are fitted on those rows (recorded, not re-derived).
    seen = []
    original = training.fit_simulator

    def recording(model, data, **options):
        seen.append(options.get("train_rows"))
        return original(model, data, **options)

    monkeypatch.setattr(training, "fit_simulator", recording)
    halves = make_task(dataset="synthetic", synthetic=small, simulator="pbm", progress=False)
    assert halves.description["held_out"] == "sessions"  # the default
    from simulators.bundle import load_bundle

    # The bundle's pool holds every log; the task's reserves the judge's half.
    bundle = load_bundle(halves.description["bundle"])
    expected = member_rows(bundle.pool, "sessions", 2)
    np.testing.assert_array_equal(halves.pool.reserved, bundle.judge_requests())
    assert len(seen) == 2
    for fitted_on, rows in zip(seen, expected, strict=True):
        assert np.array_equal(fitted_on, rows["train"])
    assert task.description["held_out"] == "seed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"held_out": "items"}, "held_out must be one of"),
        ({"held_out": "sessions", "bundle": "."}, "drop one of them"),
    ],
)
def test_bad_held_out_arguments_are_refused(kwargs: dict, message: str) -> None:
    from rerank_env import make_task
    from simulators.data.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_task(**kwargs)


def test_bundle_config_checks_its_held_out_split() -> None:
    from simulators.bundle import BundleConfig
    from simulators.data.errors import ConfigError
    from simulators.training import fit_members

    with pytest.raises(ConfigError, match="held_out must be one of"):
        BundleConfig(held_out="items")
    with pytest.raises(ConfigError, match="use one or the other"):
        BundleConfig(held_out="users", bootstrap=True)
    with pytest.raises(ValueError, match="one entry per member"):
        fit_members([object(), object()], None, rows=[None])


def test_a_bundle_built_with_its_composition_records_it(tmp_path, monkeypatch) -> None:
    from simulators import composition_fit as composition_fit_module
    from simulators.bundle import BundleConfig, build_bundle, load_bundle
    from simulators.data import PipelineConfig, load_rerank_data
    from simulators.data.synthetic_config import SyntheticConfig

    world = SyntheticConfig(n_users=80, n_items=150, sessions_per_user=8, seed=5)
    # Two validation sessions a user: one for each half of the default held-out split.
    data = load_rerank_data(
        "synthetic", config=PipelineConfig(valid_fraction=0.25), synthetic=world, progress=False
    )
    config = BundleConfig(kinds=("pbm",), epochs=2, fit_composition=True, headroom_requests=20)
    folder = build_bundle(
        data,
        tmp_path / "bundle",
        config,
        data_checksum=world.key(),
        semantic_ids=None,
        progress=False,
    )
    loaded = load_bundle(folder)
    entry = loaded.manifest["fitted_composition"]["pbm"]
    assert entry["mode"] == "after" and len(entry["members"]) == 2
    # Read back from the manifest, not fitted again.
    monkeypatch.setattr(composition_fit_module, "fit_composition", _refuse)
    assert loaded.fitted_composition("pbm") == entry
    train, _ = loaded.simulators("pbm", composition="fitted")
    assert train.composition().redundancy == "sum"
