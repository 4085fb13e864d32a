"""The reranking task behind every environment: requests, simulators, batched scoring.

A :class:`RerankTask` is read-only and shared: the single environment, the native
vector environment and agents all score lists through it, in one batched call.
Lists are given as *candidate positions* (``0 .. N-1`` into a request's candidates,
``-1`` padding the end of a prefix), the same numbers the environments' actions use.

:func:`make_task` builds one from a :class:`~rerank_env.config.TaskConfig` (or its
fields, the keyword arguments the environments accept); the fitted simulators
underneath are loaded once per process (:mod:`simulators.bundle_store`), so making 8
environments or a vector environment of 1,024 builds (and, on first use of a
non-default dataset, trains) once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from rerank_env.config import ColdStartConfig, TaskConfig, check_gr2_slots
from simulators.base import PAD, ClickSimulator, SlateBatch
from simulators.bundle import SIMULATOR_HISTORY, fitted_summary
from simulators.bundle_store import LoadedSource, clear_source_cache, load_source
from simulators.composed import AssumedComposition
from simulators.data.errors import ConfigError
from simulators.data.semantic_id_config import SemanticIdConfig, SemanticIds
from simulators.data.semantic_ids import cached_semantic_ids, semantic_id_features
from simulators.request_pool import RequestPool

SimulatorRole = Literal["train", "eval", "true"]
SPLITS = ("train", "valid", "test")


class RerankTask:
    """Requests of one dataset, the simulators that judge lists, and batched scoring.

    Args:
        pool: The request pool.
        simulators: ``"train"`` (the reward), ``"eval"`` (held-out ensemble member)
            and, in the synthetic world, ``"true"`` (the true user model).
        user_vectors: User vectors ``[U, d]`` the observations carry after the side
            features (the retriever's, or with ``representations="privileged"`` the
            training simulator's).
        item_vectors: Item vectors ``[I, d]``, likewise.
        num_candidates: N: the first N candidates of each request are offered.
        slate_length: L: items to place.
        device: Where simulators run.
        description: What the task was built from (dataset, simulator, bundle, ...).
        config: The :class:`~rerank_env.config.TaskConfig` that rebuilds this task
            (``None`` for a view that no config describes, such as
            :meth:`with_candidate_order`).
        semantic_id_config: Tokenizer settings of :attr:`semantic_ids` (default
            :class:`~simulators.data.semantic_id_config.SemanticIdConfig`).
        stored_semantic_ids: Returns the bundle's saved semantic IDs and their
            manifest entry (or ``None``); used when their kind and config match.
        cold_start: Withhold a seeded share of items from the requests agents learn
            on (:class:`ColdStartConfig`); ``None`` for none.
    """

    def __init__(
        self,
        pool: RequestPool,
        simulators: dict[str, ClickSimulator],
        user_vectors: torch.Tensor,
        item_vectors: torch.Tensor,
        *,
        num_candidates: int,
        slate_length: int,
        device: str | torch.device = "cpu",
        description: dict[str, Any] | None = None,
        config: TaskConfig | None = None,
        semantic_id_config: SemanticIdConfig | None = None,
        stored_semantic_ids: Callable[[], tuple[SemanticIds, dict[str, Any]] | None] | None = None,
        cold_start: ColdStartConfig | None = None,
    ) -> None:
        self.cold_start = cold_start
        self.withheld_items = np.zeros(pool.n_items, dtype=bool)
        if cold_start is not None:
            self.withheld_items = cold_start.withheld(pool.n_items)
            pool = pool.withholding(self.withheld_items, cold_start.splits, seed=cold_start.seed)
            # What agents see of an item nobody learned on is its content alone.
            item_vectors = torch.as_tensor(
                semantic_id_features(
                    pool.item_features, item_vectors.detach().cpu().numpy(), pool.trained_items()
                )[:, pool.item_features.shape[1] :]
            )
        self.pool = pool
        self.semantic_id_config = semantic_id_config or SemanticIdConfig()
        self._stored_semantic_ids = stored_semantic_ids
        self.config = config
        self.num_candidates = num_candidates
        self.slate_length = slate_length
        self.device = torch.device(device)
        self.description = dict(description or {})
        self.simulators = {role: sim.to(self.device).eval() for role, sim in simulators.items()}
        self.users = torch.as_tensor(pool.request_user, device=self.device)
        self.candidates = torch.as_tensor(pool.candidates[:, :num_candidates], device=self.device)
        # The simulators were fitted on the most recent SIMULATOR_HISTORY items.
        every = np.arange(pool.n_requests)
        self.histories = torch.as_tensor(
            pool.history(every, SIMULATOR_HISTORY)[0], device=self.device
        )
        # Observation tables: side features, then the retriever's (or privileged) vectors.
        self.user_table = np.concatenate(
            [pool.user_features, user_vectors.detach().cpu().numpy()], axis=1
        ).astype(np.float32)
        self.item_table = np.concatenate(
            [pool.item_features, item_vectors.detach().cpu().numpy()], axis=1
        ).astype(np.float32)
        self.candidates_np = np.ascontiguousarray(pool.candidates[:, :num_candidates])
        self.scores_np = np.ascontiguousarray(pool.candidate_scores[:, :num_candidates])
        self._split_requests = {split: pool.split_indices(split) for split in SPLITS}
        for array in (
            self.user_table,
            self.item_table,
            self.candidates_np,
            self.scores_np,
            self.withheld_items,
            *self._split_requests.values(),
        ):
            array.flags.writeable = False  # shared by every environment of the task

    @property
    def n_requests(self) -> int:
        """Requests in the pool (all splits)."""
        return self.pool.n_requests

    @functools.cached_property
    def tokenizer(self) -> SemanticIds:
        """Every item's semantic ID under :attr:`semantic_id_config` (fitted on first use).

        The input is the item side features next to this task's observation item
        vectors (the retriever's, or the simulator's with
        ``representations="privileged"``); the tokenizer is fitted on items with
        training interactions only
        (:meth:`~simulators.request_pool.RequestPool.semantic_id_inputs`). The bundle's
        saved IDs are used when they were fitted on the same vectors with this
        config; otherwise they are fitted once and kept in the user cache.
        In cold start (:class:`ColdStartConfig`) withheld items are not fitted on
        and get their codes from content alone.
        """
        stored = self._stored_semantic_ids() if self._stored_semantic_ids else None
        if stored is not None and self.cold_start is None:
            ids, entry = stored
            if entry["kind"] == _vector_source(self.description) and (
                ids.config == self.semantic_id_config
            ):
                return _read_only(ids)
        content = self.pool.item_features.shape[1]
        features, fit_rows = self.pool.semantic_id_inputs(
            self.item_table[:, content:], withheld=self.withheld_items
        )
        ids = cached_semantic_ids(
            features, fit_rows, self.semantic_id_config, genres=self.pool.genres()
        )
        return _read_only(ids)

    @property
    def semantic_ids(self) -> np.ndarray:
        """Every item's semantic ID, int64 ``[items, levels]`` (read-only; codes per level).

        ``task.tokenizer.tokens`` gives them as global token ids (level offsets
        added), ``task.tokenizer.vocab_size`` the vocabulary.
        """
        return self.tokenizer.codes

    def requests(self, split: str) -> np.ndarray:
        """Indices of the requests of ``split`` (splits never mix)."""
        if split not in self._split_requests:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self._split_requests[split]

    def sample_requests(self, split: str, size: int, generator: np.random.Generator) -> np.ndarray:
        """``size`` requests of ``split`` drawn uniformly (with replacement)."""
        pool = self.requests(split)
        return pool[generator.integers(0, len(pool), size=size)]

    def logged_positives(self, requests: Any) -> np.ndarray:
        """Which candidates the request's logged slate shows clicked, bool ``[B, N]``.

        The labels of log-based metrics (H@L, NDCG@L, ...) and of rerankers trained
        on logs (PRM). Candidates the logs never showed count as not positive.
        """
        requests = np.asarray(requests, dtype=np.int64)
        clicked = np.where(self.pool.logged_clicks[requests], self.pool.logged_items[requests], PAD)
        candidates = self.candidates_np[requests]
        return (candidates[:, :, None] == clicked[:, None, :]).any(axis=2)

    def gr2_task(self, slate_length: int = 5) -> RerankTask:
        """The GR2 protocol as a task over the same users, items and simulators.

        Each request is a GR2 request: its ``K`` pre-ranked candidates (``K = 10``
        by default) hold the held-out next item at ``gr2_target_pos``; an agent's
        list of ``slate_length`` candidates is judged by Recall@1/5 and NDCG@5 of
        that item. The candidates' initial scores are their pre-ranked order.
        Request ``q`` of the returned task is GR2 request ``q`` (its split is the
        underlying request's).
        """
        pool = self.pool
        rows = pool.gr2_request
        queries, k = pool.gr2_candidates.shape
        view = dataclasses.replace(
            pool,
            request_user=pool.request_user[rows],
            request_split=pool.request_split[rows],
            candidates=pool.gr2_candidates,
            candidate_scores=np.broadcast_to(
                np.arange(k, 0, -1, dtype=np.float32), (queries, k)
            ).copy(),
            histories=pool.histories[rows],
            history_lengths=pool.history_lengths[rows],
            logged_items=pool.logged_items[rows],
            logged_clicks=pool.logged_clicks[rows],
            gr2_request=np.arange(queries, dtype=np.int64),
        )
        return self._view(
            view,
            num_candidates=k,
            slate_length=min(slate_length, k),
            description={**self.description, "protocol": "gr2"},
        )

    def _view(
        self, pool: RequestPool, *, num_candidates: int, slate_length: int, description: dict
    ) -> RerankTask:
        """A task over ``pool`` (these requests rearranged) sharing this task's parts.

        Simulators, feature tables and semantic IDs are this task's (cold start
        already applied to ``pool``).
        """
        user_features, item_features = pool.user_features.shape[1], pool.item_features.shape[1]
        view = RerankTask(
            pool,
            self.simulators,
            torch.tensor(self.user_table[:, user_features:]),
            torch.tensor(self.item_table[:, item_features:]),
            num_candidates=num_candidates,
            slate_length=slate_length,
            device=self.device,
            description=description,
            semantic_id_config=self.semantic_id_config,
            stored_semantic_ids=self._stored_semantic_ids,
        )
        view.cold_start, view.withheld_items = self.cold_start, self.withheld_items
        if "tokenizer" in self.__dict__:  # already fitted: share it
            view.__dict__["tokenizer"] = self.tokenizer
        return view

    def with_candidate_order(self, order: np.ndarray) -> RerankTask:
        """The same task with each request's N candidates in another order.

        Each candidate keeps its initial score; only the order in which they are
        offered changes (``candidates[r] = self.candidates[r][order[r]]``). Lists of
        the returned task index the reordered candidates. Use it to measure how much
        an agent depends on the order of its input list.

        Args:
            order: int ``[R, N]``, a permutation of ``0 .. N-1`` per request.

        Raises:
            ValueError: ``order`` is not ``[R, N]`` permutations.
        """
        order = np.asarray(order)
        shape = (self.n_requests, self.num_candidates)
        if order.shape != shape or not np.issubdtype(order.dtype, np.integer):
            raise ValueError(
                f"order must be an integer array {shape} (a permutation of the N candidate "
                f"positions per request), got {order.dtype} {order.shape}"
            )
        if not (np.sort(order, axis=1) == np.arange(self.num_candidates)).all():
            raise ValueError(
                f"every row of order must be a permutation of 0..{self.num_candidates - 1}"
            )
        pool = dataclasses.replace(
            self.pool,
            candidates=np.take_along_axis(self.candidates_np, order, axis=1),
            candidate_scores=np.take_along_axis(self.scores_np, order, axis=1),
        )
        return self._view(
            pool,
            num_candidates=self.num_candidates,
            slate_length=self.slate_length,
            description={**self.description, "candidate_order": "reordered"},
        )

    def cold_start_requests(self, split: str = "test") -> np.ndarray:
        """Requests of ``split`` whose candidates hold a withheld item (none without cold start)."""
        requests = self.requests(split)
        return requests[self.withheld_items[self.candidates_np[requests]].any(axis=1)]

    def has_simulator(self, role: str) -> bool:
        """Whether ``role`` (``"train"``, ``"eval"``, ``"true"``) exists for this task."""
        return role in self.simulators

    def slate_batch(self, requests: Any, lists: Any) -> SlateBatch:
        """The :class:`SlateBatch` of ``lists`` (candidate positions, ``-1`` padded).

        Raises:
            ValueError: Shapes disagree or a position is outside ``[-1, N)``.
        """
        # Copies: callers may pass the task's read-only arrays (or tensors on any device).
        requests = _long_tensor(requests, self.device)
        lists = _long_tensor(lists, self.device)
        if requests.ndim != 1 or ((requests < 0) | (requests >= self.n_requests)).any():
            raise ValueError(
                f"requests must be a 1-D array of request indices in 0..{self.n_requests - 1}; "
                f"got {requests.tolist() if requests.numel() <= 10 else tuple(requests.shape)}"
            )
        if lists.ndim != 2 or requests.shape != lists.shape[:1]:
            raise ValueError(
                f"lists must be [B, K] candidate positions for B requests; got requests "
                f"{tuple(requests.shape)} and lists {tuple(lists.shape)}"
            )
        if lists.shape[1] > self.slate_length:
            raise ValueError(
                f"lists have {lists.shape[1]} positions; this task places at most "
                f"L = {self.slate_length}"
            )
        bad = (lists < PAD) | (lists >= self.num_candidates)
        if bad.any():
            row = int(bad.any(dim=1).nonzero()[0])
            raise ValueError(
                f"list {row} = {lists[row].tolist()} holds a position outside the N = "
                f"{self.num_candidates} candidates (valid: 0..{self.num_candidates - 1}, -1 pads)"
            )
        items = torch.gather(self.candidates[requests], 1, lists.clamp(min=0))
        items = torch.where(lists == PAD, PAD, items)
        return SlateBatch(self.users[requests], items, self.histories[requests])

    def _simulator(self, role: str) -> ClickSimulator:
        if role not in self.simulators:
            raise ValueError(
                f"no {role!r} simulator in this task; it has {sorted(self.simulators)} "
                "('true' exists only for dataset='synthetic')"
            )
        return self.simulators[role]

    @torch.no_grad()
    def click_probs(
        self, requests: Any, lists: Any, simulator: SimulatorRole = "train"
    ) -> torch.Tensor:
        """Per-position click probabilities ``[B, K]`` (0 at padding)."""
        return self._simulator(simulator).click_probs(self.slate_batch(requests, lists))

    @torch.no_grad()
    def expected_reward(
        self, requests: Any, lists: Any, simulator: SimulatorRole = "train"
    ) -> torch.Tensor:
        """Expected clicks of each full or partial list, ``[B]``."""
        return self.click_probs(requests, lists, simulator).sum(dim=1)

    @torch.no_grad()
    def prefix_values(
        self, requests: Any, lists: Any, simulator: SimulatorRole = "train"
    ) -> torch.Tensor:
        """Expected clicks of every prefix, ``[B, K]`` (dense rewards are the differences)."""
        return self.click_probs(requests, lists, simulator).cumsum(dim=1)

    def summary(self) -> str:
        """One line: what this task is."""
        d = self.description
        return (
            f"{d.get('dataset')} / {d.get('simulator')} simulator / N = {self.num_candidates}, "
            f"L = {self.slate_length} / {self.n_requests} requests "
            f"({', '.join(f'{s} {len(self.requests(s))}' for s in SPLITS)}"
            + (f", judge's logs {reserved}" if (reserved := len(self.pool.reserved)) else "")
            + ")"
        )


def _vector_source(description: dict[str, Any]) -> str | None:
    """Whose item vectors a task's observations carry: ``"retriever"`` or a simulator kind."""
    if description.get("representations") == "privileged":
        return description.get("simulator")
    return description.get("representations")


def _read_only(ids: SemanticIds) -> SemanticIds:
    """``ids`` with its code arrays made read-only (a task's are shared)."""
    for array in (ids.codes, ids.raw_codes):
        array.flags.writeable = False
    return ids


def _long_tensor(values: Any, device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.long, copy=True)
    return torch.tensor(np.asarray(values), dtype=torch.long, device=device)


def make_task(
    config: TaskConfig | None = None, /, *, progress: bool = True, **fields: Any
) -> RerankTask:
    """Build the task ``config`` (or ``TaskConfig(**fields)``) describes.

    ``make_task(config, num_candidates=20)`` changes fields of ``config``. The
    fitted ensembles are loaded once per process and shared, frozen; each call
    makes a fresh task and fresh composition wrappers.

    Args:
        config: The task's options (default ``TaskConfig()``).
        progress: Progress bars while building.
        **fields: :class:`~rerank_env.config.TaskConfig` fields (on top of ``config``).

    Raises:
        ConfigError: An invalid value, with what was expected and how to fix it.
        simulators.data.DataNotFoundError: ``data_dir`` or the raw files are missing.
    """
    config = config or TaskConfig()
    if fields:
        config = config.replace(**fields)
    source = load_source(config.bundle_source(), progress=progress)
    bundle = source.bundle
    train, held_out = bundle.simulators(config.simulator, composition=config.resolved_composition())
    simulators = {"train": train, "eval": held_out}
    if source.true_simulator is not None:
        simulators["true"] = source.true_simulator
    user_vectors, item_vectors = observation_vectors(source, config)
    judge_requests = bundle.judge_requests()
    task = RerankTask(
        # The held-out judge's logs are in no split: no agent trains on its judge's data.
        bundle.pool.reserve(judge_requests),
        simulators,
        user_vectors,
        item_vectors,
        num_candidates=config.num_candidates,
        slate_length=config.slate_length,
        device=config.device,
        description=_description(config, source, judge_logs=len(judge_requests)),
        config=config,
        semantic_id_config=config.semantic_ids,
        stored_semantic_ids=bundle.stored_semantic_ids,
        cold_start=config.cold_start,
    )
    if config.protocol == "rerank":
        return task
    if not len(task.pool.gr2_request):
        raise ConfigError(
            f"protocol='gr2' needs GR2 requests, and this {config.dataset} task has none (the "
            "pipeline keeps a request only if its pre-ranked top K holds the next item)"
        )
    check_gr2_slots(config.slate_length, task.pool.gr2_candidates.shape[1])
    view = task.gr2_task(config.slate_length)
    view.config = config
    return view


def observation_vectors(
    source: LoadedSource, config: TaskConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(user [U, d], item [I, d])`` vectors the observations carry after side features.

    ``representations="retriever"``: the upstream retriever's own vectors (ALS user
    and item factors, fitted on training interactions apart from every simulator).
    ``"privileged"``: the training simulator's first member's learned vectors, whose
    dot product is its attractiveness logit (an ablation).
    """
    if config.representations == "privileged":
        return source.bundle.representations(config.simulator)
    pool = source.bundle.pool
    return (
        torch.as_tensor(pool.retriever_user_factors),
        torch.as_tensor(pool.retriever_item_factors),
    )


def _description(config: TaskConfig, source: LoadedSource, *, judge_logs: int) -> dict[str, Any]:
    """What a task was built from, as plain values (recorded beside results).

    ``judge_logs`` is the number of requests reserved for the held-out judge.
    """
    bundle = source.bundle
    composition = config.resolved_composition()
    if isinstance(composition, AssumedComposition):
        composition = dataclasses.asdict(bundle.assumed_composition(composition))
    return {
        "dataset": config.dataset,
        "simulator": config.simulator,
        "bundle": str(bundle.path),
        "embedded_bundle": source.embedded,
        "composition": composition,
        "fitted_composition": (
            fitted_summary(bundle.fitted_composition(config.simulator))
            if composition == "fitted"
            else None
        ),
        "held_out": bundle.manifest["bundle_config"].get("held_out", "seed"),
        "judge_logs": judge_logs,
        "representations": config.representations,
        "weight_decay_per_epoch": bundle.manifest["bundle_config"].get("weight_decay_per_epoch"),
        "data_checksum": bundle.manifest["data_checksum"],
        "cold_start": None if config.cold_start is None else dataclasses.asdict(config.cold_start),
    }


def clear_task_cache() -> None:
    """Forget the bundles and simulators this process has loaded for tasks."""
    clear_source_cache()


__all__ = ["SPLITS", "RerankTask", "clear_task_cache", "make_task", "observation_vectors"]
