"""``rerank-env compare``: train and evaluate a set of agents on one environment.

Also ``python -m agents.compare``. For every seed, every agent is built
(:func:`~agents.registry.make_agent`), trained on the training requests of the
environment's task and evaluated on its held-out test requests
(:mod:`agents.evaluation`). Agents without randomness (initial order, beam search,
oracle) are evaluated once and count for every seed. The run folder
``<out>/<name>/`` receives:

* ``results.md`` / ``results.csv``: mean over seeds with 95% bootstrap CIs, and the
  environment's headroom (beam search vs pointwise greedy);
* ``per_seed.csv``, ``curves.csv`` (every trainer's training log: losses, entropy,
  gradient norm, reward, simulator calls, and the learning-curve points),
  ``position_clicks.csv``;
* ``learning_curves.png``, ``pareto.png`` (held-out reward vs latency),
  ``credit_profile.png`` (held-out click probability per slot);
* ``config.json`` (the command, versions, task, data checksum);
* ``logs/<agent>/seed<k>/``: each run's ``curves.csv`` and, when the ``tensorboard``
  package is installed, its TensorBoard events (``tensorboard --logdir runs/<name>/logs``).
* ``runs/<agent>/seed<k>.json`` (``seed-all.json`` for an agent without randomness),
  written as each run ends, and ``spec.json`` (the settings they were measured under):
  ``--resume`` reads them back, so an interrupted comparison continues where it
  stopped, and agents can be run in parts (``--agents a,b`` then ``--agents a,b,c,d
  --resume``) and tabulated together. It refuses a folder made with other settings.

Agents are registered names, ``beam-<B>``, entry points ``"module:Class"`` of your
own :class:`~agents.base.Agent` subclasses, or (in Python) agent instances.
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime as dt
import inspect
import json
import math
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import rerank_env
from agents.base import Agent, TrainableAgent, UnsupportedTaskError
from agents.common.commands import run_handler
from agents.common.telemetry import tensorboard_writer, write_rows_csv
from agents.common.trials import (
    BACKENDS,
    RayOptions,
    Trial,
    TrialStore,
    add_backend_arguments,
    json_default,
    ray_options_from,
    require_ray,
    run_trials,
)
from agents.evaluation import (
    EvaluationSet,
    compact_table,
    evaluate_agent,
    make_evaluation_set,
    read_csv,
    results_markdown,
    summarise,
    write_csv,
)
from agents.registry import agent_names, make_agent
from rerank_env.task import RerankTask, make_task
from simulators._io import atomic_write
from simulators.cli_help import HelpFormatter, plain
from simulators.data.cache import package_version
from simulators.data.errors import ConfigError
from simulators.progress import LogProgress, log_line, progress_bar

#: The README's main job: every reference and baseline, 5 seeds, small budgets.
QUICK_AGENTS = (
    "initial-order", "random", "pointwise-greedy", "prm", "seq2slate", "gen-eval",
    "maskable-ppo", "beam-8",
)  # fmt: skip
FULL_AGENTS = (*QUICK_AGENTS[:5], "seq2slate-dense", "gen-eval", "multi-gen-eval",
               "maskable-ppo", "beam-8")  # fmt: skip
#: Agent sets ``--preset`` names (the agents an issue's comparison asks for).
PRESETS: dict[str, tuple[str, ...]] = {
    "quick": QUICK_AGENTS,
    "full": FULL_AGENTS,
    "degre": ("initial-order", "prm", "seq2slate", "gen-eval", "degre", "degre-beam8",
              "beam-8"),
    "goalrank": ("initial-order", "pointwise-greedy", "prm", "gen-eval", "gen-eval-learned",
                 "multi-gen-eval", "goalrank", "goalrank-sim", "beam-8"),
    "glorank": ("initial-order", "prm", "seq2slate", "degre", "goalrank", "glorank-sft",
                "glorank", "glorank-local", "beam-8"),
    "gr2": ("initial-order", "pointwise-greedy", "degre", "glorank", "gr2-targeted-sft",
            "gr2-sft", "gr2", "gr2-unconditional", "beam-8"),
}  # fmt: skip
#: The environment a preset runs on when ``--env`` is not given.
PRESET_ENVS = {"gr2": "SlateRerankGR2-v0"}
DEFAULT_ENV = "SlateRerank-v0"
#: Version of the per-run records (``runs/<agent>/seed<k>.json``) that ``--resume`` reads.
_RECORD_FORMAT = 1
#: Environment keyword arguments that shape episodes, not the task.
_EPISODE_KWARGS = ("reward_mode", "click_mode", "split", "features", "render_mode")


def task_for_env(env_id: str, env_kwargs: dict[str, Any], device: str = "cpu") -> RerankTask:
    """The task behind ``gym.make(env_id, **env_kwargs)``.

    Raises:
        ConfigError: ``env_id`` is not a rerank-env environment.
    """
    if env_id not in rerank_env.VARIANTS:
        raise ConfigError(f"unknown environment {env_id!r}; valid: {sorted(rerank_env.VARIANTS)}")
    kwargs = {**gym.spec(env_id).kwargs, **env_kwargs}
    task_kwargs = {k: v for k, v in kwargs.items() if k not in _EPISODE_KWARGS}
    valid = sorted(set(inspect.signature(make_task).parameters) - {"device", "progress"})
    unknown = sorted(set(task_kwargs) - set(valid))
    if unknown:
        hint = " (use --device for the device)" if "device" in unknown else ""
        raise ConfigError(
            f"unknown environment keyword argument(s) {unknown}{hint}; valid: "
            f"{valid + sorted(_EPISODE_KWARGS)}"
        )
    return make_task(device=device, **task_kwargs)


def parse_env_kwargs(items: Sequence[str], option: str = "--env-kwarg") -> dict[str, Any]:
    """``["num_candidates=20", "simulator='pbm'"]`` -> dict (values as Python literals).

    ``option`` names the command-line option in the error message.
    """
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {item!r} must look like KEY=VALUE, e.g. num_candidates=20")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value  # a bare word: a string
    return kwargs


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
        backend: ``"local"`` (one run after another here) or ``"ray"`` (every
            (agent, seed) run a Ray task; :mod:`agents.common.trials`). Same seeds,
            same results table, but for the wall-clock columns (fit time, latency).
        ray_options: The Ray backend's cluster address, CPUs per run and retries.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "ray":
        require_ray()  # before any work
    factories = [_agent_factory(item, budget) for item in agents]  # fail before any work
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    if resume and overwrite:
        raise ConfigError("give --resume or --overwrite, not both")
    name = name or f"{env_id}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    folder = Path(out) / name
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
    started = time.perf_counter()
    task = task_for_env(env_id, dict(env_kwargs or {}), device)
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
    spec = _run_spec(env_id, env_kwargs, requests, permutations, beam_width, budget, task)
    if resume:
        _check_spec(folder, spec)
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
        task,
        requests=requests,
        permutations=permutations,
        beam_width=beam_width,
        progress=progress,
    )
    # Every (agent, seed) run is a trial stored as runs/<agent>/seed<k>.json (seed-all
    # for an agent without randomness: run once, counted for every seed).
    plan: list[tuple[int, str]] = []  # (seed, record key) in table order
    trials: dict[str, Trial] = {}
    for seed in range(seeds):
        for item, make in zip(agents, factories, strict=True):
            agent = make(seed)
            key = f"{agent.name}/seed{'-all' if _runs_once(agent) else seed}"
            plan.append((seed, key))
            if key not in trials:
                log_dir = str(folder / "logs" / agent.name / f"seed{seed}")
                # Ray workers show no bars (theirs would interleave with the driver's).
                shown = progress and backend == "local"
                arguments = (item, budget, seed, log_dir, shown)
                trials[key] = Trial(key, _compare_trial, arguments)
    store = TrialStore(folder / "runs")
    fresh: set[str] = set()
    bar = progress_bar(len(trials), "compare", progress and backend == "local")
    lines_only = isinstance(bar, LogProgress)  # no bar to show which run is in progress

    def announce(trial: Trial) -> None:
        seed, label = trial.arguments[2], trial.key.rsplit("/", 1)[0]
        if backend == "local" and not lines_only:  # log lines name the run themselves
            bar.set_description(f"seed {seed} {label}")
        log_line(f"seed {seed} {label}: started", progress and (lines_only or backend == "ray"))

    def collect(trial: Trial, record: dict[str, Any]) -> None:
        fresh.add(trial.key)
        _log_result(record, trial.arguments[2], progress)
        bar.update()

    records = run_trials(
        list(trials.values()),
        store,
        shared=(task, evaluation),
        backend=backend,
        ray_options=ray_options,
        on_start=announce,
        on_finish=collect,
        progress=progress,
    )
    bar.close()
    rows, curves, profiles, fit_seconds = [], [], [], {}
    curve_keys: dict[str, tuple[str, str]] = {}
    for seed, key in plan:
        record = records[key]
        if key not in fresh and (not record["all_seeds"] or seed == record["row"]["seed"]):
            _log_result(record, seed, progress, earlier=True)
        row = {**record["row"], "seed": seed}
        if record.get("curve_key") is not None:
            curve_keys[row["agent"]] = tuple(record["curve_key"])
        if not record["all_seeds"] or seed == record["row"]["seed"]:
            profiles += record["profiles"]
            curves += record["curves"]
        fit_seconds.setdefault(row["agent"], []).append(row["fit_s"])
        rows.append(row)
    tensorboard = any(records[key].get("tensorboard", False) for key in fresh)
    reused = len(trials) - len(fresh)
    summary = summarise(rows)
    for entry in summary:
        entry["fit_s"] = float(np.mean(fit_seconds[entry["agent"]]))
    title = f"rerank-env compare: {env_id}"
    (folder / "results.md").write_text(results_markdown(summary, evaluation, title))
    write_csv(folder / "results.csv", summary)
    write_csv(folder / "per_seed.csv", rows)
    write_rows_csv(folder / "curves.csv", curves or [{"agent": "", "seed": "", "stage": ""}])
    write_csv(folder / "position_clicks.csv", profiles)
    plot_results(folder, summary, learning_curves(curves, curve_keys), profiles, evaluation)
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
        "task": task.summary(),
        "task_description": task.description,
        "headroom": evaluation.headroom,
        "headroom_line": evaluation.headroom_line(),
        "versions": {
            "rerank-env": package_version(),
            "torch": torch.__version__,
            "gymnasium": gym.__version__,
            "numpy": np.__version__,
        },  # fmt: skip
        "tensorboard": tensorboard,
        "resumed_runs": reused,
        "wall_s": time.perf_counter() - started,
        "utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    log_line(f"wrote {folder} in {config['wall_s']:.0f} s", progress)
    return folder


def results_text(folder: str | Path, full: bool = False, width: int = 100) -> str:
    """What ``rerank-env compare`` prints at the end, from a run folder.

    Args:
        folder: A folder :func:`run_compare` wrote.
        full: ``results.md`` (every metric with its 95% interval) instead of the
            compact table (:func:`~agents.evaluation.compact_table`).
        width: Columns the sentences around the table are wrapped to.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())

    def prose(text: str) -> str:
        return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)

    if full:
        body = (folder / "results.md").read_text()
    else:
        summary = read_csv([folder / "results.csv"])
        title = (
            f"rerank-env compare: {config['env_id']}, {config['requests']} test requests, "
            f"{config['seeds']} seed(s)"
        )
        legend = (
            "held-out reward: mean ± half its 95% bootstrap interval over seeds; every metric "
            "with its interval: results.md, or --full-table"
        )
        body = (
            f"{prose(title)}\n{prose(config['headroom_line'])}\n\n{compact_table(summary)}"
            f"{prose(legend)}\n"
        )
    notes = [f"wrote {folder} in {config['wall_s']:.0f} s: results.md, results.csv, "
             "learning_curves.png, pareto.png, credit_profile.png"]  # fmt: skip
    if not config["tensorboard"]:
        notes.append(
            "TensorBoard logs skipped: pip install -e '.[tensorboard]' (the tensorboard extra) "
            "to get them; curves.csv holds the same"
        )
    return body + "\n" + "\n".join(map(prose, notes))


#: What must match for ``--resume`` to reuse a run folder's records.
_SPEC_KEYS = ("env_id", "env_kwargs", "requests", "permutations", "beam_width", "budget",
              "task", "rerank-env")  # fmt: skip


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
    # Fields added to task descriptions later, at the value every earlier task had:
    # dropped, so run folders written before them still resume.
    for key, defaults in _LATER_TASK_FIELDS.items():
        if key in plain and plain[key] in defaults:
            del plain[key]
    return plain


#: Task-description fields that came after run folders existed, with the values that
#: tasks without them had (``composition`` and ``held_out``: issue 20; a task with
#: ``composed=False`` has ``composition`` None).
_LATER_TASK_FIELDS: dict[str, tuple[Any, ...]] = {
    "composition": ("assumed", None),
    "fitted_composition": (None,),
    "held_out": ("seed",),
    "weight_decay_per_epoch": (None,),
}


def _check_spec(folder: Path, spec: dict[str, Any]) -> None:
    """Refuse ``--resume`` on a folder whose records were measured otherwise."""
    stored = json.loads((folder / "spec.json").read_text())
    stored["task"] = _task_identity(stored.get("task") or {})
    if stored.get("format") != _RECORD_FORMAT:
        raise ConfigError(
            f"--resume: {folder} was written in record format {stored.get('format')!r}, this "
            f"version reads {_RECORD_FORMAT}; start a new run folder"
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
    }


def learning_curves(
    rows: list[dict[str, Any]], curve_keys: dict[str, tuple[str, str]]
) -> list[dict[str, Any]]:
    """The learning-curve points of the training-log ``rows``, long format.

    Each agent's curve is its ``(x, y)`` keys (``TrainableAgent.curve``); a row is a
    point where it has both.
    """
    points = []
    for row in rows:
        keys = curve_keys.get(row["agent"])
        if keys is not None and row.get(keys[0]) is not None and row.get(keys[1]) is not None:
            points.append(
                {"agent": row["agent"], "seed": row["seed"], "x_key": keys[0],
                 "y_key": keys[1], "x": row[keys[0]], "y": row[keys[1]]}
            )  # fmt: skip
    return points


def plot_results(
    folder: Path,
    summary: list[dict[str, Any]],
    curves: list[dict[str, Any]],
    profiles: list[dict[str, Any]],
    evaluation: EvaluationSet,
) -> None:
    """``learning_curves.png``, ``pareto.png`` and ``credit_profile.png`` in ``folder``."""
    # Figures without pyplot: no global backend switch, no figure left open in a
    # notebook's session (importing or running compare never changes its plots).
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    # Learning curves: one panel per trained agent, mean over seeds with min-max band.
    trained = list(dict.fromkeys(row["agent"] for row in curves))
    columns = max(1, min(3, len(trained)))
    panels = max(1, math.ceil(len(trained) / columns))
    figure = Figure(figsize=(4.5 * columns, 3.3 * panels))
    axes = figure.subplots(panels, columns, squeeze=False)
    for axis, agent in zip(axes.flat, trained, strict=False):
        mine = [row for row in curves if row["agent"] == agent]
        xs = sorted({row["x"] for row in mine})
        seeds = sorted({row["seed"] for row in mine})
        ys = np.full((len(seeds), len(xs)), np.nan)
        for row in mine:
            ys[seeds.index(row["seed"]), xs.index(row["x"])] = row["y"]
        axis.plot(xs, np.nanmean(ys, axis=0), marker="o", markersize=3)
        axis.fill_between(xs, np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), alpha=0.25)
        axis.set_title(agent)
        axis.set_xlabel(mine[0]["x_key"])
        axis.set_ylabel(mine[0]["y_key"])
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(trained) :]:
        axis.set_visible(False)
    if not trained:
        axes.flat[0].text(0.5, 0.5, "no trained agents", ha="center", va="center")
    figure.suptitle("Learning curves (mean over seeds, band: min-max)")
    figure.tight_layout()
    figure.savefig(folder / "learning_curves.png", dpi=120)

    # Reward vs latency. A legend, not labels beside the points: agents with close
    # rewards and latencies would print their names on top of each other.
    figure = Figure(figsize=(8.5, 4.5))
    axis = figure.subplots()
    markers = "osD^vP*Xh<>p"
    for index, entry in enumerate(summary):
        latency, reward = entry["latency_ms"], entry["reward_eval"]
        error = [[reward - entry["reward_eval_low"]], [entry["reward_eval_high"] - reward]]
        axis.errorbar(
            latency, reward, yerr=error, fmt=markers[index % len(markers)], capsize=3,
            color=colormaps["tab10"](index % 10), label=entry["agent"],
        )  # fmt: skip
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    axis.set_xscale("log")
    axis.set_xlabel("inference latency, ms per request (batched, log scale)")
    axis.set_ylabel("expected clicks, held-out simulator")
    axis.set_title("Reward vs latency (95% CI over seeds)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "pareto.png", dpi=120)

    # Per-slot click profile: where in the list each agent earns its clicks.
    figure = Figure(figsize=(8.5, 4.5))
    axis = figure.subplots()
    for agent in dict.fromkeys(row["agent"] for row in profiles):
        mine = [row for row in profiles if row["agent"] == agent]
        slots = sorted({row["slot"] for row in mine})
        means = [np.mean([r["click_prob"] for r in mine if r["slot"] == s]) for s in slots]
        axis.plot(slots, means, marker="o", label=agent)
    axis.set_xlabel("slot")
    axis.set_ylabel("mean click probability (held-out simulator)")
    axis.set_title(
        f"Per-slot click profile (held-out simulator, {len(evaluation.requests)} test requests)"
    )
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "credit_profile.png", dpi=120)


def add_parser(subparsers: Any) -> None:
    """Add ``compare`` to the ``rerank-env`` command line."""
    parser = subparsers.add_parser(
        "compare",
        help="train and evaluate agents on an environment; write tables and figures",
        description=_description(),
        formatter_class=HelpFormatter,
    )
    configure(parser)
    parser.set_defaults(handler=_handle)


#: Wall time of each preset for 5 seeds on 2 cores (docs/benchmarks.md), for --help.
PRESET_TIMES = {
    "quick": "with --quick, the README's main job: about 5 min",
    "full": "about 25 min",
    "degre": "about 76 min, 500 requests",
    "goalrank": "about 19 min, 500 requests",
    "glorank": "about 5 h, 500 requests; GloRank's fits dominate",
    "gr2": "not timed yet; GR2 alone takes about 17 min a seed with --quick",
}


def _description() -> str:
    """The command's help text: what it does, the presets and every agent name."""

    def item(name: str, text: str, indent: int) -> str:  # HelpFormatter wraps it under text
        return f"  {name:{indent - 4}s}  {text}"

    intro = plain(__doc__.split("\n\n")[0]).replace("\n", " ")
    presets = "\n".join(
        item(name, f"{', '.join(agents)} ({PRESET_TIMES[name]})", 12)
        for name, agents in PRESETS.items()
    )
    agents = "\n".join(item(name, plain(text), 21) for name, text in agent_names().items())
    return (
        f"{intro}\n\nWithout --agents or --preset it runs the 'full' preset, or the 'quick' one "
        "with --quick.\n\npresets (time for 5 seeds on 2 idle cores, full budgets unless said):\n"
        f"{presets}\n\nagents (or module:Class, an Agent subclass of your own):\n{agents}"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``compare`` (shared by ``python -m agents.compare``)."""
    parser.add_argument(
        "--env", metavar="ENV_ID",
        help=f"environment id, one of {', '.join(sorted(rerank_env.VARIANTS))} (default: "
        f"{DEFAULT_ENV}; with --preset gr2, {PRESET_ENVS['gr2']})",
    )  # fmt: skip
    parser.add_argument(
        "--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
        help="environment keyword argument, repeatable, e.g. num_candidates=10 (default: the "
        "environment's own)",
    )  # fmt: skip
    parser.add_argument(
        "--agents",
        help="comma-separated agent names (listed above) or entry points, e.g. "
        "prm,beam-8,mypkg.mod:MyAgent (default: the preset's agents)",
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS),
        help="a named agent set, listed above with its time (default: full, or quick with "
        "--quick)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=5, help="seeds per agent")
    parser.add_argument(
        "--requests", type=int, help="test requests evaluated (default: 500; 200 with --quick)"
    )
    parser.add_argument(
        "--permutations", type=int, default=200, help="random lists per request for HR@k%%"
    )
    parser.add_argument(
        "--beam-width", type=int, default=8, help="width of the beam-search reference"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="the agents' quick training budgets and 200 requests (the README's main job); "
        "without --agents or --preset it runs the quick preset. --preset quick alone runs "
        "the same agents at their full budgets",
    )  # fmt: skip
    parser.add_argument(
        "--budget", choices=("tiny", "quick", "full"),
        help="the agents' training budgets: tiny (seconds, smoke tests), quick or full "
        "(default: full; quick with --quick)",
    )  # fmt: skip
    parser.add_argument("--out", default="runs", help="parent folder of the run folder")
    parser.add_argument("--name", help="run folder name (default: the environment id and the time)")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="start a non-empty run folder again (its stored runs are dropped)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run folder --name: reuse its stored (agent, seed) runs, run the rest",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device of task and agents (cuda)")
    add_backend_arguments(parser)
    parser.add_argument(
        "--quiet", "--no-progress", dest="quiet", action="store_true",
        help="no progress bars or log lines; the results are still printed",
    )  # fmt: skip
    parser.add_argument(
        "--full-table", action="store_true",
        help="print results.md (every metric with its interval) instead of the compact table",
    )  # fmt: skip


def compare_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_compare`'s keyword arguments from parsed ``compare`` options."""
    if args.agents and args.preset:
        raise ConfigError("give --agents or --preset, not both")
    preset = args.preset or ("quick" if args.quick else "full")
    if args.agents:
        agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    else:
        agents = list(PRESETS[preset])
        log_line(
            f"preset {preset}: {len(agents)} agents x {args.seeds} seed(s)"
            + (f"; for 5 seeds on 2 cores {PRESET_TIMES[preset]}" if not args.quick else ""),
            not args.quiet,
        )
    return {
        "env_id": args.env or PRESET_ENVS.get(args.preset, DEFAULT_ENV),
        "env_kwargs": parse_env_kwargs(args.env_kwarg),
        "agents": agents,
        "seeds": args.seeds,
        "requests": args.requests if args.requests is not None else 200 if args.quick else 500,
        "permutations": args.permutations,
        "beam_width": args.beam_width,
        "budget": args.budget or ("quick" if args.quick else "full"),
        "out": args.out,
        "name": args.name,
        "overwrite": args.overwrite,
        "resume": args.resume,
        "device": args.device,
        "progress": not args.quiet,
        "backend": args.backend,
        "ray_options": ray_options_from(args),
    }


def _handle(args: argparse.Namespace) -> int:
    folder = run_compare(**compare_kwargs(args))
    # sentences wrapped to the terminal (at most 100 columns), or 100 in a pipe or file
    width = min(100, shutil.get_terminal_size((100, 24)).columns) if sys.stdout.isatty() else 100
    print(results_text(folder, full=args.full_table, width=width), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    """``python -m agents.compare``'s parser."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.compare",
        description=_description(),
        formatter_class=HelpFormatter,
    )
    configure(parser)
    parser.set_defaults(handler=_handle, command="compare")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agents.compare``: the same as ``rerank-env compare``."""
    return run_handler(_parser().parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
