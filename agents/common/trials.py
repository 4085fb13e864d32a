"""Independent trials run here or on Ray, each result stored the moment it finishes.

A *trial* is one (agent, seed, config) run: a picklable top-level function and its
arguments that return a JSON-able record. :func:`run_trials` runs every trial whose
record its :class:`TrialStore` lacks and writes each record atomically as it arrives,
so a stopped or crashed run loses no finished trial and a re-run (``--resume``)
counts none twice. Three backends:

* ``"local"``: one trial after another in this process, in the given order;
* ``"processes"``: the trials spread over ``workers`` processes of this machine
  (a :class:`concurrent.futures.ProcessPoolExecutor` whose workers are forked, so
  the shared objects are inherited rather than copied), each trial on one torch
  thread. Small models train faster as several one-thread runs side by side than as
  one run over several threads, and a trial's result does not depend on the number
  of workers. A trial that raises does not stop the others; a worker that dies (out
  of memory) fails the trials still running, and both are named by
  :class:`TrialError` once the rest are stored. POSIX only (it forks), and not with
  a CUDA task (CUDA cannot be used in a forked child);
* ``"ray"``: every trial a Ray task (``pip install -e ".[ray]"``) on a local Ray
  started here or on a cluster (``address``), the shared objects (task, evaluation
  set) put in Ray's object store once. A task whose worker dies (killed, out of
  memory, a lost node) is retried up to ``max_retries`` times by Ray; a trial that
  raises is not (it would raise again): the others finish and are stored, then
  :class:`TrialError` names it.

Ray was chosen over a scheduler of our own because it is what RL researchers'
clusters already run (RLlib, Tune), and its tasks give retries and the object store
for free. Results do not depend on the backend: each trial seeds itself, and the
records are tabulated in the trials' order whatever order they finished in.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from simulators._io import atomic_write
from simulators.data.errors import ConfigError
from simulators.progress import progress_bar

#: The backends :func:`run_trials` knows.
BACKENDS = ("local", "processes", "ray")


@dataclass(frozen=True)
class Trial:
    """One independent run.

    Attributes:
        key: Where its record is stored, relative to the store (e.g.
            ``"prm/seed3"``); also its name in messages.
        function: A module-level function (Ray pickles it by reference) called as
            ``function(*shared, *arguments)``; returns a JSON-able dict.
        arguments: Its own arguments (small: they are pickled per trial).
    """

    key: str
    function: Callable[..., dict[str, Any]]
    arguments: tuple[Any, ...] = ()


@dataclass(frozen=True)
class RayOptions:
    """Where and how trials run on Ray.

    Attributes:
        address: A running cluster's address (``"auto"``, ``"ray://host:10001"``);
            ``None`` starts a local Ray in this process (or uses the one already
            started by ``ray.init``).
        num_cpus: CPUs of the local Ray started here (``None``: all).
        cpus_per_trial: CPUs each trial reserves; Ray sets its workers' thread
            count (``OMP_NUM_THREADS``) to it.
        gpus_per_trial: GPUs each trial reserves (fractions share one).
        max_retries: Times Ray runs a trial again after its worker died.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_retries: int = 2

    def __post_init__(self) -> None:
        if self.cpus_per_trial <= 0:
            raise ConfigError(f"cpus_per_trial must be > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise ConfigError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus must be >= 1, got {self.num_cpus}")


class TrialError(RuntimeError):
    """Trials raised; every other trial finished and was stored."""


class TrialStore:
    """JSON records of finished trials under ``folder``, written atomically.

    Args:
        folder: Records lie at ``folder/<key>.json``.
        fresh: Delete the records an earlier run left in ``folder`` first (a study
            started anew rather than resumed).
    """

    def __init__(self, folder: str | Path, *, fresh: bool = False) -> None:
        self.folder = Path(folder)
        if fresh and self.folder.exists():
            shutil.rmtree(self.folder)

    def path(self, key: str) -> Path:
        """The record file of ``key``."""
        return self.folder / f"{key}.json"

    def read(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key``, or ``None``."""
        path = self.path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def write(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` (atomically: a crash leaves the old file or the new one)."""
        text = json.dumps(record, indent=1, default=json_default) + "\n"
        atomic_write(self.path(key), lambda out: out.write(text.encode()))


def json_default(value: Any) -> Any:
    """JSON for numpy values and tensors in records (``str`` for anything else)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def run_trials(
    trials: Sequence[Trial],
    store: TrialStore,
    *,
    shared: Sequence[Any] = (),
    backend: str = "local",
    ray_options: RayOptions | None = None,
    on_start: Callable[[Trial], None] | None = None,
    on_finish: Callable[[Trial, dict[str, Any]], None] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the trials ``store`` holds no record of; return every trial's record.

    Args:
        trials: Distinct keys; stored ones are read back, not run.
        store: Where records are read and written.
        shared: Objects every trial receives first (``function(*shared, ...)``),
            sent to Ray's object store once rather than with each trial.
        backend: ``"local"``, ``"processes"`` or ``"ray"`` (see the module docstring).
        ray_options: The Ray backend's settings (default :class:`RayOptions`).
        on_start: Called before a trial runs (local backend) or is submitted (the
            others).
        on_finish: Called with each record as it is stored.
        progress: A bar over the trials to run (processes and Ray backends; the local
            backend's trials show their own).
        workers: The processes backend's worker processes (``None``: one per CPU this
            process may use, :func:`available_cpus`).

    Raises:
        ConfigError: An unknown backend, repeated keys, Ray not installed, ``workers``
            below 1, or the processes backend where it cannot fork.
        TrialError: A trial raised (the others were stored first).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    keys = [trial.key for trial in trials]
    if len(set(keys)) != len(keys):
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        raise ConfigError(f"trial keys must be distinct; repeated: {repeated}")
    records = {key: record for key in keys if (record := store.read(key)) is not None}
    pending = [trial for trial in trials if trial.key not in records]
    if backend == "local":
        for trial in pending:
            if on_start is not None:
                on_start(trial)
            record = trial.function(*shared, *trial.arguments)
            _finish(trial, record, store, records, on_finish)
    elif backend == "processes" and pending:
        _run_in_processes(pending, store, records, shared, workers, on_start, on_finish, progress)
    elif pending:
        _run_on_ray(
            pending,
            store,
            records,
            shared,
            ray_options or RayOptions(),
            on_start,
            on_finish,
            progress,
        )
    return {key: records[key] for key in keys}


def _finish(
    trial: Trial,
    record: dict[str, Any],
    store: TrialStore,
    records: dict[str, dict[str, Any]],
    on_finish: Callable[[Trial, dict[str, Any]], None] | None,
) -> None:
    if not isinstance(record, dict):
        raise TypeError(
            f"trial {trial.key}: {trial.function.__name__} returned "
            f"{type(record).__name__}, not a dict record"
        )
    store.write(trial.key, record)
    records[trial.key] = record
    if on_finish is not None:
        on_finish(trial, record)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: The shared objects of the processes backend, set in each worker by its initializer.
_SHARED: tuple[Any, ...] = ()


def _adopt_shared(shared: tuple[Any, ...]) -> None:
    """Worker initializer: keep the (inherited, not pickled) shared objects."""
    global _SHARED  # noqa: PLW0603  (one per worker process, set once)
    _SHARED = shared
    torch.set_num_threads(1)  # before any torch work in the fork: no OpenMP pool to inherit


def _call_with_shared(
    function: Callable[..., dict[str, Any]], arguments: tuple[Any, ...]
) -> dict[str, Any]:
    """A trial inside a worker process, on one torch thread."""
    return function(*_SHARED, *arguments)


def _run_in_processes(
    pending: list[Trial],
    store: TrialStore,
    records: dict[str, dict[str, Any]],
    shared: Sequence[Any],
    workers: int | None,
    on_start: Callable[[Trial], None] | None,
    on_finish: Callable[[Trial, dict[str, Any]], None] | None,
    progress: bool,
) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigError(
            "the processes backend forks its workers, which this platform cannot do: use "
            "backend 'local' (or 'ray')"
        )
    if any(_on_cuda(value) for value in shared):
        raise ConfigError(
            "the processes backend forks its workers, and CUDA cannot be used in a forked "
            "process: run a CUDA task with backend 'local' (or 'ray')"
        )
    count = min(workers or available_cpus(), len(pending))
    failures: list[tuple[Trial, BaseException]] = []
    bar = progress_bar(len(pending), f"trials on {count} processes", progress)
    with ProcessPoolExecutor(
        max_workers=count,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_adopt_shared,
        initargs=(tuple(shared),),
    ) as pool:
        running: dict[Future, Trial] = {}
        try:
            for trial in pending:
                if on_start is not None:
                    on_start(trial)
                running[pool.submit(_call_with_shared, trial.function, trial.arguments)] = trial
            while running:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    trial = running.pop(future)
                    try:
                        record = future.result()
                    except Exception as err:  # noqa: BLE001  (named in TrialError below)
                        failures.append((trial, err))
                    else:
                        _finish(trial, record, store, records, on_finish)
                    bar.update()
        except BaseException:  # Ctrl-C or a bad record: start no queued trial
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    bar.close()
    _raise_failures(failures)


def _on_cuda(value: Any) -> bool:
    """Whether ``value`` (a task, an evaluation set) says it lives on a CUDA device."""
    device = getattr(value, "device", None)
    return device is not None and torch.device(device).type == "cuda"


def _raise_failures(failures: list[tuple[Trial, BaseException]]) -> None:
    """:class:`TrialError` naming every failed trial and the first error, if any failed."""
    if failures:
        names = ", ".join(trial.key for trial, _ in failures)
        first = failures[0][1]
        raise TrialError(
            f"{len(failures)} trial(s) failed: {names}; every other trial finished and is "
            f"stored (run again to retry only these). First error:\n"
            + re.sub(r"\x1b\[[0-9;]*m", "", f"{type(first).__name__}: {first}")  # Ray's colours
        )


def _run_on_ray(
    pending: list[Trial],
    store: TrialStore,
    records: dict[str, dict[str, Any]],
    shared: Sequence[Any],
    options: RayOptions,
    on_start: Callable[[Trial], None] | None,
    on_finish: Callable[[Trial, dict[str, Any]], None] | None,
    progress: bool,
) -> None:
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(
            address=options.address,
            num_cpus=options.num_cpus if options.address is None else None,
            include_dashboard=False,
            log_to_driver=False,  # workers' own bars would interleave with the driver's
        )
    remote = ray.remote(
        num_cpus=options.cpus_per_trial,
        num_gpus=options.gpus_per_trial,
        max_retries=options.max_retries,
    )(_call)
    shared_refs = [ray.put(value) for value in shared]
    # Float sums (so trained models) depend on the thread count: a Ray trial runs on
    # as many torch threads as it reserves CPUs, so it equals a local run on as many.
    threads = max(1, int(options.cpus_per_trial))
    running = {}
    for trial in pending:
        if on_start is not None:
            on_start(trial)
        running[remote.remote(trial.function, threads, *shared_refs, *trial.arguments)] = trial
    failures: list[tuple[Trial, BaseException]] = []
    bar = progress_bar(len(pending), f"trials on ray ({len(pending)})", progress)
    while running:
        done, _ = ray.wait(list(running), num_returns=1)
        trial = running.pop(done[0])
        try:
            record = ray.get(done[0])
        except ray.exceptions.RayError as err:  # raised in the trial, or retries used up
            failures.append((trial, err))
        else:
            _finish(trial, record, store, records, on_finish)
        bar.update()
    bar.close()
    _raise_failures(failures)


def _call(function: Callable[..., dict[str, Any]], threads: int, *arguments: Any) -> dict[str, Any]:
    """A trial inside a Ray worker, on ``threads`` torch threads."""
    with torch_threads(threads):
        return function(*arguments)


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray  # noqa: PLC0415  (an optional extra)
    except ImportError:
        raise ConfigError(
            'the Ray backend needs Ray: pip install -e ".[ray]" (or pip install "ray>=2.40")'
        ) from None
    return ray


def add_backend_arguments(
    parser: argparse.ArgumentParser,
    unit: str = "run",
    default_backend: str | None = "local",
    default_help: str | None = None,
) -> None:
    """``--backend``, ``--workers``, ``--address``, ``--ray-cpus``, ``--cpus-per-run``, ...

    (and ``--max-retries``). Shared by ``rerank-env compare`` and the benchmark
    studies; read them back with ``args.backend``, ``args.workers`` and
    :func:`ray_options_from`. ``unit`` names a trial in the help (``"run"``);
    ``default_backend`` may be ``None`` for a command that chooses it (say how in
    ``default_help``).
    """
    default_help = default_help or default_backend
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=default_backend,
        help=f"local: one {unit} after another here; processes: the {unit}s spread over "
        f"--workers processes here, each on one torch thread; ray: each a Ray task on a "
        f'local Ray or the cluster at --address (pip install -e ".[ray]"). Each {unit}\'s '
        f"record is stored as it finishes; --resume skips stored ones (default: "
        f"{default_help})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help=f"processes: worker processes (default: one per CPU, here {available_cpus()})",
    )
    parser.add_argument(
        "--address",
        help="ray: a running cluster's address (auto, ray://HOST:10001); "
        "default: start a local Ray on this machine",
    )
    parser.add_argument(
        "--ray-cpus",
        type=int,
        help="ray: CPUs of the local Ray started here, i.e. workers (default: all cores)",
    )
    parser.add_argument(
        "--cpus-per-run",
        type=float,
        default=1.0,
        help=f"ray: CPUs each {unit} reserves (its torch threads)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help=f"ray: times a {unit} whose worker died (killed, out of memory) is started again",
    )


def ray_options_from(args: argparse.Namespace) -> RayOptions:
    """The :class:`RayOptions` of :func:`add_backend_arguments`' options."""
    return RayOptions(
        address=args.address,
        num_cpus=args.ray_cpus,
        cpus_per_trial=args.cpus_per_run,
        max_retries=args.max_retries,
    )


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` torch threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
