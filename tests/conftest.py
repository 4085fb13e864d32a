"""Shared fixtures: where the real test data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    candidates = []
    if os.environ.get("RERANK_ENV_DATA"):
        candidates.append(Path(os.environ["RERANK_ENV_DATA"]))
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding ml-100k/ and open-bandit/ (fails under CI when missing)."""
    root = _data_root()
    if root is None:
        message = "test data not found: set RERANK_ENV_DATA or put it at ../shared/data"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep every test's processed-data cache out of the user's real cache folder."""
    monkeypatch.setenv("RERANK_ENV_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
