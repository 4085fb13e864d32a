"""The evaluation harness: every agent judged the same way on held-out test requests.

An :class:`EvaluationSet` fixes what all agents are compared on: the test requests,
the reference lists (beam search against the training simulator, pointwise greedy,
and the exact oracle where ``P(N, L)`` is small), random permutations for HR@k%,
and the GR2-protocol requests. :func:`evaluate_agent` ranks the requests with one
agent (validated by :func:`~agents.base.checked_rank`) and returns one row of
metrics and, in :class:`RequestValues`, the per-request values behind them;
:func:`summarise` averages rows over seeds with 95% intervals (a two-way bootstrap
over seeds and requests where the per-request values are given,
:mod:`agents.intervals`), :func:`paired_table` compares every agent with a reference
on the same requests, and :func:`results_markdown` / :func:`write_csv` write them.

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
import dataclasses
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from agents.base import Agent, UnsupportedTaskError, checked_rank, validated_lists
from agents.baselines import BeamSearchAgent, OracleAgent, PointwiseGreedy
from agents.common.training import preserved_global_rng
from agents.intervals import hierarchical_interval, paired_difference, ranking_agreement
from agents.metrics import coverage, intra_list_diversity, log_metrics, permutation_percentile
from rerank_env.task import RerankTask
from simulators._io import atomic_write
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

#: The metrics :func:`evaluate_agent` keeps per request, and the request set each is
#: measured on: ``"test"`` (the evaluation's test requests) or ``"gr2"`` (its
#: GR2-protocol requests). The others (``coverage``, ``latency_ms``) have one value
#: per run, so their intervals are over seeds only.
REQUEST_METRICS: dict[str, str] = {
    **dict.fromkeys(
        (
            *("reward_eval", "reward_train", "reward_true", "pct_beam", "pct_oracle"),
            *("hr@1%", "hr@5%", "hit", "ndcg", "precision", "f1", "diversity"),
        ),
        "test",
    ),
    **dict.fromkeys(("gr2_recall@1", "gr2_recall@5", "gr2_ndcg@5"), "gr2"),
}

#: Version of the files :meth:`RequestValues.save` writes.
REQUEST_VALUES_FORMAT = 1

#: What the tables say of their intervals.
TWO_WAY_INTERVAL = "95% two-way bootstrap over seeds and requests"
SEEDS_INTERVAL = "95% bootstrap over seeds only"


@dataclass(frozen=True)
class RequestValues:
    """One run's per-request metric values and the requests they were measured on.

    The rows of :func:`summarise`'s two-way intervals and of :func:`paired_table`.

    Attributes:
        values: Metric name -> float ``[requests]`` on its request set (see
            :data:`REQUEST_METRICS`; other names are on ``"test"``), NaN where the
            metric is undefined for a request (no logged positive, say).
        requests: Request set (``"test"``, ``"gr2"``) -> request indices ``[requests]``.
    """

    values: dict[str, np.ndarray]
    requests: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        for metric, values in self.values.items():
            group = self.request_set(metric)
            if group not in self.requests:
                raise ValueError(
                    f"per-request values of {metric!r} need the {group!r} request indices; "
                    f"requests has {sorted(self.requests)}"
                )
            if np.shape(values) != np.shape(self.requests[group]):
                raise ValueError(
                    f"{metric!r} has values of shape {np.shape(values)} for "
                    f"{len(self.requests[group])} {group!r} requests: give one value per request"
                )

    @staticmethod
    def request_set(metric: str) -> str:
        """The request set ``metric`` is measured on (``"test"`` unless listed otherwise)."""
        return REQUEST_METRICS.get(metric, "test")

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` file atomically (a crash leaves no partial file); returns it.

        It holds ``format`` (:data:`REQUEST_VALUES_FORMAT`), ``requests.<set>`` and
        ``values.<metric>``.
        """
        arrays = {"format": np.array(REQUEST_VALUES_FORMAT)}
        arrays |= {f"requests.{name}": np.asarray(v) for name, v in self.requests.items()}
        arrays |= {f"values.{name}": np.asarray(v) for name, v in self.values.items()}
        path = Path(path)
        atomic_write(path, lambda out: np.savez_compressed(out, **arrays))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RequestValues:
        """Read a file :meth:`save` wrote.

        Raises:
            ValueError: The file is of another format version (or not such a file).
        """
        with np.load(Path(path)) as stored:
            version = int(stored["format"]) if "format" in stored.files else None
            if version != REQUEST_VALUES_FORMAT:
                raise ValueError(
                    f"{path} holds per-request values in format {version!r}; this version "
                    f"reads format {REQUEST_VALUES_FORMAT}: evaluate the run again"
                )
            parts: dict[str, dict[str, np.ndarray]] = {"requests": {}, "values": {}}
            for key in stored.files:
                kind, _, name = key.partition(".")
                if kind in parts:
                    parts[kind][name] = stored[key]
        return cls(values=parts["values"], requests=parts["requests"])


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

    def judge_line(self) -> str:
        """Which judge the held-out reward column is, and what is assumed, in one sentence."""
        description = self.task.description
        held_out = description["held_out"]
        judge = {
            "sessions": "a simulator fitted on the other half of each user's sessions, which "
            "the training simulator never saw",
            "seed": "a simulator of another seed fitted on the same logs as the training "
            "simulator (it shares their errors)",
        }.get(held_out, f"the held-out simulators ({held_out!r})")
        composition = description["composition"]
        if composition == "fitted":
            lists = "its list effects (position bias, diversity) fitted from the logs"
        else:
            settings = ", ".join(f"{key} {value}" for key, value in composition.items())
            lists = f"its list effects assumed, not fitted ({settings})"
            if description["dataset"].startswith("ml-"):
                lists += ": MovieLens logs support almost no list effect"
        line = f"Held-out reward (the headline column) is expected clicks under {judge}; {lists}."
        if self.task.has_simulator("true"):
            line += " True reward: the synthetic world's own user model."
        if description["representations"] == "privileged":
            line += (
                " Agents observe the training simulator's own vectors (the privileged "
                "ablation, not the benchmark)."
            )
        return line

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
        per_request: The per-request values behind ``metrics`` (those of
            :data:`REQUEST_METRICS` the task defines) and the requests.
    """

    metrics: dict[str, float]
    position_clicks: np.ndarray
    lists: np.ndarray
    per_request: RequestValues


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
    return gr2_metrics_of(gr2_request_values(agent, evaluation))


def gr2_request_values(agent: Agent, evaluation: EvaluationSet) -> dict[str, np.ndarray] | None:
    """:func:`gr2_metrics` per GR2 request ``[Q]``, or ``None`` where they are NaN."""
    if evaluation.gr2_task is None or not len(evaluation.gr2_requests):
        return None
    if isinstance(agent, OracleAgent):
        return None  # 30,240 lists per request; it maximises clicks, not the target
    task, requests = evaluation.gr2_task, evaluation.gr2_requests
    try:
        lists = checked_rank(agent, task, requests)
    except UnsupportedTaskError:
        return None  # the agent is tied to the main task's candidate count
    rank = target_ranks(lists, task.pool.gr2_target_pos[requests])
    return {
        "gr2_recall@1": recall_at_k(rank, 1),
        "gr2_recall@5": recall_at_k(rank, 5),
        "gr2_ndcg@5": ndcg_at_k(rank, 5),
    }


def evaluate_agent(
    agent: Agent, evaluation: EvaluationSet, *, batch_size: int = 256
) -> AgentEvaluation:
    """Rank the evaluation requests with ``agent`` and compute every metric.

    The metrics are means over the requests; :attr:`AgentEvaluation.per_request`
    keeps the values they are means of.
    """
    task, requests = evaluation.task, evaluation.requests
    lists, seconds = _timed_rank(agent, task, requests, batch_size)
    clicks = task.click_probs(requests, lists, "eval").cpu().numpy()
    items = np.take_along_axis(task.candidates_np[requests], lists, axis=1)
    values = _test_request_values(evaluation, lists, clicks, items)
    gr2 = gr2_request_values(agent, evaluation)
    reward_eval = values["reward_eval"]
    metrics = {
        "reward_eval": float(reward_eval.mean()),
        "reward_train": float(values["reward_train"].mean()),
        "reward_true": float(values["reward_true"].mean()) if "reward_true" in values else math.nan,
        "pct_beam": float(100 * reward_eval.mean() / evaluation.beam_reward.mean()),
        "pct_oracle": (
            math.nan
            if evaluation.oracle_reward is None
            else float(100 * reward_eval.mean() / evaluation.oracle_reward.mean())
        ),
        "hr@1%": float(values["hr@1%"].mean()),
        "hr@5%": float(values["hr@5%"].mean()),
        **{name: float(np.nanmean(values[name])) for name in ("hit", "ndcg", "precision", "f1")},
        **gr2_metrics_of(gr2),
        "diversity": float(values["diversity"].mean()) if "diversity" in values else math.nan,
        "coverage": coverage(items, task.candidates_np[requests]),
        "latency_ms": 1000 * seconds,
    }
    request_sets = {"test": requests, "gr2": evaluation.gr2_requests}
    per_request = RequestValues({**values, **(gr2 or {})}, request_sets)
    return AgentEvaluation(metrics, clicks.mean(axis=0), lists, per_request)


def gr2_metrics_of(values: dict[str, np.ndarray] | None) -> dict[str, float]:
    """The means of :func:`gr2_request_values`' values (NaN for ``None``)."""
    if values is None:
        return {"gr2_recall@1": math.nan, "gr2_recall@5": math.nan, "gr2_ndcg@5": math.nan}
    return {name: float(per_request.mean()) for name, per_request in values.items()}


def _test_request_values(
    evaluation: EvaluationSet, lists: np.ndarray, clicks: np.ndarray, items: np.ndarray
) -> dict[str, np.ndarray]:
    """The per-request values of ``lists`` on the test requests (:data:`REQUEST_METRICS`)."""
    task, requests = evaluation.task, evaluation.requests
    reward_eval = clicks.sum(axis=1)
    values = {
        "reward_eval": reward_eval,
        "reward_train": task.expected_reward(requests, lists, "train").cpu().numpy(),
    }
    if task.has_simulator("true"):
        values["reward_true"] = task.expected_reward(requests, lists, "true").cpu().numpy()
    # % of a reference: the reference's mean is held fixed (the reference is not an agent)
    values["pct_beam"] = 100 * reward_eval / evaluation.beam_reward.mean()
    if evaluation.oracle_reward is not None:
        values["pct_oracle"] = 100 * reward_eval / evaluation.oracle_reward.mean()
    percentile = permutation_percentile(reward_eval, evaluation.permutation_values)
    values["hr@1%"] = (percentile >= 0.99).astype(np.float64)
    values["hr@5%"] = (percentile >= 0.95).astype(np.float64)
    values |= log_metrics(lists, task.logged_positives(requests))
    if lists.shape[1] > 1:
        values["diversity"] = intra_list_diversity(items, task.pool.item_features)
    return values


def reward_and_latency(agent: Agent, task: RerankTask, requests: np.ndarray) -> dict[str, float]:
    """Held-out and training-simulator reward of ``agent``'s lists, and ms per request.

    The light-weight measurement of the benchmark studies (``evaluate_agent`` gives
    every metric); latency is one batched ``rank`` call over ``requests``. The means
    of :func:`rewards_per_request`.
    """
    values, latency = rewards_per_request(agent, task, requests)
    return {name: float(per_request.mean()) for name, per_request in values.items()} | {
        "latency_ms": latency
    }


def rewards_per_request(
    agent: Agent, task: RerankTask, requests: np.ndarray
) -> tuple[dict[str, np.ndarray], float]:
    """Each judge's expected reward of ``agent``'s list for each request, and ms per request.

    Returns:
        ``reward_eval`` and ``reward_train`` (and ``reward_true`` where the task knows
        its true user model), float ``[requests]`` in the order of ``requests``, and the
        latency of one batched ``rank`` call over ``requests`` in ms per request.
    """
    start = time.perf_counter()
    lists = checked_rank(agent, task, requests)
    latency = (time.perf_counter() - start) * 1000 / len(requests)
    roles = ("eval", "train", "true") if task.has_simulator("true") else ("eval", "train")
    values = {
        f"reward_{role}": task.expected_reward(requests, lists, role).cpu().numpy()
        for role in roles
    }
    return values, latency


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
    rows: list[dict[str, Any]],
    metrics: Sequence[str] | None = None,
    per_request: Mapping[str, Sequence[RequestValues]] | None = None,
    *,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per agent: the mean over seeds of every metric with its 95% interval.

    With ``per_request``, a metric an agent has per-request values of gets the
    two-way bootstrap over seeds and requests
    (:func:`~agents.intervals.hierarchical_interval` on its ``[runs, requests]``
    matrix): the test requests are a sample too. Otherwise (per-run metrics such as
    latency, or callers with per-seed rows only) the interval is a percentile
    bootstrap over the seeds' values, which treats the requests as fixed.

    Args:
        rows: One dict per (agent, seed) with ``"agent"``, ``"seed"`` and metrics.
        metrics: Metrics to summarise (default: :data:`METRICS`).
        per_request: Agent -> the :class:`RequestValues` of its distinct runs, all
            on the same requests (an agent without randomness, run once and counted
            for every seed, has one).
        seed: Seed of the two-way bootstrap.

    Returns:
        One dict per agent (first-seen order): ``agent``, ``seeds`` (rows),
        ``runs`` (the rows the intervals rest on), ``requests`` (test requests in
        its two-way intervals; 0 for a seeds-only interval) and, per metric ``m``,
        ``m``, ``m_low``, ``m_high``. The means are the means of the rows.

    Raises:
        ValueError: ``per_request`` names an agent without rows, or an agent's runs
            were evaluated on different requests.
    """
    agents = list(dict.fromkeys(row["agent"] for row in rows))
    per_request = per_request or {}
    if unknown := sorted(set(per_request) - set(agents)):
        raise ValueError(f"per_request has values of {unknown}, which have no rows: {agents}")
    summary = []
    for agent in agents:
        mine = [row for row in rows if row["agent"] == agent]
        runs = per_request.get(agent) or []
        entry: dict[str, Any] = {
            "agent": agent,
            "seeds": len(mine),
            "runs": len(runs) or len(mine),
            "requests": len(runs[0].requests["test"]) if runs else 0,
        }
        for metric in METRICS if metrics is None else metrics:
            mean, low, high = confidence_interval(np.array([row[metric] for row in mine]))
            matrix = request_matrix(runs, metric, agent) if runs else None
            if matrix is not None:
                interval = hierarchical_interval(matrix, seed=seed)
                low, high = interval.low, interval.high
            entry.update({metric: mean, f"{metric}_low": low, f"{metric}_high": high})
        summary.append(entry)
    return summary


def request_matrix(
    runs: Sequence[RequestValues], metric: str, agent: str = "the agent"
) -> np.ndarray | None:
    """``metric``'s values of ``runs`` as a ``[runs, requests]`` matrix.

    Returns:
        The matrix, or ``None`` where the runs have no per-request values of
        ``metric`` (a per-run metric, or one undefined for this agent).

    Raises:
        ValueError: Some runs have the metric and others not, or the runs were
            evaluated on different requests.
    """
    have = [metric in run.values for run in runs]
    if not any(have):
        return None
    if not all(have):
        raise ValueError(
            f"{sum(have)} of the {len(runs)} runs of {agent!r} have per-request values of "
            f"{metric!r}: evaluate every run of an agent with the same evaluate_agent"
        )
    group = RequestValues.request_set(metric)
    first = runs[0].requests[group]
    for index, run in enumerate(runs[1:], start=1):
        if not np.array_equal(run.requests[group], first):
            raise ValueError(
                f"run {index} of {agent!r} was evaluated on other {group!r} requests than run "
                f"0 ({len(run.requests[group])} vs {len(first)}): a [seeds, requests] interval "
                "needs every run on the same requests; evaluate them on one EvaluationSet"
            )
    return np.stack([np.asarray(run.values[metric], dtype=float) for run in runs])


#: The reference agent of :func:`paired_table` when it is compared (else the first agent).
DEFAULT_REFERENCE = "pointwise-greedy"

#: The metrics of :func:`paired_table`: held-out reward and, where defined, true reward.
PAIRED_METRICS = ("reward_eval", "reward_true")


def reference_agent(agents: Sequence[str], reference: str | None = None) -> str:
    """The agent :func:`paired_table` compares the others with.

    Args:
        agents: The agents' names, in table order.
        reference: The name asked for; ``None``: :data:`DEFAULT_REFERENCE` when it
            is among ``agents``, else the first agent.

    Raises:
        ValueError: ``reference`` is not one of ``agents`` (the message lists them).
    """
    if not agents:
        raise ValueError("no agents: a paired table needs a reference agent and another")
    if reference is None:
        return DEFAULT_REFERENCE if DEFAULT_REFERENCE in agents else agents[0]
    if reference not in agents:
        raise ValueError(
            f"unknown reference agent {reference!r}; valid: {', '.join(map(repr, agents))} "
            "(the agents of this comparison)"
        )
    return reference


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """``P(X > Y)``: a run of X beats a run of Y (ties count half), on one task.

    This is rliable's ``metrics.probability_of_improvement`` for a single task,
    the Mann-Whitney ``U`` of the runs' scores over ``len(x) * len(y)``; it is
    computed here because ``compare`` must run without the optional ``stats`` extra
    that brings rliable, and a single task needs no more than this count
    (``tests/test_compare_stats.py`` checks the two agree). For its stratified
    bootstrap interval see :func:`improvement_probability`, which needs two runs
    of each method.

    Args:
        x: Per-run scores of X ``[runs_x]`` (e.g. each seed's mean reward).
        y: Per-run scores of Y ``[runs_y]``.

    Raises:
        ValueError: An empty or NaN score.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if not len(x) or not len(y) or np.isnan(x).any() or np.isnan(y).any():
        raise ValueError(
            f"probability_of_improvement needs at least one score per method and no NaN, "
            f"got x={x.tolist()} and y={y.tolist()}"
        )
    greater = (x[:, None] > y[None, :]).mean()
    ties = (x[:, None] == y[None, :]).mean()
    return float(greater + 0.5 * ties)


def paired_table(
    per_request: Mapping[str, Sequence[RequestValues]],
    reference: str,
    metrics: Sequence[str] = PAIRED_METRICS,
    *,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Every agent against ``reference`` on the same requests, per metric.

    The difference of means has the paired two-way interval of
    :func:`~agents.intervals.paired_difference` (one request draw for both agents,
    each agent's seeds drawn on their own) and its minimum detectable difference
    at 80% power and a two-sided 5% level; ``p_improvement`` is
    :func:`probability_of_improvement` of the runs' means.

    Args:
        per_request: Agent -> the :class:`RequestValues` of its distinct runs.
        reference: The agent the others are compared with (see :func:`reference_agent`).
        metrics: Metrics compared, where both agents have per-request values of them.
        seed: Seed of the bootstrap.

    Returns:
        One dict per (metric, agent): ``agent``, ``reference``, ``metric``,
        ``difference``, ``low``, ``high``, ``se``, ``mde``, ``power``,
        ``separated`` (the interval excludes 0), ``p_improvement``, ``runs``,
        ``reference_runs``, ``requests``.

    Raises:
        ValueError: ``reference`` has no per-request values, or an agent was
            evaluated on other requests than the reference.
    """
    reference_agent(list(per_request), reference)
    table = []
    for metric in metrics:
        base = request_matrix(per_request[reference], metric, reference)
        if base is None:
            continue
        group = RequestValues.request_set(metric)
        shared = per_request[reference][0].requests[group]
        for agent, runs in per_request.items():
            values = request_matrix(runs, metric, agent) if agent != reference else None
            if values is None:
                continue
            if not np.array_equal(runs[0].requests[group], shared):
                raise ValueError(
                    f"{agent!r} and the reference {reference!r} were evaluated on other "
                    f"{group!r} requests: a paired difference needs both on the same requests"
                )
            difference = paired_difference(values, base, seed=seed)
            table.append(
                {
                    "agent": agent,
                    "reference": reference,
                    "metric": metric,
                    "difference": difference.mean,
                    **{k: getattr(difference, k) for k in ("low", "high", "se", "mde", "power")},
                    "separated": difference.separated,
                    "p_improvement": probability_of_improvement(
                        np.nanmean(values, axis=1), np.nanmean(base, axis=1)
                    ),
                    "runs": values.shape[0],
                    "reference_runs": base.shape[0],
                    "requests": values.shape[1],
                }
            )
    return table


def _cell(entry: dict[str, Any], metric: str) -> str:
    mean, low, high = entry[metric], entry[f"{metric}_low"], entry[f"{metric}_high"]
    if math.isnan(mean):
        return "-"
    digits = 1 if metric in ("pct_beam", "pct_oracle") else 2 if metric == "latency_ms" else 3
    if high - low == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def interval_note(summary: list[dict[str, Any]], shown: Sequence[str] = tuple(METRICS)) -> str:
    """What the intervals of :func:`summarise`'s entries are, for a table's note.

    Args:
        summary: :func:`summarise`'s entries (their ``requests`` says which interval).
        shown: The metrics in the table.
    """
    two_way = [entry["agent"] for entry in summary if entry.get("requests", 0) > 0]
    seeds_only = [entry["agent"] for entry in summary if not entry.get("requests", 0) > 0]
    notes = []
    if two_way:
        per_run = [METRICS.get(m, m) for m in shown if m not in REQUEST_METRICS]
        notes.append(
            f"Mean ± half the width of its interval, a {TWO_WAY_INTERVAL} (the seeds and "
            "the test requests resampled together: Owen's pigeonhole bootstrap, "
            "agents.intervals)"
            + (f"; {', '.join(per_run)}: one value per run, over seeds only" if per_run else "")
            + ". An agent without randomness runs once and counts as one seed (runs column)."
        )
    if seeds_only:
        whom = f" ({', '.join(seeds_only)})" if two_way else ""
        notes.append(
            f"Mean over seeds ± half the width of its interval, a {SEEDS_INTERVAL}{whom}: "
            "without per-request values the test requests are treated as fixed, so "
            "request-sampling error is not counted and with a few seeds such intervals "
            "under-cover."
        )
    return " ".join([*notes, "No ±: the interval is a point."])


def results_markdown(
    summary: list[dict[str, Any]],
    evaluation: EvaluationSet,
    title: str = "Results",
    paired: list[dict[str, Any]] | None = None,
    agreement: Mapping[str, Any] | None = None,
) -> str:
    """A markdown table (mean ± half the 95% interval) with the judge and headroom lines.

    Args:
        summary: :func:`summarise`'s entries.
        evaluation: The evaluation set they were measured on.
        title: The heading.
        paired: :func:`paired_table`'s rows, written as a second table (none: no table).
        agreement: :func:`agreement_entry`'s figure, a line under the table (none: no
            line).
    """
    shown = [m for m in METRICS if any(not math.isnan(entry[m]) for entry in summary)]
    lines = [
        f"# {title}",
        "",
        f"Task: {evaluation.task.summary()}. {len(evaluation.requests)} test requests; "
        f"GR2 protocol: {len(evaluation.gr2_requests)} test requests.",
        "",
        evaluation.judge_line(),
        "",
        evaluation.headroom_line(),
        "",
        interval_note(summary, shown),
        "",
        "| agent | seeds | runs | " + " | ".join(METRICS[m] for m in shown) + " |",
        "|---|---:|---:|" + "---:|" * len(shown),
    ]
    for entry in summary:
        cells = " | ".join(_cell(entry, m) for m in shown)
        runs = entry.get("runs", entry["seeds"])
        lines.append(f"| {entry['agent']} | {entry['seeds']} | {runs} | {cells} |")
    if agreement is not None:
        lines += ["", agreement_line(agreement)]
    text = "\n".join(lines) + "\n"
    return text + ("\n" + paired_markdown(paired) if paired else "")


def agreement_entry(
    per_request: Mapping[str, Sequence[RequestValues]], *, seed: int = 0
) -> dict[str, Any] | None:
    """The agent-ranking agreement of a comparison with a true reward, as a plain dict.

    Kendall's tau between the agents' mean held-out and mean true rewards with its
    two-way bootstrap interval (:func:`~agents.intervals.ranking_agreement`): how far
    the held-out judge ranks the agents as the true user model does.

    Returns:
        ``tau``, ``low``, ``high``, ``agents``, ``requests``, ``resolved_pairs``,
        ``resolved_agreement``; ``None`` where fewer than three agents have
        per-request true rewards (no synthetic world).
    """
    held_out, true = {}, {}
    for agent, runs in per_request.items():
        truth = request_matrix(runs, "reward_true", agent) if runs else None
        if truth is not None:
            held_out[agent] = request_matrix(runs, "reward_eval", agent)
            true[agent] = truth
    if len(true) < 3:
        return None
    return dataclasses.asdict(ranking_agreement(held_out, true, seed=seed))


def agreement_line(agreement: Mapping[str, Any]) -> str:
    """:func:`agreement_entry`'s figure as one sentence."""
    line = (
        f"Agent-ranking agreement (Kendall's tau between the {agreement['agents']} agents' mean "
        f"held-out and mean true rewards): {agreement['tau']:.3f} "
        f"[{agreement['low']:.3f}, {agreement['high']:.3f}], 95% interval over seeds and "
        f"{agreement['requests']} requests."
    )
    resolved = agreement.get("resolved_pairs")
    if resolved:
        agreeing = round(agreement["resolved_agreement"] * resolved)
        line += (
            f" Of the {resolved} pairs of agents the true reward separates (the 95% interval "
            f"of their paired difference excludes 0), the held-out judge orders {agreeing} "
            f"as the truth does ({agreement['resolved_agreement']:.0%})."
        )
    return line


def paired_markdown(paired: list[dict[str, Any]]) -> str:
    """:func:`paired_table`'s rows as a markdown section."""
    reference = paired[0]["reference"]
    lines = [
        f"## Paired differences against {reference}",
        "",
        f"Each agent minus {reference} on the same {paired[0]['requests']} test requests: "
        "the mean difference and its 95% interval (two-way bootstrap, the requests drawn "
        "once for both agents, each agent's seeds on their own), the minimum detectable "
        "difference (MDE) at 80% power and a two-sided 5% level (a true difference smaller "
        "than it could not have been seen by this run), whether the interval excludes 0, "
        f"and P(X > ref), the probability that a run of the agent beats a run of {reference} "
        "(runs' mean rewards; ties count half; rliable's probability of improvement).",
        "",
        "| agent | metric | difference | 95% interval | MDE (80% power) | excludes 0 "
        "| P(X > ref) | runs |",
        "|---|---|---:|---:|---:|:---:|---:|---:|",
    ]
    for row in paired:
        lines.append(
            f"| {row['agent']} | {METRICS.get(row['metric'], row['metric'])} "
            f"| {row['difference']:+.4f} | [{row['low']:+.4f}, {row['high']:+.4f}] "
            f"| {row['mde']:.4f} | {'yes' if row['separated'] else 'no'} "
            f"| {row['p_improvement']:.2f} | {row['runs']} vs {row['reference_runs']} |"
        )
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

    The held-out reward (and the true reward, in the synthetic world) keeps its ±
    (half the 95% interval); the other columns are means (``results.md`` has every
    metric with its interval). Headers take two lines so that the values set the
    widths: with the README's agents the table is 78 columns wide. A ``seeds``
    column is shown only where agents have different seed counts. Agent names are
    never cut.
    """
    columns = dict(COMPACT_COLUMNS)
    if any(not math.isnan(entry.get("reward_true", math.nan)) for entry in summary):
        # The synthetic world: true reward beside held-out, both with their ±.
        columns = {
            "reward_eval": columns.pop("reward_eval"),
            "reward_true": ("true", "reward"),
            **columns,
        }
    if len({entry["seeds"] for entry in summary}) > 1:
        columns = {"seeds": ("", "seeds"), **columns}
    header = [("", "agent"), *columns.values()]
    rows = []
    for entry in summary:
        cells = [str(entry["agent"])]
        for metric in columns:
            value = entry.get(metric, math.nan)
            if metric in ("reward_eval", "reward_true"):
                cells.append(_cell(entry, metric))
            elif value is None or math.isnan(value):
                cells.append("-")
            else:
                digits = {"pct_beam": 1, "latency_ms": 2, "fit_s": 0, "seeds": 0}.get(metric, 3)
                cells.append(f"{value:.{digits}f}")
        rows.append(cells)
    return aligned_table(header, rows)


def compact_paired_table(paired: list[dict[str, Any]]) -> str:
    """:func:`paired_table`'s rows as a plain-text table for a terminal."""
    header = [
        ("", "agent"),
        ("", "metric"),
        ("", "difference"),
        ("95%", "interval"),
        ("MDE", "80%"),
        ("excludes", "0"),
        ("P(X >", "ref)"),
    ]
    names = {"reward_eval": "held-out", "reward_true": "true"}
    rows = [
        [
            str(row["agent"]),
            names.get(row["metric"], row["metric"]),
            f"{row['difference']:+.3f}",
            f"[{row['low']:+.3f}, {row['high']:+.3f}]",
            f"{row['mde']:.3f}",
            "yes" if row["separated"] else "no",
            f"{row['p_improvement']:.2f}",
        ]
        for row in paired
    ]
    return aligned_table(header, rows)


def aligned_table(header: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text columns: two header lines, the first column left-aligned, others right.

    Args:
        header: Each column's two header lines.
        rows: The cells, one list per row.
    """
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
