"""Simulator checkpoints (versioned, atomic, refused when foreign) and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from agents.cli import main
from simulators.base import SlateBatch
from simulators.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    load_simulator,
    save_simulator,
)
from simulators.factory import MODEL_KINDS, SimulatorSpec, build_simulator


def _spec(kind: str, composed: bool = False) -> SimulatorSpec:
    return SimulatorSpec(
        kind=kind,
        n_users=5,
        n_items=9,
        user_feature_dim=3,
        item_feature_dim=4,
        dim=8,
        max_positions=4,
        composed=composed,
        similarity_dim=4 if composed else 0,
        seed=2,
    )


def _batch() -> SlateBatch:
    return SlateBatch(
        torch.tensor([0, 3]), torch.tensor([[1, 2, 3, -1], [8, 0, 5, 4]]), torch.tensor([[6], [-1]])
    )


@pytest.mark.parametrize("composed", [False, True], ids=["learned", "composed"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_round_trip_gives_the_same_click_probabilities(tmp_path: Path, kind, composed) -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(5, 3, generator=generator), torch.rand(9, 4, generator=generator)
    spec = _spec(kind, composed)
    model = build_simulator(spec, *features, features[1] if composed else None).eval()
    path = save_simulator(tmp_path / "sim.pt", model, spec, {"metrics": {"auc": 0.5}})
    assert not list(tmp_path.glob("*.tmp"))
    loaded, loaded_spec, metadata = load_simulator(path)
    assert loaded_spec == spec and metadata["metrics"] == {"auc": 0.5} and "saved_utc" in metadata
    with torch.no_grad():
        torch.testing.assert_close(loaded.click_probs(_batch()), model.click_probs(_batch()))


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    spec = _spec("pbm")
    path = save_simulator(tmp_path / "sim.pt", build_simulator(spec), spec, {})
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"format version {CHECKPOINT_FORMAT_VERSION + 1}"):
        load_simulator(path)


def test_damaged_and_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    spec = _spec("dcm")
    path = save_simulator(tmp_path / "sim.pt", build_simulator(spec), spec, {})
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="damaged or not a rerank-env checkpoint"):
        load_simulator(damaged)
    payload = torch.load(path, weights_only=True)
    payload["spec"]["dim"] = 16  # weights of width 8 no longer fit
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not match its own spec"):
        load_simulator(path)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        _spec("dbn")
    with pytest.raises(ValueError, match="needs similarity_dim"):
        SimulatorSpec("pbm", 1, 1, 1, 1, composed=True)


def test_cli_trains_saves_and_evaluates(
    data_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("RERANK_ENV_DATA", str(data_root))
    out = tmp_path / "pbm.pt"
    assert (
        main(
            [
                "simulator",
                "train",
                "--model",
                "pbm",
                "--epochs",
                "1",
                "--dim",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "valid auc" in printed and str(out) in printed
    _, spec, metadata = load_simulator(out)
    assert spec.kind == "pbm" and len(metadata["data_checksum"]) == 64
    assert 0.6 < metadata["metrics"]["test"]["auc"] < 1.0
    assert main(["simulator", "evaluate", str(out), "--split", "valid"]) == 0
    assert f"valid: auc {metadata['metrics']['valid']['auc']:.4f}" in capsys.readouterr().out
    broken = tmp_path / "broken.pt"
    broken.write_text("not a checkpoint")
    assert main(["simulator", "evaluate", str(broken)]) == 2
    assert "damaged or not a rerank-env checkpoint" in capsys.readouterr().err


def test_cli_report_writes_markdown_csv_and_plots(
    data_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("RERANK_ENV_DATA", str(data_root))
    out = tmp_path / "report"
    code = main(
        [
            "simulator",
            "report",
            "--epochs",
            "1",
            "--dim",
            "8",
            "--requests",
            "20",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    for name in ("report.md", "metrics.csv", "reliability.png", "headroom.png"):
        assert (out / name).stat().st_size > 100, name
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    values = {row["simulator"]: row for row in rows}
    composed = next(name for name in values if name.startswith("transformer+composed"))
    # Order and composition matter under the composed simulator, not under pointwise.
    assert float(values[composed]["headroom"]) > 0.01 > float(values["pointwise"]["headroom"])
    assert 0.6 < float(values["pointwise"]["auc"]) < 1
    assert "| pointwise |" in (out / "report.md").read_text()


def test_fitting_works_inside_no_grad(data_root) -> None:
    from simulators.data import PipelineConfig, load_rerank_data
    from simulators.factory import SimulatorSpec, build_simulator
    from simulators.training import fit_simulator

    data = load_rerank_data("ml-100k", data_root, PipelineConfig(retriever="pop"), progress=False)
    spec = SimulatorSpec.for_data(data, "pbm", dim=8)
    model = build_simulator(
        spec, torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    )
    with torch.no_grad():  # e.g. an environment built lazily inside an evaluation loop
        result = fit_simulator(model, data, epochs=2, progress=False)
    assert result.train_nll[1] < result.train_nll[0]
