"""Sim-to-real error in the synthetic world: learned simulators vs the true model.

Usage::

    python benchmarks/bench_sim_to_real.py [--requests 500] [--weight-decay 1e-3] \
        [--world sessions_per_user=75,n_users=2000]
    python benchmarks/bench_sim_to_real.py --study fidelity --seeds 3 [--budget quick] \
        [--requests 200] [--out runs/bench-fidelity]
    python benchmarks/bench_sim_to_real.py --study judges --seeds 3 [--out runs/bench-judges]
    python benchmarks/bench_sim_to_real.py --study decay --seeds 3 --dim 32 \
        --grid adam:1e-5,adamw:0.1,adamw-epoch:50 [--kinds pbm transformer] [--out runs/bench-decay]

``--study rank`` (default) fits every learned simulator on the synthetic world's
logs (the same pipeline as real data) and prints, for random 6-item lists of test
requests' candidates, the Spearman correlation between each simulator's expected
clicks and the true model's, plus test AUC on logged slates (the true model's own
AUC is the ceiling). Issue 3's target: Spearman rho >= 0.9.

``--study fidelity`` (issue 20) measures what matters for reranking on the task's
simulators (``make_task(dataset="synthetic")``: the training ensemble and its
held-out member) in one world per seed (``SyntheticConfig(seed=k)``), with
:mod:`simulators.fidelity`: argmax-transfer regret of beam-8, Kendall's tau with
the truth over each request's alternative lists (random, and neighbours of the
truth's beam list), the click-level ratio, and the **lead ratio** of beam-8, DeGRe
and GoalRank over pointwise greedy under each judge (training simulator, held-out
member) against the truth. Targets: regret <= 3%, tau >= 0.8, the held-out judge's
lead ratio for beam-8 in [0.8, 1.25]. One JSON per seed in ``--out``; the table
gives the mean and a bootstrap 95% interval over seeds.

``--study judges`` (issue 20) asks which held-out judge is most independent of the
training simulator: beam-8's lead over pointwise greedy (both on the training
simulator) under judges fitted on the same logs with another seed (the bundles'
held-out member), on the other half of every user's sessions, on the other half of
the users, or of another family (PBM), each with the assumed and the fitted
composition, against its lead in truth.

``--study decay`` (issue 20) fits the ``--kinds`` with each ``OPTIMIZER:DECAY`` of
``--grid`` in one world per seed and tabulates the rank study's rho (and test AUC):
``adam`` is Adam's coupled L2 ``weight_decay``, ``adamw`` AdamW's decoupled decay
per step, ``adamw-epoch`` AdamW's decay per pass over the training slates
(``fit_simulator(weight_decay_per_epoch=...)``). A cell marked ``n=k`` ran on fewer
seeds than the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from scipy.stats import spearmanr

from agents.evaluation import confidence_interval
from agents.registry import make_agent
from rerank_env.task import make_task
from simulators._io import atomic_write
from simulators.base import ClickSimulator, SlateBatch
from simulators.composed import ComposedSimulator
from simulators.composition_fit import fit_composition
from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.errors import ConfigError
from simulators.data.synthetic_config import SyntheticConfig
from simulators.data.synthetic_world import SyntheticWorld, TrueClickModel, true_simulator_for
from simulators.factory import MODEL_KINDS, SimulatorSpec, build_simulator
from simulators.fidelity import Requests, fidelity_metrics, lead_ratio, pointwise_sort
from simulators.search import beam_search
from simulators.training import (
    disjoint_halves,
    evaluate_simulator,
    fit_simulator,
    logged_slates,
    roc_auc,
)


def _world(overrides: str) -> SyntheticConfig:
    """The default world with ``--world key=value,...`` overrides."""
    try:
        return SyntheticConfig().with_overrides(overrides)
    except ConfigError as error:
        raise SystemExit(f"--world: {error}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", choices=["rank", "fidelity", "judges", "decay"], default="rank")
    parser.add_argument("--requests", type=int, default=None, help="rank: 500, fidelity: 200")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument(
        "--optimizer",
        choices=list(DECAY_OPTIMIZERS),
        default="adam",
        help="rank: Adam with coupled L2 (the suite's default), AdamW (decoupled decay) "
        "or adamw-epoch (decoupled, the decay per pass over the logs)",
    )
    parser.add_argument(
        "--grid",
        default="adam:1e-5,adam:1e-3,adamw:0,adamw:0.01,adamw:0.1",
        help="decay: OPTIMIZER:DECAY settings, comma-separated",
    )
    parser.add_argument(
        "--kinds", nargs="*", default=["pbm", "transformer"], help="decay: simulator kinds"
    )
    parser.add_argument(
        "--world", default="", help="SyntheticConfig overrides, e.g. sessions_per_user=75"
    )
    parser.add_argument(
        "--seeds", type=int, default=3, help="fidelity / judges / decay: worlds (one per seed)"
    )
    parser.add_argument("--budget", default="quick", help="fidelity: the agents' preset")
    parser.add_argument(
        "--composition",
        choices=["assumed", "fitted"],
        default="assumed",
        help="fidelity: the task's composition (make_task(composition=...))",
    )
    parser.add_argument(
        "--weight-decay-per-epoch",
        type=float,
        default=None,
        help="fidelity: fit the task's simulators with AdamW's decay per epoch "
        "(make_task(weight_decay_per_epoch=...); default: the bundles' Adam L2)",
    )
    parser.add_argument(
        "--agents",
        nargs="*",
        default=list(LEAD_AGENTS),
        help="fidelity: agents whose lead is judged",
    )
    parser.add_argument(
        "--out", default=None, help="fidelity / judges / decay: records (runs/bench-<study>)"
    )
    args = parser.parse_args()
    if args.study == "fidelity":
        fidelity_study(args)
    elif args.study == "judges":
        judges_study(args)
    elif args.study == "decay":
        decay_study(args)
    else:
        rank_study(args)


def rank_study(args: argparse.Namespace) -> None:
    """Spearman rho of every learned simulator against the truth on random lists."""
    world = _world(args.world)
    print(f"world: {world}; {args.optimizer}, weight decay {args.weight_decay}")
    setup = RankSetup.build(world, args.requests or 500)
    print(f"true model: test AUC {setup.ceiling_auc:.4f} (the ceiling)")
    print(
        f"true model without satiation and complementarity: rho {setup.blind_rho:.3f} (the "
        "ceiling of a composition-blind model)\n"
    )
    print("| simulator | Spearman rho vs true list reward | test AUC | fit (s) |")
    print("|---|---|---|---|")
    for kind in MODEL_KINDS:
        score = setup.fit_and_score(kind, args.dim, args.optimizer, args.weight_decay)
        print(f"| {kind} | {score['rho']:.3f} | {score['auc']:.4f} | {score['seconds']:.1f} |")


@dataclasses.dataclass(frozen=True)
class RankSetup:
    """One world's logs, truth and the random test lists the rank study scores."""

    data: object
    batch: SlateBatch
    true_reward: object
    ceiling_auc: float
    blind_rho: float

    @classmethod
    def build(cls, world: SyntheticConfig, requests: int) -> RankSetup:
        """Random 6-item lists of the first ``requests`` test requests' candidates."""
        data = load_rerank_data("synthetic", synthetic=world, progress=False)
        truth = true_simulator_for(data, world).eval()
        test = data.split_indices("test")[:requests]
        generator = torch.Generator().manual_seed(0)
        candidates = torch.as_tensor(data.candidates[test])
        slots = torch.stack(
            [torch.randperm(candidates.shape[1], generator=generator)[:6] for _ in test]
        )
        batch = SlateBatch(
            torch.as_tensor(data.request_user[test]),
            torch.gather(candidates, 1, slots),
            torch.as_tensor(data.history(test, 50)[0]),
        )
        blind = TrueClickModel(
            SyntheticWorld(dataclasses.replace(world, satiation=0.0, complementarity=0.0)),
            user_index=data.user_ids - 1,
            item_index=data.item_ids - 1,
        )
        with torch.no_grad():
            true_reward = truth.expected_reward(batch).numpy()
            blind_rho = spearmanr(blind.expected_reward(batch).numpy(), true_reward).statistic
            logged, clicks = logged_slates(data, "test")
            ceiling = roc_auc(clicks.numpy().ravel(), truth.click_probs(logged).numpy().ravel())
        return cls(data, batch, true_reward, float(ceiling), float(blind_rho))

    def fit_and_score(self, kind: str, dim: int, optimizer: str, weight_decay: float) -> dict:
        """Fit one learned simulator on the logs; its rho, test AUC and fit time.

        ``optimizer``: ``"adam"`` (coupled L2 ``weight_decay``, the suite's),
        ``"adamw"`` (decoupled: a shrink of ``lr * weight_decay`` per step whatever
        the gradient) or ``"adamw-epoch"`` (decoupled, ``weight_decay`` per *epoch*:
        divided by the steps per epoch, so the same value shrinks the same amount
        per pass over the logs however many slates they hold).
        """
        data = self.data
        users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
        model = build_simulator(SimulatorSpec.for_data(data, kind, dim=dim), users, items)
        start = time.perf_counter()
        # Adam's coupled L2 is divided by the gradient's running scale and acts at
        # every step, while a user's row gets a data gradient only in the batches
        # that hold that user: the more users, the more the decay wins.
        chosen = (
            torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=weight_decay)
            if optimizer == "adamw"
            else None
        )
        fit_simulator(
            model,
            data,
            weight_decay=weight_decay,
            epochs=40,
            patience=4,
            progress=False,
            optimizer=chosen,
            learning_rate=5e-3,
            weight_decay_per_epoch=weight_decay if optimizer == "adamw-epoch" else None,
        )
        seconds = time.perf_counter() - start
        with torch.no_grad():
            reward = model.expected_reward(self.batch).numpy()
        return {
            "rho": float(spearmanr(reward, self.true_reward).statistic),
            "auc": float(evaluate_simulator(model, data, "test")["auc"]),
            "seconds": seconds,
        }


def decay_study(args: argparse.Namespace) -> None:
    """Rho of each (optimizer, decay) setting per world seed, then the table over seeds."""
    out = Path(args.out or "runs/bench-decay")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    settings = [_setting(text) for text in args.grid.split(",")]
    for seed in range(args.seeds):
        world = dataclasses.replace(_world(args.world), seed=seed)
        setup = None
        for kind in args.kinds:
            for optimizer, decay in settings:
                path = out / "runs" / f"seed{seed}-{kind}-{optimizer}-{decay:g}.json"
                if path.exists():
                    continue
                setup = setup or RankSetup.build(world, args.requests or 500)
                record = {
                    "seed": seed,
                    "world": dataclasses.asdict(world),
                    "kind": kind,
                    "optimizer": optimizer,
                    "weight_decay": decay,
                    "dim": args.dim,
                    "blind_rho": setup.blind_rho,
                    "ceiling_auc": setup.ceiling_auc,
                    **setup.fit_and_score(kind, args.dim, optimizer, decay),
                }
                print(f"seed {seed} {kind} {optimizer} {decay:g}: rho {record['rho']:.3f}")
                _store(path, record)
    _tabulate(out, "decay.md", decay_table)


def _store(path: Path, record: dict) -> None:
    """Write one run's record at once (atomically), so a stopped study loses no run."""
    text = json.dumps(record, indent=1).encode()
    atomic_write(path, lambda handle: handle.write(text))


def _records(out: Path) -> list[dict]:
    """Every run record stored in ``out/runs``."""
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("seed*.json"))]


def _tabulate(out: Path, name: str, table_of: Callable[[list[dict]], str]) -> None:
    """Write and print the table of every stored record."""
    table = table_of(_records(out))
    (out / name).write_text(table)
    print(table)


def _setting(text: str) -> tuple[str, float]:
    """``"adamw:0.1"`` -> ``("adamw", 0.1)``."""
    optimizer, _, decay = text.partition(":")
    if optimizer not in DECAY_OPTIMIZERS or not decay:
        raise SystemExit(
            f"--grid: {text!r} is not OPTIMIZER:DECAY with OPTIMIZER one of {DECAY_OPTIMIZERS}"
        )
    return optimizer, float(decay)


#: Optimizers of the decay study (see :meth:`RankSetup.fit_and_score`).
DECAY_OPTIMIZERS = ("adam", "adamw", "adamw-epoch")


def decay_table(records: list[dict]) -> str:
    """Markdown: rho and AUC per (optimizer, decay) and kind, mean [95% CI] over seeds."""
    kinds = sorted({r["kind"] for r in records})
    settings = sorted({(r["optimizer"], r["weight_decay"]) for r in records})
    seeds = sorted({r["seed"] for r in records})
    blind = [r["blind_rho"] for r in records if r["kind"] == kinds[0]]
    lines = [
        f"{len(seeds)} world seed(s); Spearman rho with the true list reward (test AUC); "
        f"mean [95% bootstrap CI] over seeds. Composition-blind truth: rho "
        f"{sum(blind) / len(blind):.3f}.",
        "",
        "| optimizer | decay | " + " | ".join(kinds) + " |",
        "|---|---:|" + "---|" * len(kinds),
    ]
    for optimizer, decay in settings:
        cells = []
        for kind in kinds:
            rows = [
                r
                for r in records
                if (r["kind"], r["optimizer"], r["weight_decay"]) == (kind, optimizer, decay)
            ]
            auc = sum(r["auc"] for r in rows) / max(len(rows), 1)
            # A setting run on fewer seeds than the rest says so (its CI is narrower).
            fewer = f" n={len(rows)}" if 0 < len(rows) < len(seeds) else ""
            cells.append(f"{cell([r['rho'] for r in rows])} ({auc:.3f}){fewer}" if rows else "")
        lines.append(f"| {optimizer} | {decay:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: Agents whose lead over pointwise greedy each judge reports (beam-8 needs no fit).
LEAD_AGENTS = ("beam-8", "degre", "goalrank")
#: The judges: the simulator the agents train on, and the held-out ensemble member.
JUDGES = {"train": "training simulator", "eval": "held-out member"}


def fidelity_study(args: argparse.Namespace) -> None:
    """Fidelity of the task's simulators per world seed, then the table over seeds."""
    out = Path(args.out or "runs/bench-fidelity")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        path = out / "runs" / f"seed{seed}.json"
        if path.exists():
            print(f"seed {seed}: stored, reused ({path})")
            continue
        record = fidelity_run(seed, args)
        _store(path, record)
    _tabulate(out, "fidelity.md", fidelity_table)


def fidelity_run(seed: int, args: argparse.Namespace) -> dict:
    """Every fidelity metric in the world of ``seed`` (its task, agents and truth)."""
    world = dataclasses.replace(_world(args.world), seed=seed)
    task = make_task(
        dataset="synthetic",
        synthetic=world,
        composition=args.composition,
        weight_decay_per_epoch=args.weight_decay_per_epoch,
        progress=True,
    )
    test = task.requests("test")[: args.requests or 200]
    index = torch.as_tensor(test.copy())  # the task's arrays are read-only
    requests = Requests(
        task.users[index], task.histories[index], task.candidates[index][:, : task.num_candidates]
    )
    train, held_out, truth = (task.simulators[role] for role in ("train", "eval", "true"))
    length = task.slate_length
    start = time.perf_counter()
    record: dict = {
        "seed": seed,
        "world": dataclasses.asdict(world),
        "requests": len(test),
        "composition": args.composition,
        "weight_decay_per_epoch": args.weight_decay_per_epoch,
    }
    record["simulators"] = {
        role: fidelity_metrics(task.simulators[role], truth, requests, length, seed=seed)
        for role in JUDGES
    }
    # The held-out member as the judge of the training simulator's beam lists.
    record["simulators"]["train"]["lead_ratio_eval_judge"] = fidelity_metrics(
        train, truth, requests, length, judge=held_out, seed=seed
    )["lead_ratio"]

    def lists_of(name: str) -> torch.Tensor:
        agent = make_agent(name, seed=seed, budget=args.budget)
        if hasattr(agent, "fit"):
            agent.fit(task)
        slots = torch.as_tensor(agent.rank(task, test))
        return torch.gather(requests.candidates, 1, slots)

    baseline = lists_of("pointwise-greedy")
    record["leads"] = {}
    for name in args.agents:
        lists = lists_of(name)
        record["leads"][name] = {
            role: lead_ratio(task.simulators[role], truth, requests, lists, baseline)
            for role in JUDGES
        }
    record["seconds"] = time.perf_counter() - start
    return record


def cell(values: list[float], digits: int = 3) -> str:
    """``mean [low, high]``: the mean and its 95% bootstrap interval over seeds."""
    mean, low, high = confidence_interval(values)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def fidelity_table(records: list[dict]) -> str:
    """Markdown: simulator metrics and lead ratios, mean [95% CI] over world seeds."""

    seeds = len(records)
    lines = [
        f"Synthetic world, {seeds} seed(s) (one world each), "
        f"{records[0]['requests']} test requests, "
        f"{records[0].get('composition', 'assumed')} composition"
        + (
            f", simulators fitted with AdamW decay {decay:g} per epoch; "
            if (decay := records[0].get("weight_decay_per_epoch")) is not None
            else "; "
        )
        + "mean [95% bootstrap CI] over seeds.",
        "",
        "| simulator | argmax regret % | tau, random lists | tau, near the optimum "
        "| click level / truth | lead ratio of its beam (own judge) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for role, label in JUDGES.items():
        rows = [r["simulators"][role] for r in records]
        lines.append(
            f"| {label} | {cell([m['regret_pct'] for m in rows], 2)} "
            f"| {cell([m['kendall_tau_random'] for m in rows])} "
            f"| {cell([m['kendall_tau_local'] for m in rows])} "
            f"| {cell([m['click_level_ratio'] for m in rows])} "
            f"| {cell([m['lead_ratio'] for m in rows], 2)} |"
        )
    lines += [
        "",
        "Lead over pointwise greedy (relative gain in expected clicks) under each judge and "
        "in truth; the lead ratio is judge / truth (1 = an honest judge):",
        "",
        "| agent | lead, training sim | lead, held-out | lead, truth "
        "| ratio, training sim | ratio, held-out |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in records[0]["leads"]:
        leads = [r["leads"][name] for r in records]
        lines.append(
            f"| {name} | {cell([100 * m['train']['judge_lead'] for m in leads], 1)}% "
            f"| {cell([100 * m['eval']['judge_lead'] for m in leads], 1)}% "
            f"| {cell([100 * m['eval']['true_lead'] for m in leads], 1)}% "
            f"| {cell([m['train']['lead_ratio'] for m in leads], 2)} "
            f"| {cell([m['eval']['lead_ratio'] for m in leads], 2)} |"
        )
    return "\n".join(lines) + "\n"


#: Training simulator and judge per variant: ``(the rows each is fitted on, judge kind)``.
JUDGE_VARIANTS = {
    "same logs": "both on every training slate, seeds 0 and 1 (the bundles' held-out member)",
    "session halves": "each on one half of every user's slates",
    "user halves": "each on the slates of one half of the users",
    "other family": "judge: a PBM on every training slate",
}


def judges_study(args: argparse.Namespace) -> None:
    """Which held-out judge's lead ratio is closest to the truth, per world seed."""
    out = Path(args.out or "runs/bench-judges")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        path = out / "runs" / f"seed{seed}.json"
        if path.exists():
            print(f"seed {seed}: stored, reused ({path})")
            continue
        record = judges_run(seed, args)
        _store(path, record)
    _tabulate(out, "judges.md", judges_table)


def judges_run(seed: int, args: argparse.Namespace) -> dict:
    """Beam-8's lead over pointwise greedy under each judge variant and in truth."""
    world = dataclasses.replace(_world(args.world), seed=seed)
    task = make_task(dataset="synthetic", synthetic=world, progress=False)
    data = load_rerank_data(
        "synthetic",
        config=PipelineConfig(num_candidates=max(task.num_candidates, 50), slate_length=6),
        synthetic=world,
        progress=False,
    )
    truth = task.simulators["true"]
    test = task.requests("test")[: args.requests or 200]
    index = torch.as_tensor(test.copy())
    requests = Requests(
        task.users[index], task.histories[index], task.candidates[index][:, : task.num_candidates]
    )
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    genres = items[:, :-1]  # the composition's item vectors, as in bundles
    length = task.slate_length

    def member(kind: str, member_seed: int, rows: dict | None) -> ClickSimulator:
        model = build_simulator(
            SimulatorSpec.for_data(data, kind, dim=32, seed=member_seed), users, items
        )
        fit_simulator(
            model,
            data,
            seed=member_seed,
            progress=False,
            train_rows=None if rows is None else rows["train"],
            valid_rows=None if rows is None else rows["valid"],
        )
        return model.eval()

    def composed(model: ClickSimulator, composition: str, rows: dict | None) -> ClickSimulator:
        if composition == "assumed":  # the bundles' default
            return ComposedSimulator(model, genres, max_positions=length).eval()
        fitted, _ = fit_composition(
            model,
            data,
            genres,
            mode="after",
            max_positions=length,
            train_rows=None if rows is None else rows["train"],
            valid_rows=None if rows is None else rows["valid"],
        )
        return fitted.with_base(model).eval()

    start = time.perf_counter()
    every = member("transformer", 0, None)
    pairs = {"same logs": ((every, None), (member("transformer", 1, None), None))}
    for by, name in (("sessions", "session halves"), ("users", "user halves")):
        first, second = disjoint_halves(data, by=by, seed=seed)
        pairs[name] = (
            (member("transformer", 0, first), first),
            (member("transformer", 1, second), second),
        )
    pairs["other family"] = ((every, None), (member("pbm", 1, None), None))
    record: dict = {"seed": seed, "world": dataclasses.asdict(world), "requests": len(test)}
    record["variants"] = {}
    for composition in ("assumed", "fitted"):
        for name, ((train_model, train_rows), (judge_model, judge_rows)) in pairs.items():
            train = composed(train_model, composition, train_rows)
            judge = composed(judge_model, composition, judge_rows)
            with torch.no_grad():
                lists, _ = beam_search(
                    train,
                    requests.users,
                    requests.histories,
                    requests.candidates,
                    length,
                    width=8,
                )
            baseline = pointwise_sort(train, requests, length)
            record["variants"][f"{name} / {composition}"] = {
                "judge": lead_ratio(judge, truth, requests, lists, baseline),
                "own": lead_ratio(train, truth, requests, lists, baseline),
            }
    record["seconds"] = time.perf_counter() - start
    return record


def judges_table(records: list[dict]) -> str:
    """Markdown: beam-8's lead ratio under each judge, mean [95% CI] over world seeds."""

    lines = [
        f"Synthetic world, {len(records)} seed(s) (one world each), "
        f"{records[0]['requests']} test requests; beam-8 on the training simulator against "
        "its pointwise greedy list; mean [95% bootstrap CI] over seeds. Lead ratio = lead "
        "under the judge / lead in truth (1 = honest; target for the held-out judge: 0.8-1.25).",
        "",
        "| judge / composition | lead, judge | lead, truth | lead ratio, judge "
        "| lead ratio, training simulator |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant in records[0]["variants"]:
        rows = [r["variants"][variant] for r in records]
        lines.append(
            f"| {variant} | {cell([100 * m['judge']['judge_lead'] for m in rows], 1)}% "
            f"| {cell([100 * m['judge']['true_lead'] for m in rows], 1)}% "
            f"| {cell([m['judge']['lead_ratio'] for m in rows], 2)} "
            f"| {cell([m['own']['lead_ratio'] for m in rows], 2)} |"
        )
    lines += ["", *(f"- {name}: {text}" for name, text in JUDGE_VARIANTS.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
