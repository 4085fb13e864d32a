"""The reranking task behind every environment: requests, simulators, batched scoring.

A :class:`RerankTask` is read-only and shared: the single environment, the native
vector environment and agents all score lists through it, in one batched call.
Lists are given as *candidate positions* (``0 .. N-1`` into a request's candidates,
``-1`` padding the end of a prefix), the same numbers the environments' actions use.

:func:`make_task` builds one from the keyword arguments the environments accept and
caches it per process, so making 8 environments or a vector environment of 1,024
builds (and, on first use of a non-default dataset, trains) once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from simulators.base import PAD, ClickSimulator, SlateBatch
from simulators.bundle import (
    BUNDLE_FORMAT_VERSION,
    DEFAULT_BUNDLE_DIR,
    HELD_OUT_SPLITS,
    SIMULATOR_HISTORY,
    BundleConfig,
    RequestPool,
    SimulatorBundle,
    build_bundle,
    check_composition,
    fitted_summary,
    load_bundle,
)
from simulators.checkpoint import CHECKPOINT_FORMAT_VERSION, CheckpointError
from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.datasets import DATASETS, data_checksum
from simulators.data.errors import ConfigError
from simulators.data.paths import cache_dir, download_hint
from simulators.data.pipeline import PIPELINE_VERSION
from simulators.data.semantic_ids import (
    SemanticIdConfig,
    SemanticIds,
    cached_semantic_ids,
    semantic_id_features,
)
from simulators.data.synthetic_config import SyntheticConfig
from simulators.factory import MODEL_KINDS

SimulatorKind = Literal["transformer", "pbm", "dcm", "cascade", "pointwise"]
SimulatorRole = Literal["train", "eval", "true"]
SPLITS = ("train", "valid", "test")
#: What a request offers: the first N of the initial ranking, or the GR2 protocol's K.
PROTOCOLS = ("rerank", "gr2")


@dataclass(frozen=True)
class ColdStartConfig:
    """Cold start: a seeded share of items that agents never learn on.

    The withheld items are removed from every request of ``splits`` (candidates,
    histories, logged slates; see :meth:`~simulators.bundle.RequestPool.withholding`),
    from the semantic-ID tokenizer's fit and from the agents' feature table (their
    learned vectors are replaced by a ridge prediction from content, as for any item
    without training interactions). The simulators, fitted beforehand on every
    item, still score them, and test requests still hold them.

    Attributes:
        fraction: Share of the items withheld, in ``(0, 0.5]``.
        seed: Chooses the items and the candidates that replace them.
        splits: Splits whose requests never hold a withheld item (test must not
            be one: it is where cold start is measured).
    """

    fraction: float = 0.1
    seed: int = 0
    splits: tuple[str, ...] = ("train", "valid")

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not 0.0 < float(self.fraction) <= 0.5:
            raise ConfigError(
                f"ColdStartConfig.fraction must be in (0, 0.5], got {self.fraction!r}; "
                "it is the share of items withheld from training"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ConfigError(f"ColdStartConfig.seed must be an integer, got {self.seed!r}")
        splits = tuple(self.splits)
        if not splits or "test" in splits or not set(splits) <= {"train", "valid"}:
            raise ConfigError(
                f"ColdStartConfig.splits must be a non-empty subset of ('train', 'valid'), "
                f"got {self.splits!r}; test requests keep the withheld items"
            )
        object.__setattr__(self, "splits", splits)

    def withheld(self, n_items: int) -> np.ndarray:
        """Bool ``[n_items]``: the withheld items (``round(fraction * n_items)``, at least 1)."""
        count = max(1, round(self.fraction * n_items))
        chosen = np.random.default_rng(self.seed).choice(n_items, size=count, replace=False)
        mask = np.zeros(n_items, dtype=bool)
        mask[chosen] = True
        return mask


class RerankTask:
    """Requests of one dataset, the simulators that judge lists, and batched scoring.

    Args:
        pool: The request pool.
        simulators: ``"train"`` (the reward), ``"eval"`` (held-out ensemble member)
            and, in the synthetic world, ``"true"`` (the true user model).
        user_vectors: Learned user representations ``[U, d]`` (observation features).
        item_vectors: Learned item representations ``[I, d]``.
        num_candidates: N: the first N candidates of each request are offered.
        slate_length: L: items to place.
        device: Where simulators run.
        description: What the task was built from (dataset, simulator, bundle, ...).
        make_kwargs: The :func:`make_task` keyword arguments that rebuild this task
            (environments over the same requests and simulators use them).
        semantic_id_config: Tokenizer settings of :attr:`semantic_ids` (default
            :class:`~simulators.data.semantic_ids.SemanticIdConfig`).
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
        make_kwargs: dict[str, Any] | None = None,
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
        self.make_kwargs = dict(make_kwargs or {})
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
        # Observation tables: side features then learned vectors.
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

        The input is the item side features next to this task's learned item
        vectors; the tokenizer is fitted on items with training interactions only
        (:meth:`~simulators.bundle.RequestPool.semantic_id_inputs`). The bundle's
        saved IDs are used when they were fitted on this simulator's vectors with
        this config; otherwise they are fitted once and kept in the user cache.
        In cold start (:class:`ColdStartConfig`) withheld items are not fitted on
        and get their codes from content alone.
        """
        stored = self._stored_semantic_ids() if self._stored_semantic_ids else None
        if stored is not None and self.cold_start is None:
            ids, entry = stored
            if entry["kind"] == self.description.get("simulator") and (
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
            make_kwargs=None,
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
            f"({', '.join(f'{s} {len(self.requests(s))}' for s in SPLITS)})"
        )


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
    *,
    dataset: str = "ml-100k",
    data_dir: str | os.PathLike[str] | None = None,
    bundle: str | os.PathLike[str] | None = None,
    simulator: str = "transformer",
    num_candidates: int = 50,
    slate_length: int = 6,
    composed: bool = True,
    position_bias: float | None = None,
    diversity_strength: float | None = None,
    composition: str = "assumed",
    held_out: str = "seed",
    weight_decay_per_epoch: float | None = None,
    pipeline: PipelineConfig | None = None,
    synthetic: SyntheticConfig | None = None,
    semantic_ids: SemanticIdConfig | None = None,
    cold_start: ColdStartConfig | None = None,
    protocol: str = "rerank",
    device: str = "cpu",
    progress: bool = True,
) -> RerankTask:
    """Build the task the keyword arguments name (its simulators are loaded once per process).

    Where the simulators come from:

    * ``bundle=PATH``: that bundle folder (``rerank-env simulator bundle``);
    * ``dataset="ml-100k"`` with ``slate_length <= 6``, ``num_candidates <= 50``, a
      simulator kind the embedded bundle has, no ``data_dir`` or ``pipeline``: the
      embedded bundle (no raw data needed);
    * otherwise the raw data is processed and a bundle with the chosen simulator is
      fitted on first use and cached (``$RERANK_ENV_CACHE/bundles``).

    Args:
        dataset: ``"ml-100k"``, ``"synthetic"``, or another MovieLens release
            (``"ml-1m"``, ``"ml-10m"``, ``"ml-20m"``, ``"ml-25m"``, ``"ml-32m"``,
            ``"ml-latest"``, ``"ml-latest-small"``; these need ``data_dir``).
        data_dir: Folder of the raw files.
        bundle: A bundle folder to use instead.
        simulator: ``"transformer"`` (context-aware), ``"pbm"``, ``"dcm"``,
            ``"cascade"`` or ``"pointwise"``.
        num_candidates: N, candidates offered per request (the first N of the
            initial ranking).
        slate_length: L, items placed per episode.
        composed: Compose the learned simulator with examination and diminishing
            returns (see ``simulators.composed``).
        position_bias: Examination exponent (``None``: the bundle's default, 1).
        diversity_strength: Diminishing-returns strength (``None``: the default, 2).
        composition: ``"assumed"`` (default: the examination exponent and strength
            above, set by hand) or ``"fitted"``: both simulators' examination,
            redundancy strength and complementarity fitted on the training logs on
            top of each ensemble member (``SimulatorBundle.fitted_composition``;
            fitted on first use and cached). The task's ``description`` records
            the fitted values and their spread over the members.
        held_out: How the held-out evaluation simulator is kept apart from the
            training one: ``"seed"`` (default: the same logs, another seed),
            ``"sessions"`` (fitted on the other half of every user's sessions) or
            ``"users"`` (on the other half of the users); not ``"seed"`` needs a
            bundle fitted that way, so the embedded bundle is not used (the raw
            data is). See ``BundleConfig.held_out``.
        weight_decay_per_epoch: Fit the task's simulators with AdamW's decoupled
            weight decay of this much per pass over the logs
            (``BundleConfig.weight_decay_per_epoch``; 50 is the measured best in
            the synthetic world) instead of the bundles' Adam L2 (``None``,
            default); not ``None`` fits a bundle, so the embedded one is not used.
        pipeline: Data pipeline settings for a non-embedded dataset (default:
            ``PipelineConfig(num_candidates=max(N, 50), slate_length=L)``).
        synthetic: The synthetic world (default ``SyntheticConfig(slate_length=L)``).
        semantic_ids: Tokenizer settings of ``task.semantic_ids`` (default
            ``SemanticIdConfig()``: RQ-KMeans, 3 levels of 64 codes).
        cold_start: Withhold a seeded share of items from the training (and
            validation) requests, the tokenizer's fit and the agents' features
            (:class:`ColdStartConfig`); ``None`` (default) withholds nothing.
        protocol: ``"rerank"`` (default): each request offers the first N of the
            initial ranking. ``"gr2"``: the GR2 protocol, :meth:`RerankTask.gr2_task`
            of that task with ``slate_length`` slots: each request offers the
            pre-ranker's K candidates (the pipeline's ``gr2_candidates``, 10), one
            of which is the user's true next item (``pool.gr2_target_pos``).
        device: Where simulators run (``"cpu"``, ``"cuda"``).
        progress: Progress bars while building.

    Raises:
        ConfigError: An invalid value, with what was expected and how to fix it.
        simulators.data.DataNotFoundError: ``data_dir`` or the raw files are missing.
    """
    _check_arguments(dataset, simulator, num_candidates, slate_length, data_dir, bundle)
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"protocol must be one of {PROTOCOLS}, got {protocol!r} ('gr2': K pre-ranked "
            "candidates holding the true next item)"
        )
    if protocol == "gr2" and bundle is None:  # refuse before building anything
        _check_gr2_slots(slate_length, (pipeline or PipelineConfig()).gr2_candidates)
    if dataset == "synthetic":
        synthetic = synthetic or SyntheticConfig(slate_length=slate_length)
        if synthetic.slate_length != slate_length:
            raise ConfigError(
                f"slate_length={slate_length} but the synthetic world logs sessions of "
                f"{synthetic.slate_length}; pass SyntheticConfig(slate_length={slate_length})"
            )
    elif synthetic is not None:
        raise ConfigError(f"synthetic=... only applies to dataset='synthetic', not {dataset!r}")
    if semantic_ids is not None and not isinstance(semantic_ids, SemanticIdConfig):
        raise ConfigError(
            f"semantic_ids must be a SemanticIdConfig (simulators.data.semantic_ids) or None, "
            f"got {semantic_ids!r}"
        )
    if cold_start is not None and not isinstance(cold_start, ColdStartConfig):
        raise ConfigError(
            f"cold_start must be a ColdStartConfig (rerank_env.task) or None, got {cold_start!r}"
        )
    if held_out not in HELD_OUT_SPLITS:
        raise ConfigError(
            f"held_out must be one of {HELD_OUT_SPLITS}, got {held_out!r} ('sessions': the "
            "held-out simulator fitted on the other half of every user's sessions)"
        )
    if weight_decay_per_epoch is not None and (
        bundle is not None or not weight_decay_per_epoch >= 0
    ):
        raise ConfigError(
            f"weight_decay_per_epoch={weight_decay_per_epoch!r} fits a bundle with that "
            "decay: it must be >= 0 and cannot go with bundle=... (already fitted)"
        )
    if held_out != "seed" and bundle is not None:
        raise ConfigError(
            f"held_out={held_out!r} fits a bundle that way; bundle=... is already fitted "
            "(its manifest's bundle_config says how): drop one of them"
        )
    check_composition(composition, composed, position_bias, diversity_strength)
    if not composed and (position_bias is not None or diversity_strength is not None):
        raise ConfigError(
            "position_bias and diversity_strength compose the simulator; with composed=False "
            "they would be ignored: drop them or set composed=True"
        )
    source = _Source(
        dataset,
        None if data_dir is None else str(Path(data_dir).resolve()),
        None if bundle is None else str(Path(bundle).resolve()),
        simulator,
        num_candidates,
        slate_length,
        pipeline,
        synthetic,
        str(device),
        held_out,
        weight_decay_per_epoch,
    )
    bundle_loaded, true_simulator, embedded = _sources(source, progress=progress)
    # A fresh task (and fresh composition wrappers) per call; the fitted ensembles
    # underneath are shared by every task of this process and stay frozen.
    train, held_out_simulator = bundle_loaded.simulators(
        simulator,
        composed=composed,
        position_bias=position_bias,
        diversity_strength=diversity_strength,
        composition=composition,
    )
    simulators = {"train": train, "eval": held_out_simulator}
    if true_simulator is not None:
        simulators["true"] = true_simulator
    user_vectors, item_vectors = bundle_loaded.representations(simulator)
    defaults = bundle_loaded.manifest["bundle_config"]
    description = {
        "dataset": dataset,
        "simulator": simulator,
        "bundle": str(bundle_loaded.path),
        "embedded_bundle": embedded,
        "composed": composed,
        "position_bias": (
            None
            if not composed
            else defaults["position_bias"]
            if position_bias is None
            else position_bias
        ),
        "diversity_strength": (
            None
            if not composed
            else defaults["diversity_strength"]
            if diversity_strength is None
            else diversity_strength
        ),
        "held_out": bundle_loaded.manifest["bundle_config"].get("held_out", "seed"),
        "weight_decay_per_epoch": bundle_loaded.manifest["bundle_config"].get(
            "weight_decay_per_epoch"
        ),
        "composition": composition if composed else None,
        "fitted_composition": (
            fitted_summary(bundle_loaded.fitted_composition(simulator))
            if composed and composition == "fitted"
            else None
        ),
        "data_checksum": bundle_loaded.manifest["data_checksum"],
        "cold_start": None if cold_start is None else dataclasses.asdict(cold_start),
    }
    task = RerankTask(
        bundle_loaded.pool,
        simulators,
        user_vectors,
        item_vectors,
        num_candidates=num_candidates,
        slate_length=slate_length,
        device=device,
        description=description,
        semantic_id_config=semantic_ids,
        stored_semantic_ids=bundle_loaded.stored_semantic_ids,
        cold_start=cold_start,
        make_kwargs={
            "dataset": dataset,
            "data_dir": source.data_dir,  # resolved: the working directory may change
            "bundle": source.bundle_dir,
            "simulator": simulator,
            "num_candidates": num_candidates,
            "slate_length": slate_length,
            "composed": composed,
            "position_bias": position_bias,
            "diversity_strength": diversity_strength,
            "composition": composition,
            "held_out": held_out,
            "weight_decay_per_epoch": weight_decay_per_epoch,
            "pipeline": pipeline,
            "synthetic": synthetic,
            "semantic_ids": semantic_ids,
            "cold_start": cold_start,
            "device": device,
        },  # fmt: skip
    )
    if protocol == "rerank":
        return task
    k = task.pool.gr2_candidates.shape[1]
    if not len(task.pool.gr2_request):
        raise ConfigError(
            f"protocol='gr2' needs GR2 requests, and this {dataset} task has none (the "
            "pipeline keeps a request only if its pre-ranked top K holds the next item)"
        )
    _check_gr2_slots(slate_length, k)
    view = task.gr2_task(slate_length)
    view.make_kwargs = {**task.make_kwargs, "protocol": "gr2"}
    return view


def _check_gr2_slots(slate_length: int, k: int) -> None:
    if slate_length > k:
        raise ConfigError(
            f"protocol='gr2' offers K = {k} candidates per request: slate_length must be "
            f"<= {k}, got {slate_length}"
        )


def _check_arguments(
    dataset: str,
    simulator: str,
    num_candidates: int,
    slate_length: int,
    data_dir: Any,
    bundle: Any,
) -> None:
    if dataset not in DATASETS:
        raise ConfigError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if simulator == "dbn":
        raise ConfigError(
            "simulator='dbn' is not implemented; use 'dcm' (the dependent click model, "
            "fitted by exact likelihood) or 'cascade'"
        )
    if simulator not in MODEL_KINDS:
        raise ConfigError(f"simulator must be one of {MODEL_KINDS}, got {simulator!r}")
    for name, value in (("num_candidates", num_candidates), ("slate_length", slate_length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if num_candidates < slate_length:
        raise ConfigError(
            f"num_candidates (N = {num_candidates}) must be >= slate_length (L = "
            f"{slate_length}): a list of L distinct items needs at least L candidates"
        )
    if dataset not in ("ml-100k", "synthetic") and data_dir is None and bundle is None:
        raise ConfigError(
            f"dataset={dataset!r} needs data_dir=PATH, the folder holding its files. "
            f"{download_hint(dataset)}"
        )
    if data_dir is not None and not Path(data_dir).exists():
        raise ConfigError(f"data_dir {str(data_dir)!r} does not exist; pass the dataset folder")


_SOURCES: dict[_Source, tuple[SimulatorBundle, ClickSimulator | None, bool]] = {}
_MAX_SOURCES = 8


def clear_task_cache() -> None:
    """Forget the bundles and simulators this process has loaded for tasks."""
    _SOURCES.clear()


@dataclass(frozen=True)
class _Source:
    """What decides which bundle (and true simulator) a task is built from."""

    dataset: str
    data_dir: str | None
    bundle_dir: str | None
    simulator: str
    num_candidates: int
    slate_length: int
    pipeline: PipelineConfig | None
    synthetic: SyntheticConfig | None
    device: str
    held_out: str = "seed"
    weight_decay_per_epoch: float | None = None


def _sources(
    source: _Source, *, progress: bool
) -> tuple[SimulatorBundle, ClickSimulator | None, bool]:
    """``(bundle, true simulator or None, embedded?)``, loaded once per process."""
    if source not in _SOURCES:
        loaded, true_simulator, embedded = _load_sources(source, progress)
        _check_bundle_fits(loaded, source.simulator, source.num_candidates, source.slate_length)
        for model in (*loaded.ensembles.values(), true_simulator):
            if model is not None:  # shared and inference-only: frozen, in eval mode
                model.to(source.device).eval().requires_grad_(False)
        if len(_SOURCES) >= _MAX_SOURCES:
            _SOURCES.pop(next(iter(_SOURCES)))
        _SOURCES[source] = (loaded, true_simulator, embedded)
    return _SOURCES[source]


def _load_sources(
    source: _Source, progress: bool
) -> tuple[SimulatorBundle, ClickSimulator | None, bool]:
    dataset, data_dir, bundle_dir = source.dataset, source.data_dir, source.bundle_dir
    simulator, pipeline, synthetic = source.simulator, source.pipeline, source.synthetic
    num_candidates, slate_length = source.num_candidates, source.slate_length
    if bundle_dir is not None:
        loaded = load_bundle(bundle_dir)
        if loaded.manifest["dataset"] != dataset:
            raise ConfigError(
                f"bundle {bundle_dir} was built from {loaded.manifest['dataset']!r}, but "
                f"dataset={dataset!r}; pass dataset={loaded.manifest['dataset']!r}"
            )
        return loaded, None, False
    if (
        dataset == "ml-100k"
        and data_dir is None
        and pipeline is None
        and source.held_out == "seed"
        and source.weight_decay_per_epoch is None
    ):
        manifest = json.loads((DEFAULT_BUNDLE_DIR / "manifest.json").read_text())
        if (
            slate_length <= manifest["pool"]["slate_length"]
            and num_candidates <= manifest["pool"]["num_candidates"]
            and simulator in manifest["simulators"]
        ):
            return load_bundle(), None, True
    config = pipeline or PipelineConfig(
        num_candidates=max(num_candidates, 50), slate_length=slate_length
    )
    data = load_rerank_data(dataset, data_dir, config, progress=progress, synthetic=synthetic)
    loaded = _cached_bundle(
        data,
        dataset,
        data_dir,
        simulator,
        synthetic,
        progress,
        held_out=source.held_out,
        weight_decay_per_epoch=source.weight_decay_per_epoch,
    )
    true_simulator = None
    if dataset == "synthetic":
        from simulators.data.synthetic_world import true_simulator_for  # noqa: PLC0415

        true_simulator = true_simulator_for(data, synthetic)
    return loaded, true_simulator, False


def _cached_bundle(
    data: Any,
    dataset: str,
    data_dir: str | None,
    simulator: str,
    synthetic: SyntheticConfig | None,
    progress: bool,
    *,
    held_out: str = "seed",
    weight_decay_per_epoch: float | None = None,
) -> SimulatorBundle:
    """The bundle of ``simulator`` fitted on ``data``, built once into the user cache."""
    checksum = data_checksum(dataset, data_dir) if dataset != "synthetic" else synthetic.key()
    config = BundleConfig(
        kinds=(simulator,), held_out=held_out, weight_decay_per_epoch=weight_decay_per_epoch
    )
    fields = dataclasses.asdict(config)
    later_fields = (
        ("held_out", "seed"),
        ("fit_composition", False),
        ("weight_decay_per_epoch", None),
    )
    for key, default in later_fields:
        if fields[key] == default:
            del fields[key]  # bundles cached before the field existed keep their key
    versions = [BUNDLE_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION, PIPELINE_VERSION]
    key = hashlib.sha256(
        json.dumps([versions, checksum, data.config.to_json(), fields], sort_keys=True).encode()
    ).hexdigest()[:16]
    folder = cache_dir() / "bundles" / f"{dataset}-{simulator}-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One process builds; others wait for it and then load its bundle.
    with _exclusive(folder.with_name(folder.name + ".lock")):
        if (folder / "manifest.json").is_file():
            try:
                return load_bundle(folder)
            except CheckpointError:
                pass  # damaged: rebuild it below
        build_bundle(data, folder, config, data_checksum=checksum, progress=progress)
        return load_bundle(folder)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX; a no-op where fcntl is missing)."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_bundle_fits(
    bundle: SimulatorBundle, simulator: str, num_candidates: int, slate_length: int
) -> None:
    pool = bundle.pool
    if simulator not in bundle.kinds:
        raise ConfigError(
            f"the bundle at {bundle.path} has no {simulator!r} simulator (it has "
            f"{bundle.kinds}); rebuild it with --kinds {simulator}"
        )
    if num_candidates > pool.num_candidates:
        raise ConfigError(
            f"num_candidates={num_candidates} but the bundle at {bundle.path} has "
            f"{pool.num_candidates} candidates per request; use N <= {pool.num_candidates} "
            "or a pipeline with more candidates"
        )
    if slate_length > pool.slate_length:
        raise ConfigError(
            f"slate_length={slate_length} but the simulators of {bundle.path} know "
            f"{pool.slate_length} positions; use L <= {pool.slate_length} or build from raw "
            f"data with PipelineConfig(slate_length={slate_length})"
        )
