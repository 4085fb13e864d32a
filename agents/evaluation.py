"""The evaluation harness: every agent judged the same way on held-out test requests.

An :class:`EvaluationSet` fixes what all agents are compared on: the test requests,
the reference lists (beam search against the training simulator, pointwise greedy,
and the exact oracle where ``P(N, L)`` is small), random permutations for HR@k%,
and the GR2-protocol requests. :func:`evaluate_agent` ranks the requests with one
agent (validated by :func:`~agents.base.checked_rank`) and returns one row of
metrics; :func:`summarise` averages rows over seeds with bootstrap confidence
intervals; :func:`results_markdown` / :func:`write_csv` write them.

Metrics (one frozen evaluator kept apart from the training reward, as the
papers' protocol asks):

* ``reward_train`` / ``reward_eval`` / ``reward_true``: expected clicks of the list
  under the training simulator (the reward agents train on), the held-out simulator
  (the evaluator) and, in the synthetic world, the true user model;
* ``pct_beam`` / ``pct_oracle``: ``reward_eval`` as % of beam search's / the oracle's;
* ``hr@1%`` / ``hr@5%``: share of requests whose list is in the top k% of random
  permutations of the same request under the held-out simulator (DeGRe);
* ``hit`` / ``ndcg`` / ``precision`` / ``f1`` (@L): against the logged positives
  among the candidates (requests without one are skipped);
* ``gr2_recall@1`` / ``gr2_recall@5`` / ``gr2_ndcg@5``: the held-out next item
  among K = 10 pre-ranked candidates (GR2's protocol; NaN for agents that cannot
  rank other candidate sets, e.g. an SB3 policy trained for N = 50, and for the
  oracle, whose P(10, 5) lists per request would dominate the run);
* ``diversity``: mean pairwise cosine distance of the listed items' side features;
  ``coverage``: distinct items shown over distinct items offered;
* ``latency_ms``: wall time of batched ranking per request (after one warm-up call).
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from agents.base import Agent, UnsupportedTaskError, checked_rank, validated_lists
from agents.baselines import BeamSearchAgent, OracleAgent, PointwiseGreedy
from agents.common.training import preserved_global_rng
from agents.metrics import coverage, intra_list_diversity, log_metrics, permutation_percentile
from rerank_env.task import RerankTask
from simulators.metrics import ndcg_at_k, recall_at_k, target_ranks

#: Metric columns in table order, with the header each gets in markdown.
METRICS: dict[str, str] = {
    "reward_eval": "reward (held-out)",
    "reward_train": "reward (train sim)",
    "reward_true": "reward (true)",
    "pct_beam": "% of beam",
    "pct_oracle": "% of oracle",
    "hr@1%": "HR@1%",
    "hr@5%": "HR@5%",
    "hit": "H@L",
    "ndcg": "NDCG@L",
    "precision": "P@L",
    "f1": "F1@L",
    "gr2_recall@1": "GR2 R@1",
    "gr2_recall@5": "GR2 R@5",
    "gr2_ndcg@5": "GR2 N@5",
    "diversity": "diversity",
    "coverage": "coverage",
    "latency_ms": "ms / request",
}


@dataclass
class EvaluationSet:
    """What every agent is compared on (fixed across agents and seeds).

    Attributes:
        task: The task.
        requests: Test requests, int ``[B]``.
        permutation_values: Held-out rewards of random lists of each request ``[B, M]``.
        beam_reward: Held-out reward of beam search (training simulator), ``[B]``.
        oracle_reward: The oracle's, or ``None`` where ``P(N, L)`` is too large.
        pointwise_reward: Pointwise greedy's (trained on logs, seed 0), ``[B]``.
        gr2_task: The GR2-protocol task, or ``None`` (no GR2 requests).
        gr2_requests: Its test requests.
        beam_width: Width of the beam reference.
    """

    task: RerankTask
    requests: np.ndarray
    permutation_values: np.ndarray
    beam_reward: np.ndarray
    oracle_reward: np.ndarray | None
    pointwise_reward: np.ndarray
    gr2_task: RerankTask | None
    gr2_requests: np.ndarray
    beam_width: int

    @property
    def headroom(self) -> float:
        """Beam search over pointwise greedy, held-out reward, minus 1 (room to win)."""
        return float(self.beam_reward.mean() / self.pointwise_reward.mean() - 1.0)

    def headroom_line(self) -> str:
        """One sentence on the headroom, for every results table."""
        return (
            f"Headroom: beam-{self.beam_width} (training simulator) reaches "
            f"{self.beam_reward.mean():.4f} expected clicks under the held-out simulator, "
            f"pointwise greedy {self.pointwise_reward.mean():.4f}: "
            f"{100 * self.headroom:+.1f}% for any reranker to win over sorting by relevance."
        )


def make_evaluation_set(
    task: RerankTask,
    *,
    requests: int | None = 500,
    permutations: int = 200,
    beam_width: int = 8,
    oracle_max_lists: int = 200_000,
    seed: int = 0,
    progress: bool = False,
) -> EvaluationSet:
    """The references of the first ``requests`` test requests (all with ``None``).

    Args:
        task: The task.
        requests: How many test requests (in the split's order); ``None`` for all.
        permutations: Random lists per request for HR@k%.
        beam_width: Width of the beam-search reference.
        oracle_max_lists: The oracle reference is computed where ``P(N, L)`` is at
            most this.
        seed: Seed of the permutations and of the pointwise reference.
        progress: Show progress bars while fitting the pointwise reference.
    """
    test = task.requests("test")
    test = test if requests is None else test[:requests]
    generator = np.random.default_rng(seed)
    n, length = task.num_candidates, task.slate_length
    random_lists = np.argsort(generator.random((len(test) * permutations, n)), axis=1)[:, :length]
    permutation_values = (
        task.expected_reward(np.repeat(test, permutations), random_lists, "eval")
        .cpu()
        .numpy()
        .reshape(len(test), permutations)
    )
    beam_lists = checked_rank(BeamSearchAgent(beam_width), task, test)
    oracle_reward = None
    if math.perm(n, length) <= oracle_max_lists:
        oracle_lists = checked_rank(OracleAgent(max_lists=oracle_max_lists), task, test)
        oracle_reward = task.expected_reward(test, oracle_lists, "eval").cpu().numpy()
    pointwise = PointwiseGreedy(seed=seed).fit(task, progress=progress)
    pointwise_lists = checked_rank(pointwise, task, test)
    gr2_task = task.gr2_task() if len(task.pool.gr2_request) else None
    return EvaluationSet(
        task=task,
        requests=test,
        permutation_values=permutation_values,
        beam_reward=task.expected_reward(test, beam_lists, "eval").cpu().numpy(),
        oracle_reward=oracle_reward,
        pointwise_reward=task.expected_reward(test, pointwise_lists, "eval").cpu().numpy(),
        gr2_task=gr2_task,
        gr2_requests=np.zeros(0, np.int64) if gr2_task is None else gr2_task.requests("test"),
        beam_width=beam_width,
    )


@dataclass
class AgentEvaluation:
    """One agent's evaluation on an :class:`EvaluationSet`.

    Attributes:
        metrics: Metric name -> value (see :data:`METRICS`).
        position_clicks: Mean held-out click probability per slot ``[L]`` (the
            per-position credit profile).
        lists: The agent's lists ``[B, L]``.
    """

    metrics: dict[str, float]
    position_clicks: np.ndarray
    lists: np.ndarray


def _timed_rank(
    agent: Agent, task: RerankTask, requests: np.ndarray, batch_size: int
) -> tuple[np.ndarray, float]:
    """Lists (validated) and seconds per request of ``agent.rank`` alone."""
    checked_rank(agent, task, requests[: min(8, len(requests))])  # warm-up (lazy tables)
    batches, seconds = [], 0.0
    for start in range(0, len(requests), batch_size):
        batch = requests[start : start + batch_size]
        began = time.perf_counter()
        lists = agent.rank(task, batch)
        seconds += time.perf_counter() - began
        batches.append(validated_lists(agent, task, batch, lists))  # not timed
    return np.concatenate(batches), seconds / len(requests)


def gr2_metrics(agent: Agent, evaluation: EvaluationSet) -> dict[str, float]:
    """Recall@1/5 and NDCG@5 of the held-out next item (NaN if the agent cannot rank)."""
    missing = {"gr2_recall@1": math.nan, "gr2_recall@5": math.nan, "gr2_ndcg@5": math.nan}
    if evaluation.gr2_task is None or not len(evaluation.gr2_requests):
        return missing
    if isinstance(agent, OracleAgent):
        return missing  # 30,240 lists per request; it maximises clicks, not the target
    task, requests = evaluation.gr2_task, evaluation.gr2_requests
    try:
        lists = checked_rank(agent, task, requests)
    except UnsupportedTaskError:
        return missing  # the agent is tied to the main task's candidate count
    rank = target_ranks(lists, task.pool.gr2_target_pos[requests])
    return {
        "gr2_recall@1": float(recall_at_k(rank, 1).mean()),
        "gr2_recall@5": float(recall_at_k(rank, 5).mean()),
        "gr2_ndcg@5": float(ndcg_at_k(rank, 5).mean()),
    }


def evaluate_agent(
    agent: Agent, evaluation: EvaluationSet, *, batch_size: int = 256
) -> AgentEvaluation:
    """Rank the evaluation requests with ``agent`` and compute every metric."""
    task, requests = evaluation.task, evaluation.requests
    lists, seconds = _timed_rank(agent, task, requests, batch_size)
    clicks = task.click_probs(requests, lists, "eval").cpu().numpy()
    reward_eval = clicks.sum(axis=1)
    reward_train = task.expected_reward(requests, lists, "train").cpu().numpy()
    reward_true = (
        task.expected_reward(requests, lists, "true").cpu().numpy().mean()
        if task.has_simulator("true")
        else math.nan
    )
    percentile = permutation_percentile(reward_eval, evaluation.permutation_values)
    logs = log_metrics(lists, task.logged_positives(requests))
    items = np.take_along_axis(task.candidates_np[requests], lists, axis=1)
    metrics = {
        "reward_eval": float(reward_eval.mean()),
        "reward_train": float(reward_train.mean()),
        "reward_true": float(reward_true),
        "pct_beam": float(100 * reward_eval.mean() / evaluation.beam_reward.mean()),
        "pct_oracle": (
            math.nan
            if evaluation.oracle_reward is None
            else float(100 * reward_eval.mean() / evaluation.oracle_reward.mean())
        ),
        "hr@1%": float((percentile >= 0.99).mean()),
        "hr@5%": float((percentile >= 0.95).mean()),
        **{name: float(np.nanmean(values)) for name, values in logs.items()},
        **gr2_metrics(agent, evaluation),
        "diversity": (
            float(intra_list_diversity(items, task.pool.item_features).mean())
            if lists.shape[1] > 1
            else math.nan
        ),
        "coverage": coverage(items, task.candidates_np[requests]),
        "latency_ms": 1000 * seconds,
    }
    return AgentEvaluation(metrics, clicks.mean(axis=0), lists)


def reward_and_latency(agent: Agent, task: RerankTask, requests: np.ndarray) -> dict[str, float]:
    """Held-out and training-simulator reward of ``agent``'s lists, and ms per request.

    The light-weight measurement of the benchmark studies (``evaluate_agent`` gives
    every metric); latency is one batched ``rank`` call over ``requests``.
    """
    start = time.perf_counter()
    lists = checked_rank(agent, task, requests)
    latency = (time.perf_counter() - start) * 1000 / len(requests)
    values = {
        "reward_eval": task.expected_reward(requests, lists, "eval").mean().item(),
        "reward_train": task.expected_reward(requests, lists, "train").mean().item(),
        "latency_ms": latency,
    }
    if task.has_simulator("true"):
        values["reward_true"] = task.expected_reward(requests, lists, "true").mean().item()
    return values


def order_agreement(
    agent: Agent, task: RerankTask, requests: np.ndarray, *, seed: int = 0
) -> dict[str, float]:
    """How much ``agent``'s lists depend on the order its candidates come in.

    Each request's candidates are shuffled (seeded; every item keeps its initial
    score, see :meth:`~rerank_env.task.RerankTask.with_candidate_order`) and ranked
    again. Returns ``same_list`` (share of requests whose list of items is
    identical), ``same_items`` (mean share of listed items found in both lists) and
    ``reward_eval_shuffled`` (held-out reward of the lists made from the shuffled input).
    """
    requests = np.asarray(requests, dtype=np.int64)
    generator = np.random.default_rng(seed)
    order = np.argsort(generator.random((task.n_requests, task.num_candidates)), axis=1)
    shuffled = task.with_candidate_order(order)
    items = np.take_along_axis(task.candidates_np[requests], checked_rank(agent, task, requests), 1)
    other_lists = checked_rank(agent, shuffled, requests)
    other = np.take_along_axis(shuffled.candidates_np[requests], other_lists, 1)
    shared = (items[:, :, None] == other[:, None, :]).any(axis=2).mean(axis=1)
    return {
        "same_list": float((items == other).all(axis=1).mean()),
        "same_items": float(shared.mean()),
        "reward_eval_shuffled": shuffled.expected_reward(requests, other_lists, "eval")
        .mean()
        .item(),
    }


def confidence_interval(
    values: np.ndarray, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values`` (NaN dropped), percentile bootstrap over them.

    With fewer than two values, or all equal, the interval is the mean itself.
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2 or np.ptp(values) == 0:
        return mean, mean, mean
    result = scipy.stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        method="percentile",
        n_resamples=2000,
        rng=np.random.default_rng(seed),
    )
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarise(
    rows: list[dict[str, Any]], metrics: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Per agent: the mean over seeds of every metric with its 95% bootstrap CI.

    Args:
        rows: One dict per (agent, seed) with ``"agent"``, ``"seed"`` and metrics.
        metrics: Metrics to summarise (default: :data:`METRICS`).

    Returns:
        One dict per agent (first-seen order): ``agent``, ``seeds`` and, per metric
        ``m``, ``m``, ``m_low``, ``m_high``.
    """
    agents = list(dict.fromkeys(row["agent"] for row in rows))
    summary = []
    for agent in agents:
        mine = [row for row in rows if row["agent"] == agent]
        entry: dict[str, Any] = {"agent": agent, "seeds": len(mine)}
        for metric in METRICS if metrics is None else metrics:
            mean, low, high = confidence_interval(np.array([row[metric] for row in mine]))
            entry.update({metric: mean, f"{metric}_low": low, f"{metric}_high": high})
        summary.append(entry)
    return summary


def _cell(entry: dict[str, Any], metric: str) -> str:
    mean, low, high = entry[metric], entry[f"{metric}_low"], entry[f"{metric}_high"]
    if math.isnan(mean):
        return "-"
    digits = 1 if metric in ("pct_beam", "pct_oracle") else 2 if metric == "latency_ms" else 3
    if high - low == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def results_markdown(
    summary: list[dict[str, Any]], evaluation: EvaluationSet, title: str = "Results"
) -> str:
    """A markdown table (mean ± half the 95% CI width) with the headroom line."""
    shown = [m for m in METRICS if any(not math.isnan(entry[m]) for entry in summary)]
    lines = [
        f"# {title}",
        "",
        f"Task: {evaluation.task.summary()}. {len(evaluation.requests)} test requests; "
        f"GR2 protocol: {len(evaluation.gr2_requests)} test requests.",
        "",
        evaluation.headroom_line(),
        "",
        "Mean over seeds ± half the width of its 95% percentile-bootstrap interval over "
        "seeds (no ± : identical across seeds). With 5 seeds such intervals are narrow "
        "(they under-cover); read them as the spread across training runs.",
        "",
        "| agent | seeds | " + " | ".join(METRICS[m] for m in shown) + " |",
        "|---|---:|" + "---:|" * len(shown),
    ]
    for entry in summary:
        cells = " | ".join(_cell(entry, m) for m in shown)
        lines.append(f"| {entry['agent']} | {entry['seeds']} | {cells} |")
    return "\n".join(lines) + "\n"


#: The columns of :func:`compact_table` (the terminal summary), with two-line headers.
COMPACT_COLUMNS: dict[str, tuple[str, str]] = {
    "reward_eval": ("held-out", "reward"),
    "pct_beam": ("% of", "beam"),
    "hr@1%": ("", "HR@1%"),
    "ndcg": ("", "NDCG@L"),
    "latency_ms": ("ms per", "request"),
    "fit_s": ("fit", "s"),
}


def compact_table(summary: list[dict[str, Any]]) -> str:
    """:func:`summarise`'s entries as a plain-text table for a terminal.

    The held-out reward keeps its ± (half the 95% interval); the other columns are
    means (``results.md`` has every metric with its interval). Headers take two
    lines so that the values set the widths: with the README's agents the table is
    78 columns wide. A ``seeds`` column is shown only where agents have different
    seed counts. Agent names are never cut.
    """
    columns = dict(COMPACT_COLUMNS)
    if len({entry["seeds"] for entry in summary}) > 1:
        columns = {"seeds": ("", "seeds"), **columns}
    header = [("", "agent"), *columns.values()]
    rows = []
    for entry in summary:
        cells = [str(entry["agent"])]
        for metric in columns:
            value = entry.get(metric, math.nan)
            if metric == "reward_eval":
                cells.append(_cell(entry, metric))
            elif value is None or math.isnan(value):
                cells.append("-")
            else:
                digits = {"pct_beam": 1, "latency_ms": 2, "fit_s": 0, "seeds": 0}.get(metric, 3)
                cells.append(f"{value:.{digits}f}")
        rows.append(cells)
    widths = [
        max(len(text) for text in [*header[i], *(row[i] for row in rows)])
        for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            text.ljust(width) if i == 0 else text.rjust(width)
            for i, (text, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    top, bottom = [top for top, _ in header], [bottom for _, bottom in header]
    return "\n".join([line(top), line(bottom), *map(line, rows)]) + "\n"


def read_csv(paths: Sequence[str | Path], text_columns: Sequence[str] = ("agent",)) -> list[dict]:
    """Rows of CSVs written by :func:`write_csv`: numbers as floats, empty cells NaN.

    Args:
        paths: The files, read in order.
        text_columns: Columns kept as text.

    Raises:
        ValueError: The files hold no rows.
    """
    rows = []
    for path in paths:
        with Path(path).open(newline="") as handle:
            rows += [
                {k: v if k in text_columns else float(v or "nan") for k, v in row.items()}
                for row in csv.DictReader(handle)
            ]
    if not rows:
        raise ValueError(f"no rows in {', '.join(map(str, paths))}")
    return rows


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write dict rows (union of keys as columns, first-seen order) to ``path``."""
    path = Path(path)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------------- rliable aggregates


@contextlib.contextmanager
def _seeded_rliable(seed: int) -> Iterator[None]:
    """Run rliable reproducibly without touching the caller's global random state.

    rliable 1.2's stratified bootstraps draw their resampling indices from NumPy's
    *global* generator (``np.random.choice``), whatever ``random_state`` says; so
    the global generator is seeded here and restored afterwards. arch's warning
    that ``random_state`` is deprecated (rliable still passes one) is silenced.
    """
    with preserved_global_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        np.random.seed(seed)  # noqa: NPY002
        yield


def _rliable() -> tuple[Any, Any]:
    """``(rliable.library, rliable.metrics)``, or an error saying how to install them."""
    try:
        from rliable import library, metrics  # noqa: PLC0415
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "robust aggregates (IQM, stratified bootstrap, probability of improvement) use "
            f'rliable: pip install -e ".[stats]" ({error})'
        ) from error
    return library, metrics


def iqm_intervals(
    scores: dict[str, np.ndarray], *, reps: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Interquartile mean of each method's scores with a 95% stratified bootstrap interval.

    ``rliable``'s estimators (Agarwal et al., 2021): runs are resampled within each
    task (stratified), and the IQM is taken over all runs and tasks.

    Args:
        scores: Method name -> scores ``[runs, tasks]`` (one column per task, e.g. per
            (N, L) cell; one column for a single task).
        reps: Bootstrap resamples.
        seed: Seed of the resampling (no global random state is used).

    Returns:
        Method name -> ``(iqm, low, high)``.
    """
    library, metrics = _rliable()
    checked = {name: _score_matrix(name, values) for name, values in scores.items()}
    with _seeded_rliable(seed):
        points, intervals = library.get_interval_estimates(
            checked,
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return {
        name: (float(points[name][0]), float(intervals[name][0, 0]), float(intervals[name][1, 0]))
        for name in checked
    }


def improvement_probability(
    x: np.ndarray, y: np.ndarray, *, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``P(X > Y)``: a run of X beats a run of Y on the same task (ties count half).

    ``rliable``'s probability of improvement, averaged over tasks, with a 95%
    stratified bootstrap interval.

    Args:
        x: Scores of method X ``[runs, tasks]``.
        y: Scores of method Y ``[runs, tasks]`` (same tasks; runs may differ).
        reps: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``(probability, low, high)``.
    """
    library, metrics = _rliable()
    x, y = _score_matrix("x", x), _score_matrix("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} tasks and y has {y.shape[1]}; pair the same tasks")
    with _seeded_rliable(seed):
        points, intervals = library.get_interval_estimates(
            {"pair": [x, y]},
            metrics.probability_of_improvement,
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    low, high = np.asarray(intervals["pair"]).reshape(-1)[:2]
    return float(np.asarray(points["pair"]).reshape(-1)[0]), float(low), float(high)


def _score_matrix(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] < 2 or np.isnan(values).any():
        raise ValueError(
            f"scores of {name!r} must be [runs >= 2, tasks] without NaN, got shape "
            f"{values.shape}{' with NaN' if np.isnan(values).any() else ''}"
        )
    return values
