"""The runs of ``compare``: one trial per (agent, seed), stored as it ends and resumed.

:func:`run_compare` checks its arguments and agents before any work, builds the
task and the evaluation set, runs the missing (agent, seed) trials (here or on Ray,
:mod:`agents.common.trials`), then hands the rows to :mod:`agents.compare.report`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.base import Agent, TrainableAgent, UnsupportedTaskError
from agents.common.commands import command_task
from agents.common.telemetry import tensorboard_writer
from agents.common.trials import (
    BACKENDS,
    RayOptions,
    Trial,
    TrialStore,
    json_default,
    require_ray,
    run_trials,
)
from agents.compare.presets import QUICK_AGENTS
from agents.compare.report import Gathered, write_results
from agents.evaluation import (
    EvaluationSet,
    RequestValues,
    evaluate_agent,
    make_evaluation_set,
    reference_agent,
)
from agents.registry import make_agent
from rerank_env.task import RerankTask
from simulators._io import atomic_write
from simulators.data.cache import package_version
from simulators.data.errors import ConfigError
from simulators.progress import LogProgress, log_line, progress_bar

#: Version of the per-run records that ``--resume`` reads: ``runs/<agent>/seed<k>.json``
#: and, since version 2, the per-request values beside it (``seed<k>.npz``).
_RECORD_FORMAT = 2


def _deterministic(agent: Any) -> bool:
    return not isinstance(agent, TrainableAgent) and "seed" not in agent.config()


def _agent_for_seed(agent: Agent, seed: int) -> Agent:
    """A given agent instance as it runs for ``seed``.

    A trained agent is evaluated as it is (once: it counts for every seed). An
    untrained one with a ``seed`` in its :meth:`~agents.base.Agent.config` is
    rebuilt from its config with that seed (its sub-agents keep theirs); any other
    is copied, so ``fit`` never changes the caller's object.
    """
    if isinstance(agent, TrainableAgent) and agent.fitted:
        return agent
    config = agent.config()
    if "seed" in config:
        try:
            return type(agent)(**{**config, "seed": seed})
        except TypeError as err:
            raise ConfigError(
                f"cannot rebuild agent {agent.name!r} for seed {seed} from its config() "
                f"({err}): its constructor must accept config()'s keys"
            ) from None
    return copy.deepcopy(agent)


def _agent_factory(item: Any, budget: str) -> Any:
    """``make(seed) -> Agent`` for one item of ``agents``, or :class:`ConfigError`."""
    if isinstance(item, Agent):
        return lambda seed: _agent_for_seed(item, seed)
    if isinstance(item, str):
        try:
            make_agent(item, seed=0, budget=budget)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return lambda seed: make_agent(item, seed=seed, budget=budget)
    raise ConfigError(
        f"agents must be registered names (e.g. 'prm'), entry points 'module:Class' or "
        f"Agent instances; got {item!r} ({type(item).__name__})"
    )


def run_compare(
    *,
    env_id: str = "SlateRerank-v0",
    env_kwargs: dict[str, Any] | None = None,
    agents: Sequence[str | Agent] = QUICK_AGENTS,
    seeds: int = 5,
    requests: int | None = 500,
    permutations: int = 200,
    beam_width: int = 8,
    budget: str = "full",
    out: str | Path = "runs",
    name: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    backend: str = "local",
    ray_options: RayOptions | None = None,
    reference: str | None = None,
    workers: int | None = None,
) -> Path:
    """Train and evaluate ``agents`` over ``seeds`` seeds; returns the run folder.

    Args:
        env_id: A rerank-env environment id (``rerank_env.VARIANTS``).
        env_kwargs: Its keyword arguments (task and episode settings).
        agents: Registered names, ``beam-<B>``, entry points ``"module:Class"``, or
            :class:`~agents.base.Agent` instances (trained ones are evaluated as they
            are; untrained ones are trained per seed on copies, see
            :func:`_agent_for_seed`).
        seeds: Seeds per agent (agents without randomness run once).
        requests: Test requests evaluated (``None``: all).
        permutations: Random lists per request for HR@k%.
        beam_width: Width of the beam-search reference.
        budget: ``"tiny"``, ``"quick"`` or ``"full"``: the agents' config presets.
        out: Parent folder of the run folder.
        name: Run folder name (default: env id and time).
        overwrite: Reuse a non-empty run folder, dropping its stored runs.
        resume: Continue a run folder: every (agent, seed) run already stored in its
            ``runs/`` is read back instead of run again. Refused when the folder was
            made with other settings (environment, requests, budget, task, version);
            the agents and the number of seeds may differ, so agents can be run in
            parts and tabulated together.
        device: Torch device of the task and agents.
        progress: Progress on stderr: bars on a terminal; elsewhere (a pipe, a log
            file) timestamped lines as each run starts and ends and at least every
            10 s while an agent trains. The results are never printed here (see
            :func:`results_text`); ``False`` is silent.
        backend: ``"local"`` (one run after another here), ``"processes"`` (the runs
            spread over ``workers`` processes here, each on one torch thread) or
            ``"ray"`` (every (agent, seed) run a Ray task; :mod:`agents.common.trials`).
            Same seeds, same results table up to the float rounding of the torch
            thread count (one per run but on the local backend), and the wall-clock
            columns (fit time, latency).
        ray_options: The Ray backend's cluster address, CPUs per run and retries.
        reference: The agent of the paired table (each agent's difference from it on
            the same requests): an agent's name or the name it was given by in
            ``agents``; default ``"pointwise-greedy"`` when it is compared, else the
            first agent.
        workers: The processes backend's worker processes (``None``: one per CPU).
    """
    factories = _checked_arguments(agents, budget, seeds, backend, resume, overwrite)
    name = name or f"{env_id}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    folder = _run_folder(Path(out) / name, resume, overwrite)
    started = time.perf_counter()
    task = command_task(env_id, env_kwargs, device)
    reference = _reference(agents, _check_agents(task, env_id, agents, factories), reference)
    spec = _run_spec(env_id, env_kwargs, requests, permutations, beam_width, budget, task)
    store = RunStore(folder / "runs")
    if resume:
        _check_spec(folder, spec)
        store.check()  # before the references are built: a missing file fails at once
    elif overwrite and (folder / "runs").exists():
        shutil.rmtree(folder / "runs")  # --overwrite starts again: no stale run records
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "spec.json", spec)
    log_line(f"task: {task.summary()}", progress)
    log_line(
        f"references: beam-{beam_width}, pointwise greedy and {permutations} random lists per "
        f"request on {requests or 'all'} test requests",
        progress,
    )
    evaluation = make_evaluation_set(
        task, requests=requests, permutations=permutations, beam_width=beam_width, progress=progress
    )
    plan, trials = _plan(agents, factories, seeds, budget, folder, progress and backend == "local")
    records, fresh = _run_planned(
        trials, store, (task, evaluation), backend, ray_options, progress, workers
    )
    gathered = _gather(plan, records, fresh, progress)
    title = f"rerank-env compare: {env_id}"
    write_results(folder, gathered, evaluation, title=title, reference=reference)
    config = {
        "command": sys.argv,
        "env_id": env_id,
        "env_kwargs": {k: repr(v) for k, v in (env_kwargs or {}).items()},
        "agents": [item if isinstance(item, str) else repr(item) for item in agents],
        "seeds": seeds,
        "requests": len(evaluation.requests),
        "permutations": permutations,
        "beam_width": beam_width,
        "budget": budget,
        "reference": reference,
        "task": task.summary(),
        "task_description": task.description,
        "headroom": evaluation.headroom,
        "headroom_line": evaluation.headroom_line(),
        "versions": {
            "rerank-env": package_version(),
            "torch": torch.__version__,
            "gymnasium": gym.__version__,
            "numpy": np.__version__,
        },
        "tensorboard": any(records[key].get("tensorboard", False) for key in fresh),
        "resumed_runs": len(trials) - len(fresh),
        "wall_s": time.perf_counter() - started,
        "utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    log_line(f"wrote {folder} in {config['wall_s']:.0f} s", progress)
    return folder


def _checked_arguments(
    agents: Sequence[str | Agent],
    budget: str,
    seeds: int,
    backend: str,
    resume: bool,
    overwrite: bool,
) -> list[Any]:
    """The agents' factories, once the arguments are checked (before any work)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "ray":
        require_ray()
    factories = [_agent_factory(item, budget) for item in agents]
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    if resume and overwrite:
        raise ConfigError("give --resume or --overwrite, not both")
    return factories


def _run_folder(folder: Path, resume: bool, overwrite: bool) -> Path:
    """``folder``, refused when it holds other work that would be overwritten or lost."""
    if folder.exists() and any(folder.iterdir()) and not (overwrite or resume):
        raise ConfigError(
            f"run folder {folder} exists and is not empty: choose another --name, pass "
            "--resume to continue it or --overwrite to start it again"
        )
    if resume and not (folder / "spec.json").exists():
        raise ConfigError(
            f"--resume: {folder} holds no spec.json, so it is not a compare run folder (or "
            "was written before runs were resumable); start it without --resume"
        )
    return folder


def _check_agents(
    task: RerankTask, env_id: str, agents: Sequence[str | Agent], factories: list[Any]
) -> list[str]:
    """The agents' names, once no agent is one the task does not suit, nor two of one name."""
    names: dict[str, str] = {}
    for item, make in zip(agents, factories, strict=True):
        candidate = make(0)  # e.g. the oracle on a task too large to enumerate
        try:
            candidate.check_task(task)
        except UnsupportedTaskError as err:
            raise ConfigError(f"agent {candidate.name!r} cannot run on {env_id}: {err}") from None
        # Runs are stored and tabulated by name: two agents of one name would share records.
        label = item if isinstance(item, str) else type(item).__name__
        if candidate.name in names:
            raise ConfigError(
                f"agents {names[candidate.name]!r} and {label!r} are both named "
                f"{candidate.name!r}, so their runs would be stored as one: give them "
                "different configs (or drop one)"
            )
        names[candidate.name] = label
    return list(names)


def _reference(agents: Sequence[str | Agent], names: list[str], reference: str | None) -> str:
    """The paired table's reference agent by name (``reference`` may be an item of ``agents``)."""
    pairs = zip(agents, names, strict=True)
    aliases = {item: name for item, name in pairs if isinstance(item, str)}
    try:
        return reference_agent(names, aliases.get(reference, reference))
    except ValueError as err:
        raise ConfigError(f"--reference: {err}") from None


def _plan(
    agents: Sequence[str | Agent],
    factories: list[Any],
    seeds: int,
    budget: str,
    folder: Path,
    bars: bool,
) -> tuple[list[tuple[int, str]], dict[str, Trial]]:
    """``(plan, trials)``: every (seed, record key) in table order, and each run once.

    Every (agent, seed) run is a trial stored as ``runs/<agent>/seed<k>.json``
    (``seed-all`` for an agent without randomness: run once, counted for every seed).
    ``bars``: the runs show progress bars (not in Ray workers, whose bars would
    interleave with the driver's).
    """
    plan: list[tuple[int, str]] = []
    trials: dict[str, Trial] = {}
    for seed in range(seeds):
        for item, make in zip(agents, factories, strict=True):
            agent = make(seed)
            key = f"{agent.name}/seed{'-all' if _runs_once(agent) else seed}"
            plan.append((seed, key))
            if key not in trials:
                log_dir = str(folder / "logs" / agent.name / f"seed{seed}")
                trials[key] = Trial(key, _compare_trial, (item, budget, seed, log_dir, bars))
    return plan, trials


def _run_planned(
    trials: dict[str, Trial],
    store: TrialStore,
    shared: tuple[RerankTask, EvaluationSet],
    backend: str,
    ray_options: RayOptions | None,
    progress: bool,
    workers: int | None = None,
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """``(records by key, keys run now)``: the stored records and the runs that were missing."""
    fresh: set[str] = set()
    bar = progress_bar(len(trials), "compare", progress and backend == "local")
    lines_only = isinstance(bar, LogProgress)  # no bar to show which run is in progress

    def announce(trial: Trial) -> None:
        seed, label = trial.arguments[2], trial.key.rsplit("/", 1)[0]
        if backend == "local" and not lines_only:  # log lines name the run themselves
            bar.set_description(f"seed {seed} {label}")
        # Elsewhere a run is handed over (queued), not started: its result line says when
        # it ended, and the backend's bar counts the runs.
        log_line(f"seed {seed} {label}: started", progress and lines_only and backend == "local")

    def collect(trial: Trial, record: dict[str, Any]) -> None:
        fresh.add(trial.key)
        _log_result(record, trial.arguments[2], progress)
        bar.update()

    records = run_trials(
        list(trials.values()),
        store,
        shared=shared,
        backend=backend,
        ray_options=ray_options,
        on_start=announce,
        on_finish=collect,
        progress=progress,
        workers=workers,
    )
    bar.close()
    return records, fresh


def _gather(
    plan: list[tuple[int, str]],
    records: dict[str, dict[str, Any]],
    fresh: set[str],
    progress: bool,
) -> Gathered:
    """The per-seed rows, training logs and click profiles of the planned runs."""
    gathered = Gathered()
    for seed, key in plan:
        record = records[key]
        first = not record["all_seeds"] or seed == record["row"]["seed"]
        if key not in fresh and first:
            _log_result(record, seed, progress, earlier=True)
        row = {**record["row"], "seed": seed}
        if record.get("curve_key") is not None:
            gathered.curve_keys[row["agent"]] = tuple(record["curve_key"])
        if first:  # an agent run once for all seeds counts its logs (and requests) once
            gathered.profiles += record["profiles"]
            gathered.curves += record["curves"]
            gathered.per_request.setdefault(row["agent"], []).append(record["per_request"])
        gathered.rows.append(row)
    return gathered


#: What must match for ``--resume`` to reuse a run folder's records.
_SPEC_KEYS = (
    "env_id",
    "env_kwargs",
    "requests",
    "permutations",
    "beam_width",
    "budget",
    "task",
    "rerank-env",
)


def _run_spec(
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    requests: int | None,
    permutations: int,
    beam_width: int,
    budget: str,
    task: RerankTask,
) -> dict[str, Any]:
    """What a run folder's records were measured under (``spec.json``)."""
    return {
        "format": _RECORD_FORMAT,
        "env_id": env_id,
        "env_kwargs": {k: repr(v) for k, v in sorted((env_kwargs or {}).items())},
        "requests": requests,
        "permutations": permutations,
        "beam_width": beam_width,
        "budget": budget,
        "task": _task_identity(task.description),
        "rerank-env": package_version(),
    }


def _task_identity(description: dict[str, Any]) -> dict[str, Any]:
    """A task's description without where its files lie (the data checksum says what they are)."""
    plain = json.loads(json.dumps(description, default=str))
    plain.pop("bundle", None)  # the same bundle from another checkout or install
    return plain


def _check_spec(folder: Path, spec: dict[str, Any]) -> None:
    """Refuse ``--resume`` on a folder whose records were measured otherwise."""
    stored = json.loads((folder / "spec.json").read_text())
    stored["task"] = _task_identity(stored.get("task") or {})
    if stored.get("format") != _RECORD_FORMAT:
        raise ConfigError(
            f"--resume: {folder} was written in record format {stored.get('format')!r}, this "
            f"version reads {_RECORD_FORMAT}: re-run it with --overwrite instead of --resume "
            "(its stored runs are dropped), or start a new run folder"
        )
    for key in _SPEC_KEYS:
        if stored.get(key) != spec[key]:
            raise ConfigError(
                f"--resume: {folder} was run with {key} = {stored.get(key)!r}, this command "
                f"has {spec[key]!r}; repeat the first command's settings or start a new run "
                "folder"
            )


def _runs_once(agent: Agent) -> bool:
    """Whether ``agent`` gives the same lists at every seed (run once, counted for all)."""
    return _deterministic(agent) or (isinstance(agent, TrainableAgent) and agent.fitted)


def _compare_trial(
    task: RerankTask,
    evaluation: EvaluationSet,
    item: str | Agent,
    budget: str,
    seed: int,
    log_dir: str,
    progress: bool,
) -> dict[str, Any]:
    """One (agent, seed) run of ``compare``, here or in a Ray worker: its record."""
    agent = _agent_factory(item, budget)(seed)
    return _run_one(agent, seed, task, evaluation, Path(log_dir), progress)


def _log_result(record: dict[str, Any], seed: int, progress: bool, earlier: bool = False) -> None:
    row = record["row"]
    log_line(
        f"seed {seed} {row['agent']}: fit {row['fit_s']:.1f} s, held-out reward "
        f"{row['reward_eval']:.4f}, {row['latency_ms']:.2f} ms/request"
        + (" (from an earlier run)" if earlier else ""),
        progress,
    )


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=1, default=json_default) + "\n"
    atomic_write(path, lambda out: out.write(text.encode()))


class RunStore(TrialStore):
    """Run records: ``<key>.json`` and the per-request values ``<key>.npz``.

    A record's ``"per_request"`` (:class:`~agents.evaluation.RequestValues`) is
    written beside its JSON, first and atomically (:meth:`RequestValues.save`), and
    the JSON names the file (``"per_request_file"``); the JSON is written last, so a
    record is complete once its JSON exists. ``compare`` and the benchmark studies
    that report two-way intervals store their runs this way.

    Args:
        folder: Records lie at ``folder/<key>.json`` and ``folder/<key>.npz``.
        fresh: Delete the records an earlier run left in ``folder`` first.
        remedy: What the errors about unreadable records tell the user to do.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        fresh: bool = False,
        remedy: str = "re-run with --overwrite (not --resume) to run the comparison again",
    ) -> None:
        super().__init__(folder, fresh=fresh)
        self.remedy = remedy

    def npz_path(self, key: str) -> Path:
        """The per-request values file of ``key``."""
        return self.path(key).with_suffix(".npz")

    def read(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key`` with its per-request values, or ``None``.

        Raises:
            ConfigError: The record's per-request values are missing or unreadable
                (a run folder of an older version).
        """
        record = super().read(key)
        if record is None:
            return None
        self._check_values(self.path(key))
        npz = self.npz_path(key)
        try:
            record["per_request"] = RequestValues.load(npz)
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            raise ConfigError(f"{err}; {self.remedy}") from None
        return record

    def check(self) -> None:
        """Refuse a store whose records lack their per-request values (see :meth:`read`)."""
        if self.folder.exists():
            for path in sorted(self.folder.rglob("*.json")):
                self._check_values(path)

    def _check_values(self, path: Path) -> None:
        npz = path.with_suffix(".npz")
        if not npz.exists():
            raise ConfigError(
                f"{path} has no per-request values ({npz} is missing; records of older "
                f"versions lack them): {self.remedy}"
            )

    def write(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record``'s per-request values, then the rest of it as JSON."""
        record["per_request"].save(self.npz_path(key))
        plain = {name: value for name, value in record.items() if name != "per_request"}
        super().write(key, {**plain, "per_request_file": self.npz_path(key).name})


def _run_one(
    agent: Agent,
    seed: int,
    task: RerankTask,
    evaluation: EvaluationSet,
    log_dir: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """Train (when untrained) and evaluate one agent: its record for the run folder."""
    pretrained = isinstance(agent, TrainableAgent) and agent.fitted
    fit_start = time.perf_counter()
    if isinstance(agent, TrainableAgent) and not pretrained:
        agent.log_dir = log_dir
        agent.fit(task, progress=progress)
    fit_time = time.perf_counter() - fit_start
    result = evaluate_agent(agent, evaluation)
    row = {"agent": agent.name, "seed": seed, **result.metrics, "fit_s": fit_time}
    writer = tensorboard_writer(log_dir)
    if writer is not None:  # the held-out metrics beside the training log
        for metric, value in result.metrics.items():
            if not math.isnan(value):
                writer.add_scalar(f"eval/{metric}", value, 0)
        writer.close()
    return {
        "row": row,
        # the same lists for every seed: evaluated once, counted for each
        "all_seeds": _deterministic(agent) or pretrained,
        "profiles": [
            {"agent": agent.name, "seed": seed, "slot": slot + 1, "click_prob": float(p)}
            for slot, p in enumerate(result.position_clicks)
        ],
        "curves": [
            {"agent": agent.name, "seed": seed, **point} for point in getattr(agent, "history", [])
        ],
        "curve_key": getattr(agent, "curve", None),
        "tensorboard": writer is not None,
        "per_request": result.per_request,  # stored as <key>.npz by RunStore
    }
