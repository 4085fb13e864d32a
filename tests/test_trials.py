"""Trials here, in worker processes and on Ray: stored once, retried, same results."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from agents.common.trials import RayOptions, Trial, TrialError, TrialStore, run_trials
from simulators.data.errors import ConfigError


def _square(offset: int, value: int, log: str) -> dict:
    """A trial: appends its key to ``log`` (one line per attempt) and returns a record."""
    with open(log, "a") as handle:
        handle.write(f"{value}\n")
    return {"value": value, "square": value * value + offset}


def _dies_once(offset: int, value: int, log: str) -> dict:
    """Kills its own worker on the first attempt (as the OOM killer or a lost node would)."""
    marker = Path(log).with_suffix(f".{value}.tried")
    with open(log, "a") as handle:
        handle.write(f"{value}\n")
    if not marker.exists():
        marker.write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
    return {"value": value, "square": value * value + offset}


def _raises(offset: int, value: int, log: str) -> dict:
    raise ValueError(f"trial {value} is broken")


def _attempts(log: Path) -> list[int]:
    return sorted(int(line) for line in log.read_text().split()) if log.exists() else []


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs, shared by this module's tests."""
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    # Workers cannot import this test module: its trial functions travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _trials(function, log: Path, values=range(4)) -> list[Trial]:
    return [Trial(f"sq/seed{v}", function, (v, str(log))) for v in values]


def test_local_trials_are_stored_at_once_and_never_run_twice(tmp_path) -> None:
    store, log = TrialStore(tmp_path / "runs"), tmp_path / "attempts.log"
    finished = []
    records = run_trials(
        _trials(_square, log), store, shared=(10,), on_finish=lambda t, r: finished.append(t.key)
    )
    assert [records[f"sq/seed{v}"]["square"] for v in range(4)] == [10, 11, 14, 19]
    assert finished == [f"sq/seed{v}" for v in range(4)]  # in order, each stored on finishing
    assert store.read("sq/seed2") == {"value": 2, "square": 14}
    # A re-run (resume) with two more trials runs only those.
    records = run_trials(_trials(_square, log, range(6)), store, shared=(10,))
    assert _attempts(log) == [0, 1, 2, 3, 4, 5]
    assert records["sq/seed5"]["square"] == 35
    # A fresh store (a study started anew) forgets them and runs all again.
    run_trials(_trials(_square, log, range(2)), TrialStore(store.folder, fresh=True), shared=(10,))
    assert _attempts(log) == [0, 0, 1, 1, 2, 3, 4, 5]  # sorted: seeds 0 and 1 twice
    assert store.read("sq/seed5") is None


def test_trial_errors_are_clear(tmp_path) -> None:
    store, log = TrialStore(tmp_path), tmp_path / "log"
    with pytest.raises(ConfigError, match="backend must be one of"):
        run_trials(_trials(_square, log), store, backend="dask")
    with pytest.raises(ConfigError, match=r"repeated: \['sq/seed0'\]"):
        run_trials(_trials(_square, log, [0, 0]), store)
    with pytest.raises(ConfigError, match="max_retries must be >= 0"):
        RayOptions(max_retries=-1)
    with pytest.raises(ConfigError, match="cpus_per_trial must be > 0"):
        RayOptions(cpus_per_trial=0)


def _torch_trial(offset: int, seed: int) -> dict:
    """A trial whose result depends on its seed and on torch's float arithmetic."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(64, 64, generator=generator)
    return {
        "seed": seed,
        "value": float((weights @ weights.T).sum()) + offset,
        "threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }


def test_processes_give_the_records_of_one_thread_runs_here(tmp_path) -> None:
    import torch

    trials = [Trial(f"t/seed{seed}", _torch_trial, (seed,)) for seed in range(6)]
    started, finished = [], []
    records = run_trials(
        trials,
        TrialStore(tmp_path / "processes"),
        shared=(5,),
        backend="processes",
        workers=2,
        on_start=lambda t: started.append(t.key),
        on_finish=lambda t, r: finished.append(t.key),
        progress=False,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_trials(trials, TrialStore(tmp_path / "local"), shared=(5,))
    finally:
        torch.set_num_threads(threads)
    assert [records[t.key]["value"] for t in trials] == [local[t.key]["value"] for t in trials]
    assert {record["threads"] for record in records.values()} == {1}
    assert {record["pid"] for record in records.values()}.isdisjoint({os.getpid()})
    assert started == [t.key for t in trials] and sorted(finished) == sorted(started)
    assert TrialStore(tmp_path / "processes").read("t/seed3")["value"] == local["t/seed3"]["value"]
    assert torch.get_num_threads() == threads  # the caller's thread count is left alone


def test_processes_report_a_raising_trial_after_storing_the_others(tmp_path) -> None:
    store, log = TrialStore(tmp_path), tmp_path / "log"
    trials = _trials(_square, log, [0, 1]) + [Trial("sq/seed2", _raises, (2, str(log)))]
    with pytest.raises(
        TrialError, match=r"(?s)1 trial\(s\) failed: sq/seed2.*ValueError: trial 2 is"
    ):
        run_trials(trials, store, shared=(0,), backend="processes", workers=2, progress=False)
    assert store.read("sq/seed1") == {"value": 1, "square": 1} and store.read("sq/seed2") is None
    with pytest.raises(ConfigError, match="workers must be >= 1, got 0"):
        run_trials(trials, store, backend="processes", workers=0)


def test_processes_refuse_a_cuda_task(tmp_path) -> None:
    class OnCuda:
        device = "cuda:0"

    with pytest.raises(ConfigError, match="CUDA cannot be used in a forked process"):
        run_trials(
            _trials(_square, tmp_path / "log"),
            TrialStore(tmp_path),
            shared=(OnCuda(),),
            backend="processes",
        )


def test_ray_missing_names_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[ray\]"'):
        run_trials(_trials(_square, tmp_path / "log"), TrialStore(tmp_path), backend="ray")


def test_ray_gives_the_local_records(tmp_path, local_ray) -> None:
    local = run_trials(
        _trials(_square, tmp_path / "a.log"), TrialStore(tmp_path / "a"), shared=(3,)
    )
    on_ray = run_trials(
        _trials(_square, tmp_path / "b.log"),
        TrialStore(tmp_path / "b"),
        shared=(3,),
        backend="ray",
        progress=False,
    )
    assert on_ray == local
    assert list(on_ray) == [f"sq/seed{v}" for v in range(4)]  # the trials' order, not finishing


def test_a_killed_worker_loses_no_finished_trial_and_its_trial_is_retried(
    tmp_path, local_ray
) -> None:
    store, log = TrialStore(tmp_path / "runs"), tmp_path / "attempts.log"
    trials = (
        _trials(_square, log, [0, 1]) + _trials(_dies_once, log, [2]) + _trials(_square, log, [3])
    )
    records = run_trials(
        trials,
        store,
        shared=(0,),
        backend="ray",
        ray_options=RayOptions(max_retries=2),
        progress=False,
    )
    assert {key: r["square"] for key, r in records.items()} == {
        "sq/seed0": 0,
        "sq/seed1": 1,
        "sq/seed2": 4,
        "sq/seed3": 9,
    }
    assert _attempts(log) == [0, 1, 2, 2, 3]  # the killed trial ran twice, the rest once
    assert all(store.read(f"sq/seed{v}") is not None for v in range(4))


def test_a_raising_trial_is_reported_after_the_others_are_stored(tmp_path, local_ray) -> None:
    store, log = TrialStore(tmp_path / "runs"), tmp_path / "attempts.log"
    trials = _trials(_square, log, [0, 1]) + _trials(_raises, log, [2])
    with pytest.raises(TrialError, match=r"(?s)1 trial\(s\) failed: sq/seed2.*trial 2 is broken"):
        run_trials(trials, store, shared=(0,), backend="ray", progress=False)
    assert store.read("sq/seed0") == {"value": 0, "square": 0}
    assert store.read("sq/seed1") == {"value": 1, "square": 1}
    assert store.read("sq/seed2") is None  # not retried (it would raise again), not stored


def _compare_against_local(tmp_path: Path, name: str, **backend) -> Path:
    """Run a tiny compare on ``backend`` and locally on one torch thread; the same tables.

    Same seeds, one torch thread per run both ways: the same table but for wall clocks.
    """
    import csv

    import torch

    from agents.compare import run_compare

    settings = {
        "env_kwargs": {"num_candidates": 10, "slate_length": 4},
        "agents": ["initial-order", "random", "prm", "seq2slate"],
        "seeds": 2,
        "requests": 20,
        "permutations": 20,
        "budget": "tiny",
        "out": tmp_path,
        "progress": False,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_compare(name="local", **settings)
    finally:
        torch.set_num_threads(threads)
    elsewhere = run_compare(name=name, **backend, **settings)
    clocks = {"fit_s", "latency_ms", "fit_s_low", "fit_s_high"}

    def table(folder: Path, name: str) -> list[dict]:
        rows = list(csv.DictReader((folder / name).open()))
        return [{k: v for k, v in row.items() if not k.startswith(tuple(clocks))} for row in rows]

    for table_name in ("per_seed.csv", "results.csv"):
        assert table(elsewhere, table_name) == table(local, table_name), table_name
    assert len(table(local, "per_seed.csv")) == 4 * 2
    # The records sit where --resume reads them.
    stored = sorted(
        p.relative_to(elsewhere / "runs").as_posix() for p in (elsewhere / "runs").rglob("*")
    )
    assert "prm/seed1.json" in stored and "initial-order/seed-all.json" in stored
    return elsewhere


def test_compare_on_ray_gives_the_local_table(tmp_path, local_ray) -> None:
    _compare_against_local(tmp_path, "ray", backend="ray", ray_options=RayOptions(cpus_per_trial=1))


def test_compare_in_processes_gives_the_local_table(tmp_path) -> None:
    _compare_against_local(tmp_path, "processes", backend="processes", workers=2)
