"""Shared fixtures: where the real test data lives, and the tasks many modules use.

Session-scoped, so each is built once per run whatever the modules that need it
(tests must not modify them; tasks' arrays are read-only anyway).
"""

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


#: The small task most agent tests train on: N = 10 candidates, L = 4 slots.
SMALL_TASK = {"num_candidates": 10, "slate_length": 4}


@pytest.fixture(scope="session")
def small_task():
    """``make_task(num_candidates=10, slate_length=4)`` on the embedded bundle."""
    from rerank_env import make_task

    return make_task(**SMALL_TASK)


@pytest.fixture(scope="session")
def task():
    """The default task (``SlateRerank-v0``'s: N = 50, L = 6) on the embedded bundle."""
    from rerank_env import make_task

    return make_task()


@pytest.fixture(scope="session")
def ml100k_ratings(data_root: Path):
    """The raw MovieLens 100K ratings (``load_movielens``)."""
    from simulators.data.movielens import load_movielens

    return load_movielens("ml-100k", data_root)
