"""When does dense credit beat sparse? Estimators of one pointer policy across (N, L).

Usage::

    python benchmarks/bench_credit.py run --budget quick --seeds 5        # every cell, arm, seed
    python benchmarks/bench_credit.py run --cells 20x6 100x20 --arms reinforce-sparse ppo-gae-dense
    python benchmarks/bench_credit.py report                               # tables and figures

``run`` trains the same pointer policy (:class:`agents.policy_gradient.PolicyGradient`,
or DeGRe's generator for the two distillation arms) on the synthetic world, one
world per list length L (it logs sessions of L items; N candidates are the first N
of the retriever's 100), at the same number of training-simulator calls for every
arm of a cell. Before training, each run measures its estimator's gradient per slot
at the initial weights over independent batches (variance, signal, SNR); after, the
reward of its greedy lists on test requests under the true user model, the
held-out and the training simulators, per test request. Every run is one JSON file
(``<out>/runs/N<n>_L<l>/<arm>/seed<k>.json``) and its per-request rewards beside it
(``seed<k>.npz``), written atomically: an interrupted study continues where it
stopped, and a stored run is never measured twice.
``--backend ray`` runs a cell's (arm, seed) runs as Ray tasks (``--address`` for a
cluster, ``--cpus-per-run`` each; :mod:`agents.common.trials`).

``report`` reads the runs and writes ``report_<metric>.md`` (per cell: each arm's mean
with a 95% bootstrap interval over seeds and test requests together, rliable's IQM
over seeds with a stratified bootstrap interval, the winner, and the paired
differences dense - sparse with their two-way interval, minimum detectable difference
at 80% power and P(dense > sparse)), ``runs.csv``, ``slots.csv`` and the figures: learning curves,
gradient variance and SNR per slot, the per-position credit profile, and the SNR
ratio against the reward gap across cells. ``--metric`` picks the reward:
``reward_eval`` (held-out simulator, the default, as everywhere in the suite),
``reward_true`` (the world's true user model) or ``reward_train`` (the simulator
every arm optimises).

Arms (all at the cell's budget of simulator calls):

* ``reinforce-sparse`` / ``reinforce-dense``: REINFORCE, list reward vs reward-to-go,
  expected clicks, group-mean baseline; ``...-sampled``: the same with sampled
  clicks. RLOO is not a separate arm: its advantage is the group-mean advantage
  times S / (S - 1), so under Adam it trains identically (a test checks this); its
  gradient statistics are the mean baseline's scaled by (S / (S - 1))^2.
* ``ppo-gae-sparse`` / ``ppo-gae-dense``: PPO, GAE(1, 0.95) with a learned critic.
* ``degre-greedy`` / ``degre-beam``: DeGRe's dense distillation of lists mined by
  greedy / beam-8 search on the training simulator (mining costs calls: at large N
  and L the budget mines few requests, which is the point of an equal-calls study).

Budgets: ``tiny`` (smoke test, seconds per run), ``quick`` (the study: 16,384
calls per run, a policy of width 32 with one encoder layer), ``full`` (4x the
calls, width 64, two encoder layers).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from agents.common.trials import (
    Trial,
    add_backend_arguments,
    ray_options_from,
    run_trials,
)
from agents.compare.runs import RunStore
from agents.degre import DeGRe
from agents.degre.mining import mining_calls_per_request
from agents.evaluation import (
    RequestValues,
    improvement_probability,
    iqm_intervals,
    rewards_per_request,
    write_csv,
)
from agents.intervals import hierarchical_interval, paired_difference
from agents.policy_gradient import PolicyGradient, PolicyGradientConfig
from rerank_env.task import RerankTask, make_task
from simulators._io import atomic_write
from simulators.data.errors import ConfigError
from simulators.data.pipeline_config import PipelineConfig
from simulators.data.synthetic_config import SyntheticConfig
from simulators.progress import progress_bar

LENGTHS = (6, 10, 20)
CANDIDATES = (20, 50, 100)
#: Retrieved candidates per request in every world (N takes the first N).
POOL = 100
#: Logged sessions per user per world: L = 20 halves them (a user meets an item once).
SESSIONS = {6: 25, 10: 25, 20: 12}
#: Share of each user's sessions that are validation: two per user in every world, so
#: the judge's half of the sessions (``held_out="sessions"``) has validation slates.
VALID_FRACTION = {6: 0.1, 10: 0.1, 20: 0.2}

ARMS: dict[str, dict[str, Any]] = {
    "reinforce-sparse": {},
    "reinforce-dense": {"credit": "dense"},
    "reinforce-sparse-sampled": {"clicks": "sampled"},
    "reinforce-dense-sampled": {"credit": "dense", "clicks": "sampled"},
    "ppo-gae-sparse": {"estimator": "ppo"},
    "ppo-gae-dense": {"estimator": "ppo", "credit": "dense"},
    "degre-greedy": {"beam_width": 1},
    "degre-beam": {"beam_width": 8},
}
#: The estimators whose gradients are measured per slot (DeGRe's is a supervised
#: loss on mined labels, not an estimate of the reward's gradient).
GRADIENT_ARMS = [arm for arm in ARMS if not arm.startswith("degre")]
#: Version of a study folder's records: 2 stores each run's per-request rewards.
RECORD_FORMAT = 2
#: What to do with a study folder whose records this version cannot read.
REMEDY = "start the study in a new --out folder (records of older versions are not reused)"


@dataclass(frozen=True)
class Budget:
    """What one run of a budget spends.

    Attributes:
        simulator_calls: Training-simulator calls per run (every arm of a cell).
        batch_size: Requests per policy-gradient iteration.
        group_size: Lists per request per iteration.
        test_requests: Test requests each run is judged on.
        gradient_batch: Requests per batch in the gradient measurement.
        resamples: Independent batches in the gradient measurement.
        critic_warmup: PPO critic steps before its gradient is measured.
        dim: Width of the pointer policy (every arm's).
        encoder_layers: Its candidate-set encoder layers.
        curve_points: Learning-curve points per run.
        eval_requests: Validation requests per curve point.
    """

    simulator_calls: int
    batch_size: int
    group_size: int
    test_requests: int
    gradient_batch: int
    resamples: int
    critic_warmup: int
    dim: int = 32
    encoder_layers: int = 1
    curve_points: int = 8
    eval_requests: int = 128


BUDGETS = {
    "tiny": Budget(2_048, 16, 4, 50, 8, 3, 2, dim=16, curve_points=2, eval_requests=32),
    "quick": Budget(16_384, 64, 8, 300, 16, 8, 20),
    "full": Budget(65_536, 64, 8, 500, 32, 16, 40, dim=64, encoder_layers=2),
}


def world_task(n: int, length: int, *, progress: bool = False) -> RerankTask:
    """The synthetic world logging sessions of ``length``, offering ``n`` candidates."""
    return make_task(
        dataset="synthetic",
        num_candidates=n,
        slate_length=length,
        pipeline=PipelineConfig(
            num_candidates=POOL, slate_length=length, valid_fraction=VALID_FRACTION[length]
        ),
        synthetic=SyntheticConfig(slate_length=length, sessions_per_user=SESSIONS[length]),
        progress=progress,
    )


def make_arm(arm: str, task: RerankTask, budget: Budget, seed: int) -> PolicyGradient | DeGRe:
    """The agent of ``arm``, set to spend ``budget.simulator_calls`` on ``task``."""
    if arm.startswith("degre"):
        width = ARMS[arm]["beam_width"]
        per_request = mining_calls_per_request(task.num_candidates, task.slate_length, width)
        mined = max(1, budget.simulator_calls // per_request)
        return DeGRe(
            evaluator="simulator",
            beam_width=width,
            keep_lists=min(4, width),
            mining_requests=mined,
            rounds=min(5, mined),
            dim=budget.dim,
            encoder_layers=budget.encoder_layers,
            eval_requests=budget.eval_requests,
            seed=seed,
        )
    config = PolicyGradientConfig(
        simulator_calls=budget.simulator_calls,
        batch_size=budget.batch_size,
        group_size=budget.group_size,
        dim=budget.dim,
        encoder_layers=budget.encoder_layers,
        # PPO: four minibatches of whole requests per pass, as the study ran.
        minibatch_size=max(1, budget.batch_size // 4) * budget.group_size,
        curve_points=budget.curve_points,
        eval_requests=budget.eval_requests,
        seed=seed,
        **ARMS[arm],
    )
    return PolicyGradient(config)


def run_one(task: RerankTask, arm: str, seed: int, budget: Budget) -> dict[str, Any]:
    """Measure the gradient at the initial weights, train, and judge one (arm, seed)."""
    agent = make_arm(arm, task, budget, seed)
    record: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "N": task.num_candidates,
        "L": task.slate_length,
        "config": agent.config(),
    }
    if isinstance(agent, PolicyGradient):
        agent.setup(task)
        start = time.perf_counter()
        stats = agent.slot_gradients(
            task,
            resamples=budget.resamples,
            batch_size=budget.gradient_batch,
            seed=10_000 + seed,
            critic_warmup=budget.critic_warmup,
        )
        record["gradient"] = {key: value.tolist() for key, value in stats.items()}
        record["gradient_s"] = time.perf_counter() - start
    start = time.perf_counter()
    agent.fit(task)
    record["fit_s"] = time.perf_counter() - start
    record["simulator_calls"] = agent.simulator_calls
    requests = task.requests("test")[: budget.test_requests]
    values, record["latency_ms"] = rewards_per_request(agent, task, requests)
    record.update({name: float(per_request.mean()) for name, per_request in values.items()})
    record["per_request"] = RequestValues(values, {"test": requests})
    record["curve"] = [
        {"simulator_calls": row["simulator_calls"], "valid_reward": row["valid_reward"]}
        for row in agent.history
        if row.get("stage") == "curve" and "simulator_calls" in row
    ]
    return record


def run(args: argparse.Namespace) -> None:
    budget = BUDGETS[args.budget]
    out = Path(args.out)
    cells = (
        [_parse_cell(text) for text in args.cells]
        if args.cells
        else [(n, length) for length in LENGTHS for n in CANDIDATES]
    )
    arms = args.arms or list(ARMS)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; valid: {list(ARMS)}")
    spec = {"format": RECORD_FORMAT, "budget": args.budget, **vars(budget)}
    _check_spec(out, spec)
    # Cell by cell, seed by seed: an interrupted study has whole seeds of every arm.
    # Each (arm, seed) is a trial (agents.common.trials), run here or on Ray
    # (--backend ray) and stored as it ends; stored ones are never run again.
    for n, length in cells:
        store = RunStore(_cell_dir(out, (n, length)), remedy=REMEDY)
        trials = [
            Trial(f"{arm}/seed{seed}", run_one, (arm, seed, budget))
            for seed in range(args.seeds)
            for arm in arms
        ]
        todo = [t for t in trials if store.read(t.key) is None]
        print(
            f"N={n} L={length}: {len(todo)} runs to do ({args.budget} budget, "
            f"{budget.simulator_calls:,} calls each)",
            flush=True,
        )
        if not todo:
            continue
        task = world_task(n, length, progress=True)  # one world at a time
        _write_reference(out, task, budget)

        bar = progress_bar(len(todo), f"credit study N={n} L={length}", True)

        def report_run(trial: Trial, record: dict[str, Any], n=n, length=length, bar=bar):
            bar.update()
            print(
                f"N={n} L={length} {record['arm']} seed {record['seed']}: true "
                f"{record['reward_true']:.4f}, held-out {record['reward_eval']:.4f}, fit "
                f"{record['fit_s']:.0f} s",
                flush=True,
            )

        run_trials(
            trials,
            store,
            shared=(task,),
            backend=args.backend,
            ray_options=ray_options_from(args),
            workers=args.workers,
            on_finish=report_run,
            progress=False,
        )
        bar.close()


def _write_reference(out: Path, task: RerankTask, budget: Budget) -> None:
    """The initial order's rewards on the cell's test requests (what every arm starts above)."""
    path = _cell_dir(out, (task.num_candidates, task.slate_length)) / "reference.json"
    if path.exists():
        return
    requests = task.requests("test")[: budget.test_requests]
    initial = np.tile(np.arange(task.slate_length), (len(requests), 1))
    reference = {
        f"initial_{role}": task.expected_reward(requests, initial, role).mean().item()
        for role in ("true", "eval", "train")
    }
    atomic_write(path, lambda handle: handle.write(json.dumps(reference).encode()))


# ---------------------------------------------------------------------- report


def report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    records = [_read_record(path) for path in sorted(out.glob("runs/*/*/seed*.json"))]
    if not records:
        raise SystemExit(f"no runs under {out / 'runs'}; run the study first")
    cells = sorted({(r["N"], r["L"]) for r in records}, key=lambda c: (c[1], c[0]))
    arms = [arm for arm in ARMS if any(r["arm"] == arm for r in records)]
    lines = [
        f"Runs: {len(records)}; metric: {args.metric} on the test requests. Means carry a "
        "95% bootstrap interval over seeds and test requests together; IQM and P(X > Y) "
        "are rliable's, over seeds; paired differences resample one set of requests for "
        "both arms, with the minimum detectable difference (MDE) at 80% power.",
        "",
    ]
    rows_csv, slot_rows, winners = [], [], []
    for n, length in cells:
        mine = [r for r in records if (r["N"], r["L"]) == (n, length)]
        by_seed = {
            arm: sorted((r for r in mine if r["arm"] == arm), key=lambda r: r["seed"])
            for arm in arms
        }
        # [seeds, requests] per arm with two runs or more; a run's score is its row mean.
        matrices = {
            arm: np.stack([r["per_request"].values[args.metric] for r in runs])
            for arm, runs in by_seed.items()
            if len(runs) >= 2
        }
        scores = {arm: matrix.mean(axis=1) for arm, matrix in matrices.items()}
        if not scores:
            continue
        iqm = iqm_intervals(scores, seed=0)
        reference_path = _cell_dir(out, (n, length)) / "reference.json"
        metric_role = args.metric.removeprefix("reward_")
        start = (
            json.loads(reference_path.read_text())[f"initial_{metric_role}"]
            if reference_path.exists()
            else math.nan
        )
        lines += [
            f"### N = {n}, L = {length} (initial order: {start:.4f})",
            "",
            "| arm | seeds | mean [95% CI, seeds x requests] | IQM [95% stratified CI] | "
            "calls | fit s |",
            "|---|---:|---|---|---:|---:|",
        ]
        for arm, values in scores.items():
            interval = hierarchical_interval(matrices[arm])
            fit = np.mean([r["fit_s"] for r in mine if r["arm"] == arm])
            calls = np.mean([r["simulator_calls"] for r in mine if r["arm"] == arm])
            q, q_low, q_high = iqm[arm]
            lines.append(
                f"| {arm} | {len(values)} | {interval.text(4)} | "
                f"{q:.4f} [{q_low:.4f}, {q_high:.4f}] | {calls:,.0f} | {fit:.0f} |"
            )
        best = max(scores, key=lambda a: scores[a].mean())
        pairs = [
            ("reinforce-dense", "reinforce-sparse"),
            ("ppo-gae-dense", "ppo-gae-sparse"),
            ("degre-greedy", "reinforce-sparse"),
        ]
        lines.append("")
        entry = {"N": n, "L": length, "winner": best}
        for dense, sparse in pairs:
            if dense in scores and sparse in scores:
                p, p_low, p_high = improvement_probability(scores[dense], scores[sparse])
                gap = paired_difference(matrices[dense], matrices[sparse])
                lines.append(
                    f"- {dense} - {sparse}: {gap.mean:+.4f} [{gap.low:+.4f}, {gap.high:+.4f}] "
                    f"(MDE {gap.mde:.4f}); P({dense} > {sparse}) = {p:.2f} "
                    f"[{p_low:.2f}, {p_high:.2f}]"
                )
                entry[f"{dense} - {sparse}"] = gap
                entry[f"P({dense} > {sparse})"] = p
        winners.append(entry)
        lines.append("")
        for r in mine:
            rows_csv.append(
                {
                    k: v
                    for k, v in r.items()
                    if k not in ("config", "curve", "gradient", "per_request", "per_request_file")
                }
            )
            per_slot = {k: v for k, v in r.get("gradient", {}).items() if k != "whole"}
            for t, values in enumerate(zip(*per_slot.values(), strict=True)):
                named = dict(zip(per_slot, values, strict=True))
                slot_rows.append(
                    {"N": n, "L": length, "arm": r["arm"], "seed": r["seed"], "slot": t, **named}
                )
    lines = _winner_table(winners) + lines
    (out / f"report_{args.metric}.md").write_text("\n".join(lines) + "\n")
    write_csv(out / "runs.csv", rows_csv)
    if slot_rows:
        write_csv(out / "slots.csv", slot_rows)
    _plot_curves(records, cells, arms, out / "credit_curves.png")
    if slot_rows:
        _plot_slots(slot_rows, cells, out / "credit_gradients.png")
        _plot_gap_vs_snr(records, cells, args.metric, out / f"credit_gap_vs_snr_{args.metric}.png")
    print("\n".join(lines))
    print(f"\nwrote {out / f'report_{args.metric}.md'} and figures in {out}")


def _read_record(path: Path) -> dict[str, Any]:
    """A stored run with its per-request rewards (``per_request``)."""
    try:
        record = RunStore(path.parent, remedy=REMEDY).read(path.stem)
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    assert record is not None  # path was listed by a glob of the records
    return record


def _winner_table(winners: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| N | L | best arm | reinforce: dense - sparse | P(dense > sparse) | "
        "PPO: dense - sparse | DeGRe greedy - REINFORCE sparse |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for w in winners:

        def cell(key: str, w: dict[str, Any] = w) -> str:
            if key not in w:
                return "-"
            gap = w[key]
            return f"{gap.mean:+.4f} [{gap.low:+.4f}, {gap.high:+.4f}]"

        p = w.get("P(reinforce-dense > reinforce-sparse)")
        lines.append(
            f"| {w['N']} | {w['L']} | {w['winner']} | {cell('reinforce-dense - reinforce-sparse')} "
            f"| {'-' if p is None else f'{p:.2f}'} | {cell('ppo-gae-dense - ppo-gae-sparse')} | "
            f"{cell('degre-greedy - reinforce-sparse')} |"
        )
    return [*lines, ""]


def _plot_curves(records: list[dict], cells: list, arms: list[str], path: Path) -> None:
    rows, cols = _grid(cells)
    figure = Figure(figsize=(4 * cols, 3.2 * rows))
    axes = figure.subplots(rows, cols, squeeze=False)
    for index, (n, length) in enumerate(cells):
        axis = axes.flat[index]
        for arm in arms:
            curves = [
                r["curve"] for r in records if r["arm"] == arm and (r["N"], r["L"]) == (n, length)
            ]
            if not curves or not curves[0]:
                continue
            points = min(len(c) for c in curves)
            xs = np.array([[c[i]["simulator_calls"] for i in range(points)] for c in curves])
            xs = xs.mean(0)
            ys = np.array([[c[i]["valid_reward"] for i in range(points)] for c in curves])
            axis.plot(xs, ys.mean(0), marker="o", markersize=2, label=arm)
            axis.fill_between(xs, ys.min(0), ys.max(0), alpha=0.15)
        axis.set_title(f"N = {n}, L = {length}", fontsize=9)
        axis.set_xlabel("training-simulator calls", fontsize=8)
        axis.set_ylabel("validation reward (train sim)", fontsize=8)
    axes.flat[0].legend(fontsize=6)
    for axis in axes.flat[len(cells) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _plot_slots(slot_rows: list[dict], cells: list, path: Path) -> None:
    """Per cell: gradient variance per slot (log scale) and the credit profile."""
    rows, cols = _grid(cells)
    figure = Figure(figsize=(4 * cols, 6 * rows))
    axes = figure.subplots(2 * rows, cols, squeeze=False)
    for index, (n, length) in enumerate(cells):
        top, bottom = (
            axes[2 * (index // cols), index % cols],
            axes[2 * (index // cols) + 1, index % cols],
        )
        for arm in GRADIENT_ARMS:
            mine = [r for r in slot_rows if r["arm"] == arm and (r["N"], r["L"]) == (n, length)]
            if not mine:
                continue
            slots = np.arange(length)
            variance = np.array([[r["variance"] for r in mine if r["slot"] == t] for t in slots])
            signal = np.array([[r["signal"] for r in mine if r["slot"] == t] for t in slots])
            top.plot(slots + 1, variance.mean(1), marker="o", markersize=2, label=arm)
            profile = signal.mean(1) / signal.mean(1).sum()
            bottom.plot(slots + 1, profile, marker="o", markersize=2, label=arm)
        top.set_yscale("log")
        top.set_title(f"N = {n}, L = {length}: gradient variance per slot", fontsize=8)
        bottom.set_title("credit profile: share of the gradient signal per slot", fontsize=8)
        bottom.set_xlabel("slot", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    for index in range(len(cells), rows * cols):  # an incomplete last row
        axes[2 * (index // cols), index % cols].set_visible(False)
        axes[2 * (index // cols) + 1, index % cols].set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _plot_gap_vs_snr(records: list[dict], cells: list, metric: str, path: Path) -> None:
    """Across cells: dense - sparse reward gap against log10 of their whole-gradient SNR ratio."""
    figure = Figure(figsize=(5.5, 4))
    axis = figure.subplots()
    pairs = (
        ("reinforce-dense", "reinforce-sparse", "o", "REINFORCE"),
        ("ppo-gae-dense", "ppo-gae-sparse", "s", "PPO-GAE"),
        ("reinforce-dense-sampled", "reinforce-sparse-sampled", "^", "REINFORCE, sampled clicks"),
    )
    for dense, sparse, marker, name in pairs:
        xs, ys, labels = [], [], []
        for n, length in cells:

            def pick(arm: str, n: int = n, length: int = length) -> list[dict]:
                return [r for r in records if r["arm"] == arm and (r["N"], r["L"]) == (n, length)]

            if not pick(dense) or not pick(sparse) or "gradient" not in pick(dense)[0]:
                continue
            snr = [np.mean([_whole_snr(r) for r in pick(arm)]) for arm in (dense, sparse)]
            xs.append(math.log10(snr[0] / snr[1]))
            ys.append(
                np.mean([r[metric] for r in pick(dense)])
                - np.mean([r[metric] for r in pick(sparse)])
            )
            labels.append(f"{n}x{length}")
        axis.scatter(xs, ys, marker=marker, label=name)
        for x, y, label in zip(xs, ys, labels, strict=True):
            axis.annotate(label, (x, y), fontsize=6)
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.axvline(0, color="grey", linewidth=0.5)
    axis.set_xlabel("log10 SNR(dense) / SNR(sparse), whole gradient at init")
    axis.set_ylabel(f"dense - sparse, {metric}")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _whole_snr(record: dict) -> float:
    """SNR of the whole gradient (the sum of every slot's term) at the initial weights."""
    return float(record["gradient"]["whole"][2])


# ---------------------------------------------------------------------- plumbing


def _grid(cells: list) -> tuple[int, int]:
    cols = min(3, len(cells))
    return math.ceil(len(cells) / cols), cols


def _parse_cell(text: str) -> tuple[int, int]:
    try:
        n, length = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"a cell is NxL, e.g. 50x10; got {text!r}") from None
    return n, length


def _cell_dir(out: Path, cell: tuple[int, int]) -> Path:
    return out / "runs" / f"N{cell[0]}_L{cell[1]}"


def _record_path(out: Path, cell: tuple[int, int], arm: str, seed: int) -> Path:
    return _cell_dir(out, cell) / arm / f"seed{seed}.json"


def _check_spec(out: Path, spec: dict[str, Any]) -> None:
    """Runs of one folder share a budget: refuse to mix them."""
    path = out / "spec.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != spec:
            raise SystemExit(
                f"{out} holds runs measured under {stored}, this command has {spec}: use "
                "another --out, or the same --budget with this version's records"
            )
    else:
        atomic_write(path, lambda handle: handle.write(json.dumps(spec, indent=1).encode()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cells", nargs="*", help="NxL cells, e.g. 20x6 100x20 (default: all 9)")
    parser.add_argument("--arms", nargs="*", help=f"default: all of {list(ARMS)}")
    parser.add_argument(
        "--metric",
        default="reward_eval",
        choices=["reward_eval", "reward_true", "reward_train"],
        help="report: held-out (default), true-model or training-simulator reward",
    )
    parser.add_argument("--out", default="runs/bench-credit")
    add_backend_arguments(parser)
    args = parser.parse_args()
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
