"""What ``compare`` writes and prints: tables, per-seed rows, curves and figures."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.telemetry import write_rows_csv
from agents.evaluation import (
    SEEDS_INTERVAL,
    TWO_WAY_INTERVAL,
    EvaluationSet,
    RequestValues,
    agreement_entry,
    agreement_line,
    compact_paired_table,
    compact_table,
    interval_note,
    paired_table,
    read_csv,
    reference_agent,
    results_markdown,
    summarise,
    write_csv,
)


@dataclass
class Gathered:
    """The rows of a comparison, in table order.

    Attributes:
        rows: One row per (agent, seed): its metrics and fit time.
        curves: Every trainer's training-log rows.
        profiles: Held-out click probability per slot, per (agent, seed).
        curve_keys: Each trained agent's learning-curve ``(x, y)`` keys.
        per_request: Each agent's per-request values, one per distinct run (an
            agent run once for every seed has one).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    curve_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    per_request: dict[str, list[RequestValues]] = field(default_factory=dict)


def write_results(
    folder: Path,
    gathered: Gathered,
    evaluation: EvaluationSet,
    *,
    title: str,
    reference: str | None = None,
) -> list[dict[str, Any]]:
    """Write the tables and figures of a comparison into ``folder``.

    ``results.md`` and ``results.csv`` (mean and interval per agent: two-way over
    seeds and requests where the runs' per-request values are gathered), the paired
    table against ``reference`` (in ``results.md``), the agent-ranking agreement
    where there is a true reward (:func:`~agents.evaluation.agreement_entry`),
    ``results.json`` (the tables, the judge and what their intervals are),
    ``per_seed.csv``, ``curves.csv``, ``position_clicks.csv`` and the figures
    (:func:`plot_results`).

    Args:
        folder: The run folder.
        gathered: The comparison's rows.
        evaluation: The evaluation set they were measured on.
        title: The heading of ``results.md``.
        reference: The paired table's reference agent
            (:func:`~agents.evaluation.reference_agent`'s default when ``None``).

    Returns:
        The summary rows.
    """
    summary = summarise(gathered.rows, per_request=gathered.per_request)
    for entry in summary:
        times = [row["fit_s"] for row in gathered.rows if row["agent"] == entry["agent"]]
        entry["fit_s"] = float(np.mean(times))
    reference = reference_agent([entry["agent"] for entry in summary], reference)
    paired = paired_table(gathered.per_request, reference) if gathered.per_request else []
    agreement = agreement_entry(gathered.per_request)
    (folder / "results.md").write_text(
        results_markdown(summary, evaluation, title, paired, agreement)
    )
    write_csv(folder / "results.csv", summary)
    results = {
        "interval": interval_note(summary),
        "judge": evaluation.judge_line(),
        "reference": reference,
        "summary": summary,
        "paired": paired,
        "agreement": agreement,
    }
    (folder / "results.json").write_text(json.dumps(_finite(results), indent=1) + "\n")
    write_csv(folder / "per_seed.csv", gathered.rows)
    curves = gathered.curves or [{"agent": "", "seed": "", "stage": ""}]
    write_rows_csv(folder / "curves.csv", curves)
    write_csv(folder / "position_clicks.csv", gathered.profiles)
    points = learning_curves(gathered.curves, gathered.curve_keys)
    plot_results(folder, summary, points, gathered.profiles, evaluation)
    return summary


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
        two_way = all(entry["requests"] > 0 for entry in summary)
        legend = (
            "held-out reward: mean ± half its interval, a "
            f"{TWO_WAY_INTERVAL if two_way else SEEDS_INTERVAL}; every metric with its "
            "interval: results.md, or --full-table"
        )
        results = json.loads((folder / "results.json").read_text())
        agreement = results.get("agreement")
        agreement_text = f"{prose(agreement_line(agreement))}\n" if agreement else ""
        body = (
            f"{prose(title)}\n{prose(results['judge'])}\n{prose(config['headroom_line'])}\n\n"
            f"{compact_table(summary)}{prose(legend)}\n{agreement_text}"
            f"{_paired_text(results, prose)}"
        )
    notes = [
        f"wrote {folder} in {config['wall_s']:.0f} s: results.md, results.csv, results.json, "
        "learning_curves.png, pareto.png, credit_profile.png"
    ]
    if not config["tensorboard"]:
        notes.append(
            "TensorBoard logs skipped: pip install -e '.[tensorboard]' (the tensorboard extra) "
            "to get them; curves.csv holds the same"
        )
    return body + "\n" + "\n".join(map(prose, notes))


def _paired_text(results: dict[str, Any], prose: Any) -> str:
    """The paired table of ``results.json``'s contents for the terminal ("" without one)."""
    paired = results["paired"]
    if not paired:
        return ""
    legend = (
        f"difference from {results['reference']} on the same {paired[0]['requests']} requests, "
        "its 95% paired interval (two-way bootstrap), the minimum detectable difference at "
        "80% power, whether the interval excludes 0, and the probability that a run beats "
        f"a run of {results['reference']}"
    )
    return f"\n{compact_paired_table(paired)}{prose(legend)}\n"


def _finite(value: Any) -> Any:
    """``value`` with NaN floats as ``None`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


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
                {
                    "agent": row["agent"],
                    "seed": row["seed"],
                    "x_key": keys[0],
                    "y_key": keys[1],
                    "x": row[keys[0]],
                    "y": row[keys[1]],
                }
            )
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
            latency,
            reward,
            yerr=error,
            fmt=markers[index % len(markers)],
            capsize=3,
            color=colormaps["tab10"](index % 10),
            label=entry["agent"],
        )
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    axis.set_xscale("log")
    axis.set_xlabel("inference latency, ms per request (batched, log scale)")
    axis.set_ylabel("expected clicks, held-out simulator")
    over = "seeds and requests" if all(e.get("requests", 0) > 0 for e in summary) else "seeds"
    axis.set_title(f"Reward vs latency (95% interval over {over})")
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
