"""Shared fixtures: where the real test data lives, and the tasks many modules use.

Session-scoped, so each is built once per run whatever the modules that need it
(tests must not modify them; tasks' arrays are read-only anyway).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# glibc hands every large freed block back to the OS, so torch's large temporaries
# (an oracle's 65,536-list batches) fault their pages in again at each call: keep
# them instead (an oracle run's system time: 2.6 s -> 0.3 s). glibc reads these at
# process start: set here, in the process that starts the xdist workers, they reach
# the workers and what they start (notebook kernels, command lines).
for _name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
    os.environ.setdefault(_name, str(4 << 30))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs in one pytest-xdist worker per core (pyproject's addopts): each
    # worker, and the processes it starts (notebook kernels, command lines), gets its
    # share of the cores, so that torch's thread pools do not oversubscribe them.
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _threads = str(max(1, (os.cpu_count() or 1) // _workers))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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


@pytest.fixture(scope="session")
def _run_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole run, shared by the xdist workers.

    Caches are written atomically and fitted bundles under a file lock, so a bundle
    (the synthetic world's, say) is fitted once per run, not once per worker.
    """
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cache"


@pytest.fixture(autouse=True)
def _isolated_cache(_run_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """Keep every test's processed-data cache out of the user's real cache folder."""
    monkeypatch.setenv("RERANK_ENV_CACHE", str(_run_cache))
    # SB3's default logger (tests that call .learn() themselves) makes a folder per call
    monkeypatch.setenv("SB3_LOGDIR", str(_run_cache.parent / "sb3-logs"))


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the ``slow`` tests first (stable order otherwise).

    xdist hands tests out in collection order; starting the long ones first keeps a
    worker from picking up a minute-long notebook while the other has run dry.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
