"""Processed-data cache and the ``rerank-env data`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import simulators.data.datasets as datasets
from agents.cli import main
from simulators.data.cache import CACHE_FORMAT_VERSION, read_cache
from simulators.data.datasets import cache_path, load_rerank_data
from simulators.data.errors import CacheError
from simulators.data.pipeline_config import PipelineConfig

FAST = PipelineConfig(retriever="itemknn")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("RERANK_ENV_CACHE", str(folder))
    return folder


def _refuse_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("rebuilt although a cache file exists")

    monkeypatch.setattr(datasets, "build_rerank_data", fail)


def test_second_load_reads_the_cache(data_root, cache, monkeypatch) -> None:
    first = load_rerank_data("ml-100k", data_root, FAST, progress=False)
    path = cache_path("ml-100k", data_root, FAST)
    assert path.is_file() and path.parent.parent == cache
    assert not list(path.parent.glob("*.tmp")), "temporary file left behind"
    _refuse_builds(monkeypatch)
    second = load_rerank_data("ml-100k", data_root, FAST, progress=False)
    np.testing.assert_array_equal(first.candidates, second.candidates)
    np.testing.assert_array_equal(first.item_titles, second.item_titles)
    assert second.config == FAST and second.stats == first.stats
    assert second.user_feature_names == first.user_feature_names


def test_cache_metadata_records_version_config_checksum_and_metrics(data_root, cache) -> None:
    load_rerank_data("ml-100k", data_root, FAST, progress=False)
    _, metadata = read_cache(cache_path("ml-100k", data_root, FAST))
    assert metadata["format_version"] == CACHE_FORMAT_VERSION
    assert metadata["config"]["retriever"] == "itemknn"
    assert len(metadata["data_checksum"]) == 64
    assert 0 < metadata["stats"]["test_recall_at_n"] < 1


def test_cache_key_follows_config_and_raw_files(data_root, cache, tmp_path) -> None:
    base = cache_path("ml-100k", data_root, FAST)
    assert cache_path("ml-100k", data_root, PipelineConfig(retriever="pop")) != base
    assert cache_path("ml-100k", data_root, FAST) == base
    copy = tmp_path / "copy" / "ml-100k"
    shutil.copytree(data_root / "ml-100k", copy)
    assert cache_path("ml-100k", copy, FAST) == base  # same bytes, same key
    with open(copy / "u.data", "a") as handle:
        handle.write("1\t1000\t3\t881250949\n")
    assert cache_path("ml-100k", copy, FAST) != base


def test_corrupt_cache_is_refused_with_the_fix(data_root, cache, monkeypatch) -> None:
    load_rerank_data("ml-100k", data_root, FAST, progress=False)
    path = cache_path("ml-100k", data_root, FAST)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CacheError, match="rebuild"):
        load_rerank_data("ml-100k", data_root, FAST, progress=False)
    rebuilt = load_rerank_data("ml-100k", data_root, FAST, rebuild=True, progress=False)
    assert rebuilt.n_requests > 0
    read_cache(path)  # readable again


def test_cache_of_another_format_version_is_refused(data_root, cache) -> None:
    load_rerank_data("ml-100k", data_root, FAST, progress=False)
    path = cache_path("ml-100k", data_root, FAST)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    metadata = json.loads(str(arrays["__metadata__"]))
    metadata["format_version"] = CACHE_FORMAT_VERSION + 1
    arrays["__metadata__"] = np.asarray(json.dumps(metadata))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(CacheError, match=f"format version {CACHE_FORMAT_VERSION + 1}"):
        load_rerank_data("ml-100k", data_root, FAST, progress=False)


def test_no_cache_writes_nothing(data_root, cache) -> None:
    load_rerank_data("ml-100k", data_root, FAST, use_cache=False, progress=False)
    assert not cache.exists() or not any(cache.rglob("*.npz"))


def test_cli_data_prints_the_summary(data_root, cache, capsys) -> None:
    code = main(["data", "--data-dir", str(data_root), "--retriever", "itemknn"])
    out = capsys.readouterr().out
    assert code == 0
    assert "users / items" in out and "943 /" in out
    assert "retriever (itemknn) recall@50, test" in out
    assert str(cache) in out


def test_cli_data_json_has_the_numbers(data_root, cache, capsys) -> None:
    assert main(["data", "--data-dir", str(data_root), "--retriever", "pop", "--json"]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert numbers["users"] == 943 and 0 < numbers["test_recall_at_n"] < 1


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys) -> None:
    assert main(["data", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "rerank-env data: error: no ml-100k files" in err and "grouplens" in err
    assert main(["data", "--num-candidates", "3"]) == 2
    assert "num_candidates (3) must be >= slate_length (6)" in capsys.readouterr().err


def test_cli_rejects_unknown_choices() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--retriever", "bm25"])
    assert exit_info.value.code == 2


def test_data_env_var_is_the_only_place_searched_when_set(tmp_path, monkeypatch) -> None:
    from simulators.data.errors import DataNotFoundError
    from simulators.data.paths import find_dataset_dir

    monkeypatch.setenv("RERANK_ENV_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError) as err:
        find_dataset_dir("ml-100k")
    assert str(tmp_path / "ml-100k") in str(err.value)
    assert "shared" not in str(err.value)
