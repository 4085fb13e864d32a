"""Recovery of the synthetic world's list effects by a fitted composition (issue 20).

Usage::

    python benchmarks/bench_composition.py [--seeds 3] [--out runs/bench-composition] \
        [--world n_users=1200]
    python benchmarks/bench_composition.py --report --out runs/bench-composition

Sweeps the world's satiation (0, 1, 2, 4, position exponent 1) and its position
exponent (0, 1, 2, 4, satiation 1), one world per seed, and fits
:func:`simulators.composition_fit.fit_composition` (``redundancy="sum"`` with a
complementarity matrix: the true model is inside the family) on each world's logs
two ways:

* ``oracle``: on the world's own attractiveness (its true model without list
  effects), frozen (``mode="after"``): whether the logs identify the effects at all;
* ``joint``: with a pointwise attractiveness learned from the same logs
  (``mode="joint"``): what a user of the suite gets.

Issue 20's target: fitted strengths within 20% of the true ones across the sweep
(absolute error <= 0.2 where the truth is 0). One JSON per (seed, world, fit) in
``--out/runs`` (resumable); ``recovery.md`` and ``composition_recovery.png`` are
rebuilt from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from agents.evaluation import confidence_interval
from simulators._io import atomic_write
from simulators.composition_fit import fit_composition
from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.errors import ConfigError
from simulators.data.synthetic_config import SyntheticConfig
from simulators.data.synthetic_world import SyntheticWorld, TrueClickModel
from simulators.factory import SimulatorSpec, build_simulator

#: (satiation, position exponent) of the sweep: each strength at 0, 1, 2, 4, the other at 1.
SETTINGS = (
    *((satiation, 1.0) for satiation in (0.0, 1.0, 2.0, 4.0)),
    *((1.0, position) for position in (0.0, 2.0, 4.0)),
)
FITS = ("oracle", "joint")


def _world(overrides: str) -> SyntheticConfig:
    """The default world with ``--world key=value,...`` overrides."""
    try:
        return SyntheticConfig().with_overrides(overrides)
    except ConfigError as error:
        raise SystemExit(f"--world: {error}") from None


def recovery_run(world: SyntheticConfig, fit: str, dim: int) -> dict:
    """Fit the composition on ``world``'s logs one way; the fitted values and the truth."""
    data = load_rerank_data(
        "synthetic",
        config=PipelineConfig(num_candidates=30, retriever="pop"),
        synthetic=world,
        progress=False,
    )
    users, items = torch.as_tensor(data.user_features), torch.as_tensor(data.item_features)
    genres = items[:, :-1]  # one-hot categories (the last column is the year)
    start = time.perf_counter()
    if fit == "oracle":
        blind = dataclasses.replace(world, satiation=0.0, complementarity=0.0, position_bias=0.0)
        base = TrueClickModel(
            SyntheticWorld(blind), user_index=data.user_ids - 1, item_index=data.item_ids - 1
        )
        model, result = fit_composition(
            base, data, genres, mode="after", epochs=80, patience=5, weight_decay=0.0
        )
    else:
        base = build_simulator(SimulatorSpec.for_data(data, "pointwise", dim=dim), users, items)
        model, result = fit_composition(base, data, genres, mode="joint", epochs=80, patience=5)
    composition = model.composition()
    return {
        "world": dataclasses.asdict(world),
        "fit": fit,
        "dim": dim,
        "true": {"satiation": world.satiation, "position_bias": world.position_bias},
        "fitted": {
            "satiation": composition.diversity_strength,
            "position_bias": composition.position_bias,
            "examination": list(composition.examination),
        },
        "best_epoch": result.best_epoch,
        "valid_nll": result.valid_nll[result.best_epoch],
        "seconds": time.perf_counter() - start,
    }


def within_target(true: float, fitted: float) -> bool:
    """Within 20% of the truth, or within 0.2 of a true 0."""
    return abs(fitted - true) <= (0.2 if true == 0 else 0.2 * abs(true))


def recovery_table(records: list[dict]) -> str:
    """Markdown: fitted strengths per world setting and fit, mean [95% CI] over seeds."""

    def cell(values: list[float]) -> str:
        mean, low, high = confidence_interval(values)
        return f"{mean:.2f} [{low:.2f}, {high:.2f}]"

    seeds = sorted({r["world"]["seed"] for r in records})
    lines = [
        f"Synthetic world ({records[0]['world']['n_users']} users), {len(seeds)} seed(s) "
        "(one world each); fitted strength, mean [95% bootstrap CI] over seeds; "
        "`hit`: seeds within the target (20%, or 0.2 of a true 0) on both strengths.",
        "",
        "| true satiation | true position exponent | fit | fitted satiation "
        "| fitted position exponent | hit |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for satiation, position in SETTINGS:
        for fit in FITS:
            rows = [
                r
                for r in records
                if r["fit"] == fit
                and r["true"] == {"satiation": satiation, "position_bias": position}
            ]
            if not rows:
                continue
            hits = sum(
                within_target(satiation, r["fitted"]["satiation"])
                and within_target(position, r["fitted"]["position_bias"])
                for r in rows
            )
            lines.append(
                f"| {satiation:g} | {position:g} | {fit} "
                f"| {cell([r['fitted']['satiation'] for r in rows])} "
                f"| {cell([r['fitted']['position_bias'] for r in rows])} | {hits}/{len(rows)} |"
            )
    return "\n".join(lines) + "\n"


def recovery_figure(records: list[dict], path: Path) -> None:
    """Fitted against true strength, both sweeps, both fits."""
    import matplotlib  # noqa: PLC0415  (optional at import time)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(1, 2, figsize=(9, 4))
    for axis, (name, other, label) in zip(
        axes,
        (
            ("satiation", "position_bias", "satiation"),
            ("position_bias", "satiation", "position exponent"),
        ),
        strict=True,
    ):
        for fit, marker in zip(FITS, ("o", "s"), strict=True):
            rows = [r for r in records if r["fit"] == fit and r["true"][other] == 1.0]
            truth = np.array([r["true"][name] for r in rows])
            fitted = np.array([r["fitted"][name] for r in rows])
            axis.scatter(truth, fitted, marker=marker, alpha=0.7, label=fit)
        line = np.array([0.0, 4.0])
        axis.plot(line, line, "k--", linewidth=1)
        axis.fill_between(
            line,
            0.8 * line - 0.2 * (line == 0),
            1.2 * line + 0.2 * (line == 0),
            color="grey",
            alpha=0.15,
            label="target (20%)",
        )
        axis.set_xlabel(f"true {label}")
        axis.set_ylabel(f"fitted {label}")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="worlds per setting")
    parser.add_argument("--world", default="", help="SyntheticConfig overrides, key=value,...")
    parser.add_argument("--dim", type=int, default=16, help="the joint fit's pointwise width")
    parser.add_argument("--fits", nargs="*", choices=FITS, default=list(FITS))
    parser.add_argument("--report", action="store_true", help="tables from stored runs only")
    parser.add_argument("--out", default="runs/bench-composition")
    args = parser.parse_args()
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    base_world = _world(args.world)
    if not args.report:
        for seed in range(args.seeds):
            for satiation, position in SETTINGS:
                world = dataclasses.replace(
                    base_world, seed=seed, satiation=satiation, position_bias=position
                )
                for fit in args.fits:
                    path = out / "runs" / f"seed{seed}_sat{satiation:g}_pos{position:g}_{fit}.json"
                    if path.exists():
                        continue
                    record = recovery_run(world, fit, args.dim)
                    fitted = record["fitted"]
                    print(
                        f"seed {seed} satiation {satiation:g} position {position:g} {fit}: "
                        f"{fitted['satiation']:.3f} / {fitted['position_bias']:.3f} "
                        f"({record['seconds']:.0f} s)",
                        flush=True,
                    )
                    text = json.dumps(record, indent=1).encode()
                    atomic_write(path, lambda handle, text=text: handle.write(text))
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    if not records:
        raise SystemExit(f"no runs in {out / 'runs'}: run without --report first")
    table = recovery_table(records)
    (out / "recovery.md").write_text(table)
    recovery_figure(records, out / "composition_recovery.png")
    print(table)


if __name__ == "__main__":
    main()
