"""From MovieLens ratings to reranking data: splits, logged slates and requests.

The steps, in order (each one documented in ``docs/data.md``):

1. **labels**: click = rating >= ``click_threshold``; like = rating >= ``like_threshold``;
2. **k-core**: users and items with fewer than ``k_core`` ratings are removed,
   repeatedly, until every remaining user and item has at least ``k_core``;
3. **logged slates**: each user's ratings in time order (ties broken by raw item id)
   are cut into consecutive, non-overlapping slates of ``slate_length`` items from
   the user's first rating on, so where a slate starts never depends on later
   ratings; the last few ratings (fewer than ``slate_length``) form no slate and
   belong to the user's last split;
4. **time split**: per user (``split="user"``) the last ``test_fraction`` of the
   user's slates are test, the ones before them valid, the rest train; users with
   fewer than 3 slates are train only. With ``split="global"`` two global time
   cut-offs are used instead, so no training interaction of any user is later than
   any valid or test slate;
5. **retriever**: fitted on training-split interactions only;
6. **requests**: one per logged slate: the user, the history before the slate, and
   ``num_candidates`` candidates in retriever order (history items excluded). Logged
   positives the retriever missed are injected (``inject_position`` says where) so
   that list metrics against logged positives are defined;
7. **GR2 requests**: ``gr2_candidates`` pre-ranked candidates containing the first
   logged positive of the slate (the true next item); by default only requests whose
   retriever top K holds it (``gr2_mode``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import typing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from simulators.data.errors import ConfigError
from simulators.data.movielens import ML1M_AGE_CODES, MovieLensData
from simulators.data.retrieval import (
    ImplicitALS,
    Retriever,
    history_matrix,
    item_scores,
    make_retriever,
)
from simulators.metrics import ndcg_at_k, recall_at_k
from simulators.progress import progress_bar

# Bump whenever a change to this module or to retrieval.py changes its output for an
# unchanged config: the cache key includes it, so old cache files are not reused.
# tests/test_pipeline.py holds a golden digest that fails until it is bumped.
PIPELINE_VERSION = 2

SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = 0, 1, 2


@dataclass(frozen=True)
class PipelineConfig:
    """Every choice that turns ratings into reranking data.

    Attributes:
        k_core: Minimum ratings per user and per item (applied until stable).
        click_threshold: A rating at or above it is a click (positive): whole or
            half stars, 0.5-5 (ML-100K and ML-1M have whole stars 1-5 only).
        like_threshold: A rating at or above it is a like.
        slate_length: L, items per logged slate.
        num_candidates: N, candidates per request.
        split: ``"user"`` (time-ordered split per user) or ``"global"`` (global
            time cut-offs).
        valid_fraction: Share of each user's slates (or of all slates, by time, for
            ``split="global"``) that are validation.
        test_fraction: Same for test.
        retriever: ``"mf"`` (implicit ALS), ``"itemknn"`` or ``"pop"``.
        mf_factors: ALS latent dimension.
        mf_regularization: ALS L2 weight.
        mf_alpha: ALS confidence of observed interactions.
        mf_iterations: ALS sweeps.
        knn_neighbors: Neighbours kept per item for ``"itemknn"``.
        inject: Which logged items are forced into the candidates. ``"none"``
            (default): pure retrieval; logged positives count only where the
            retriever found them. ``"positives"`` / ``"slate"`` inject missed logged
            positives / all logged items: every metric against logged positives is
            then defined for every request, but it opens a label leak (an injected
            item is one the retriever ranked low, so "low retriever score" or "less
            popular" predicts "positive"; docs/data.md gives the measured size).
        inject_position: Where injected items go: ``"random"`` (a uniformly random
            slot; the lowest-scored retrieved items that are not required make room)
            or ``"score"`` (their retriever rank, which is almost always the bottom).
        gr2_candidates: K, candidates per GR2-protocol request.
        gr2_mode: ``"filter"`` keeps only requests whose retriever top K already
            holds the true next item (the K candidates are exactly the pre-ranker's
            list, so its order carries real signal); ``"inject"`` keeps every request
            with a positive and injects a missing true item per ``inject_position``
            (many more requests, but with ``"random"`` the initial order is then
            uninformative for most of them).
        seed: Seed of the retriever and of injection slots.
    """

    k_core: int = 5
    click_threshold: float = 4
    like_threshold: float = 5
    slate_length: int = 6
    num_candidates: int = 50
    split: Literal["user", "global"] = "user"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    retriever: Literal["mf", "itemknn", "pop"] = "mf"
    mf_factors: int = 64
    mf_regularization: float = 50.0
    mf_alpha: float = 10.0
    mf_iterations: int = 10
    knn_neighbors: int = 100
    inject: Literal["none", "positives", "slate"] = "none"
    inject_position: Literal["random", "score"] = "random"
    gr2_candidates: int = 10
    gr2_mode: Literal["filter", "inject"] = "filter"
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"PipelineConfig: {message}")

        hints = typing.get_type_hints(PipelineConfig)
        for item in dataclasses.fields(self):
            value, kind = getattr(self, item.name), hints[item.name]
            if typing.get_origin(kind) is typing.Literal:
                options = typing.get_args(kind)
                need(value in options, f"{item.name} must be one of {options}, got {value!r}")
            elif kind is int:
                need(
                    isinstance(value, (int, np.integer)) and not isinstance(value, bool),
                    f"{item.name} must be an integer, got {value!r}",
                )
            elif kind is float:
                need(
                    isinstance(value, (int, float, np.number)) and not isinstance(value, bool),
                    f"{item.name} must be a number, got {value!r}",
                )
        for name in ("k_core", "slate_length", "mf_factors", "mf_iterations", "knn_neighbors"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        need(
            0.5 <= self.click_threshold <= 5 and float(2 * self.click_threshold).is_integer(),
            f"click_threshold must be a rating 0.5-5 in half stars, got {self.click_threshold}",
        )
        need(
            self.click_threshold <= self.like_threshold <= 5
            and float(2 * self.like_threshold).is_integer(),
            f"like_threshold must be a rating in half stars from click_threshold "
            f"({self.click_threshold}) to 5, got {self.like_threshold}",
        )
        need(
            self.num_candidates >= self.slate_length,
            f"num_candidates ({self.num_candidates}) must be >= slate_length "
            f"({self.slate_length}): a list of L items is chosen among N candidates",
        )
        need(
            self.valid_fraction > 0 and self.test_fraction > 0
            and self.valid_fraction + self.test_fraction < 1,
            "valid_fraction and test_fraction must be > 0 and sum to < 1, got "
            f"{self.valid_fraction} and {self.test_fraction}",
        )  # fmt: skip
        need(
            self.mf_regularization > 0,
            f"mf_regularization must be > 0, got {self.mf_regularization}",
        )
        need(self.mf_alpha >= 0, f"mf_alpha must be >= 0, got {self.mf_alpha}")
        need(
            2 <= self.gr2_candidates <= self.num_candidates,
            f"gr2_candidates must be in [2, num_candidates], got {self.gr2_candidates}",
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), used in cache keys and metadata."""
        fields = dataclasses.asdict(self)
        for name in ("click_threshold", "like_threshold"):
            # 4 and 4.0 are one threshold and one cache key (whole stars as before).
            if float(fields[name]).is_integer():
                fields[name] = int(fields[name])
        return json.dumps(fields, sort_keys=True)


@dataclass(frozen=True, eq=False)
class RerankData:
    """Processed reranking data of one dataset: features, interactions, requests.

    Users and items are dense indices after k-core filtering; ``user_ids`` and
    ``item_ids`` map them back to raw dataset ids. Interactions are sorted by user,
    then time; ``user_offsets[u]:user_offsets[u + 1]`` are user ``u``'s. Request
    ``r`` is logged slate ``r``: its history is the user's interactions before
    ``request_seq_pos[r]``.

    Attributes:
        name: Dataset name, e.g. ``"ml-100k"``.
        config: The :class:`PipelineConfig` used.
        user_ids: Raw id of each user, int64 ``[U]``.
        item_ids: Raw id of each item, int64 ``[I]``.
        item_titles: str ``[I]``.
        user_features: float32 ``[U, Du]``: one-hot gender, age group, occupation;
            ``[U, 0]`` for releases without demographics (ML-10M on).
        user_feature_names: Name of each user-feature column.
        item_features: float32 ``[I, Di]``: genre flags and standardised release year.
        item_feature_names: Name of each item-feature column.
        user_offsets: int64 ``[U + 1]``.
        interaction_item: int64 ``[M]``; ``interaction_rating`` float32 (stars),
            ``interaction_time``
            int64 and ``interaction_split`` int8 (0 train, 1 valid, 2 test) alongside.
        interaction_rating: See ``interaction_item``.
        interaction_time: See ``interaction_item``.
        interaction_split: See ``interaction_item``.
        request_user: int64 ``[R]``.
        request_seq_pos: Index in the user's sequence where the logged slate starts.
        request_split: int8 ``[R]``.
        request_time: Timestamp of the slate's first interaction, int64 ``[R]``.
        logged_items: int64 ``[R, L]``, the logged slate in time order.
        logged_ratings: Stars, float32 ``[R, L]``.
        candidates: int64 ``[R, N]``, the initial ranking.
        candidate_scores: Retriever score of each candidate, float32 ``[R, N]``.
        candidate_rating: Logged rating of each candidate in this request's slate
            (0 when it is not in the slate), float32 ``[R, N]``.
        candidate_injected: Whether the candidate was injected, bool ``[R, N]``.
        gr2_request: Request index of each GR2 request, int64 ``[Q]``.
        gr2_candidates: int64 ``[Q, K]``.
        gr2_target_pos: Position of the true next item among ``gr2_candidates``.
        gr2_injected: Whether the target had to be injected, bool ``[Q]``.
        retriever_item_factors: ALS item factors, float32 ``[I, F]`` (``[I, 0]`` for
            other retrievers), reusable as item embeddings.
        stats: Summary numbers (see :meth:`summary`).
    """

    name: str
    config: PipelineConfig
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: np.ndarray
    user_features: np.ndarray
    user_feature_names: tuple[str, ...]
    item_features: np.ndarray
    item_feature_names: tuple[str, ...]
    user_offsets: np.ndarray
    interaction_item: np.ndarray
    interaction_rating: np.ndarray
    interaction_time: np.ndarray
    interaction_split: np.ndarray
    request_user: np.ndarray
    request_seq_pos: np.ndarray
    request_split: np.ndarray
    request_time: np.ndarray
    logged_items: np.ndarray
    logged_ratings: np.ndarray
    candidates: np.ndarray
    candidate_scores: np.ndarray
    candidate_rating: np.ndarray
    candidate_injected: np.ndarray
    gr2_request: np.ndarray
    gr2_candidates: np.ndarray
    gr2_target_pos: np.ndarray
    gr2_injected: np.ndarray
    retriever_item_factors: np.ndarray
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        """Number of users after k-core filtering."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of items after k-core filtering."""
        return len(self.item_ids)

    @property
    def n_requests(self) -> int:
        """Number of requests (one per logged slate)."""
        return len(self.request_user)

    @property
    def candidate_positive(self) -> np.ndarray:
        """Whether each candidate is a logged positive of its request, bool ``[R, N]``."""
        return self.candidate_rating >= self.config.click_threshold

    @property
    def logged_clicks(self) -> np.ndarray:
        """Click labels of the logged slates, bool ``[R, L]``."""
        return self.logged_ratings >= self.config.click_threshold

    def split_indices(self, split: str) -> np.ndarray:
        """Return the request indices of ``"train"``, ``"valid"`` or ``"test"``."""
        return np.flatnonzero(self.request_split == _split_code(split))

    def history(
        self, requests: np.ndarray | list[int], max_length: int = 50
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the most recent history items before each request.

        Args:
            requests: Request indices.
            max_length: Items kept per history (the most recent ones).

        Returns:
            ``(items, lengths)``: int64 ``[len(requests), max_length]`` item indices in
            time order, left-aligned and padded with -1, and the number of valid items.
        """
        requests = np.asarray(requests, dtype=np.int64)
        ends = self.user_offsets[self.request_user[requests]] + self.request_seq_pos[requests]
        starts = np.maximum(self.user_offsets[self.request_user[requests]], ends - max_length)
        lengths = ends - starts
        steps = np.arange(max_length)
        index = starts[:, None] + steps[None, :]
        valid = steps[None, :] < lengths[:, None]
        items = np.where(valid, self.interaction_item[np.where(valid, index, 0)], -1)
        return items, lengths

    def summary(self) -> str:
        """Return a human-readable summary table of the processed data."""
        s = self.stats
        rows = [
            ("dataset", self.name),
            ("users / items", f"{self.n_users} / {self.n_items}"),
            ("interactions", f"{len(self.interaction_item)}"),
            (
                "requests train / valid / test",
                " / ".join(str(len(self.split_indices(name))) for name in SPLITS),
            ),
            ("positive rate (clicks per interaction)", f"{s['positive_rate']:.3f}"),
            ("positives per test request", f"{s['test_positives_per_request']:.2f}"),
            (
                f"retriever ({self.config.retriever}) recall@{self.config.num_candidates}, test",
                f"{s['test_recall_at_n']:.3f}",
            ),
            (
                "test requests with a positive the retriever missed",
                f"{s['test_missed_positive_share']:.3f}",
            ),
            (
                f"test requests with a positive among candidates (inject={self.config.inject})",
                f"{s['test_with_candidate_positive_share']:.3f}",
            ),
            (
                f"GR2 requests, test (K={self.config.gr2_candidates}, {self.config.gr2_mode})",
                f"{s['gr2_test_requests']}",
            ),
            (
                "GR2 pre-ranker recall@1 / @5 / NDCG@5, test",
                f"{s['gr2_test_recall_at_1']:.3f} / {s['gr2_test_recall_at_5']:.3f} / "
                f"{s['gr2_test_ndcg_at_5']:.3f}",
            ),
        ]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return SPLITS.index(split)


def k_core_mask(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Return the mask of ratings kept by iterative k-core filtering.

    Users and items with fewer than ``k`` kept ratings are removed until every
    remaining user and item has at least ``k``.
    """
    keep = np.ones(len(user), dtype=bool)
    while True:
        user_counts = np.bincount(user[keep], minlength=int(user.max()) + 1)
        item_counts = np.bincount(item[keep], minlength=int(item.max()) + 1)
        still = keep & (user_counts[user] >= k) & (item_counts[item] >= k)
        if still.sum() == keep.sum():
            return keep
        keep = still


def build_rerank_data(
    ratings: MovieLensData, config: PipelineConfig | None = None, *, progress: bool = True
) -> RerankData:
    """Run the whole pipeline (see the module docstring) on loaded MovieLens ratings.

    Args:
        ratings: Output of :func:`simulators.data.movielens.load_movielens`.
        config: Pipeline choices; defaults to :class:`PipelineConfig()`.
        progress: Show a progress bar over the steps.
    """
    config = config or PipelineConfig()
    steps = progress_bar(5, f"{ratings.name} pipeline", progress)

    # k-core, then dense re-indexing of the survivors.
    keep = k_core_mask(ratings.user, ratings.item, config.k_core)
    if not keep.any():
        raise ConfigError(
            f"k_core={config.k_core} removes every rating of {ratings.name}; lower k_core"
        )
    kept_users = np.unique(ratings.user[keep])
    kept_items = np.unique(ratings.item[keep])
    user = np.searchsorted(kept_users, ratings.user[keep])
    item = np.searchsorted(kept_items, ratings.item[keep])
    rating = ratings.rating[keep]
    time = ratings.timestamp[keep]
    raw_item = ratings.item_ids[kept_items]
    n_users, n_items = len(kept_users), len(kept_items)

    # Sort by user, then time. Ratings in the same second are simultaneous: order them
    # by a seeded hash of (user, item), so neither the file's line order nor the item
    # id decides positions, history boundaries or the GR2 target.
    tie_break = _mix_hash(ratings.user_ids[kept_users][user], raw_item[item], config.seed)
    order = np.lexsort((tie_break, time, user))
    user, item, rating, time = user[order], item[order], rating[order], time[order]
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=n_users), out=offsets[1:])
    steps.update()

    slate_user, slate_pos, slate_split, interaction_split = _slates_and_split(offsets, time, config)
    steps.update()

    retriever = make_retriever(
        config.retriever,
        factors=config.mf_factors,
        regularization=config.mf_regularization,
        alpha=config.mf_alpha,
        iterations=config.mf_iterations,
        neighbors=config.knn_neighbors,
        seed=config.seed,
    )
    is_train = interaction_split == TRAIN
    retriever.fit(user[is_train], item[is_train], n_users, n_items)
    steps.update()

    # An item can be retrieved once it has a training rating at or before the request
    # time (training data only: valid/test ratings must not shape training requests).
    # A request needs N retrievable items outside its history; only requests at the
    # very start of the log, when a handful of items exist, lack them and are dropped.
    first_rated = np.full(n_items, np.iinfo(np.int64).max)
    np.minimum.at(first_rated, item[is_train], time[is_train])
    history_starts = offsets[slate_user]
    history_ends = history_starts + slate_pos
    request_time = time[history_ends]
    history_available = np.zeros(len(slate_user), dtype=np.int64)
    for rows in _chunks_by_history(history_starts, history_ends):
        histories = history_matrix(item, history_starts[rows], history_ends[rows], n_items)
        row = np.repeat(np.arange(histories.shape[0]), np.diff(histories.indptr))
        in_history_and_available = first_rated[histories.indices] <= request_time[rows][row]
        history_available[rows] = np.bincount(
            row[in_history_and_available], minlength=histories.shape[0]
        )
    available = np.searchsorted(np.sort(first_rated), request_time, side="right")
    enough = available - history_available >= config.num_candidates
    if not enough.any():
        raise ConfigError(
            f"no request has num_candidates={config.num_candidates} items outside its "
            f"history ({n_items} items after k-core, {len(slate_user)} slates); lower "
            "num_candidates or slate_length"
        )
    slate_user, slate_pos, slate_split = slate_user[enough], slate_pos[enough], slate_split[enough]
    history_starts, history_ends = history_starts[enough], history_ends[enough]
    request_time = request_time[enough]

    length = config.slate_length
    slate_index = history_ends[:, None] + np.arange(length)[None, :]
    logged_items = item[slate_index]
    logged_ratings = rating[slate_index]
    popularity = np.bincount(item[is_train], minlength=n_items).astype(np.float32)
    # One random stream per request, keyed by (seed, raw user id, slate start).
    stream_keys = np.column_stack(
        [np.full(len(slate_user), config.seed), ratings.user_ids[kept_users][slate_user], slate_pos]
    )
    requests, gr2 = _build_requests(
        _Scorer(retriever, popularity, first_rated, request_time, item, history_starts,
                history_ends),
        logged_items, logged_ratings, config, stream_keys, progress,
    )  # fmt: skip
    steps.update(2)
    steps.close()

    user_features, user_names = _user_features(ratings, kept_users)
    item_features, item_names = _item_features(ratings, kept_items)
    data = RerankData(
        name=ratings.name,
        config=config,
        user_ids=ratings.user_ids[kept_users],
        item_ids=raw_item,
        item_titles=ratings.item_titles[kept_items],
        user_features=user_features,
        user_feature_names=user_names,
        item_features=item_features,
        item_feature_names=item_names,
        user_offsets=offsets,
        interaction_item=item,
        interaction_rating=rating,
        interaction_time=time,
        interaction_split=interaction_split,
        request_user=slate_user,
        request_seq_pos=slate_pos,
        request_split=slate_split,
        request_time=request_time,
        logged_items=logged_items,
        logged_ratings=logged_ratings,
        candidates=requests["candidates"],
        candidate_scores=requests["scores"],
        candidate_rating=requests["rating"],
        candidate_injected=requests["injected"],
        gr2_request=gr2["request"],
        gr2_candidates=gr2["candidates"],
        gr2_target_pos=gr2["target_pos"],
        gr2_injected=gr2["injected"],
        retriever_item_factors=(
            retriever.item_factors
            if isinstance(retriever, ImplicitALS) and retriever.item_factors is not None
            else np.zeros((n_items, 0), dtype=np.float32)
        ),
    )
    stats = compute_stats(data, retrieved_positive=requests["retrieved_positive"])
    stats["dropped_requests_too_few_items"] = int((~enough).sum())
    return dataclasses.replace(data, stats=stats)


def _mix_hash(user: np.ndarray, item: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random uint64 per (user, item, seed) (splitmix64 finaliser)."""
    x = user.astype(np.uint64) * np.uint64(0x100000001B3) ^ item.astype(np.uint64)
    x = x + np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) % 2**64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _slates_and_split(
    offsets: np.ndarray, time: np.ndarray, config: PipelineConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each user's sequence into slates and assign every slate a split.

    Returns:
        ``(slate_user, slate_pos, slate_split, interaction_split)``.
    """
    length = config.slate_length
    n_users = len(offsets) - 1
    counts = np.diff(offsets)
    n_slates = counts // length
    if n_slates.sum() == 0:
        raise ConfigError(
            f"no user has slate_length={length} ratings (after k-core); lower slate_length"
        )
    if config.split == "user" and (n_slates >= 3).sum() == 0:
        raise ConfigError(
            f"no user has the 3 slates of slate_length={length} that a train/valid/test "
            "split per user needs; lower slate_length or use split='global'"
        )
    slate_user = np.repeat(np.arange(n_users), n_slates)
    # Slate j of a user starts at j * L: the cut never depends on later ratings.
    rank = np.arange(len(slate_user)) - np.repeat(np.cumsum(n_slates) - n_slates, n_slates)
    slate_pos = rank * length

    if config.split == "user":
        n_test = np.maximum(1, np.round(config.test_fraction * n_slates)).astype(np.int64)
        n_valid = np.maximum(1, np.round(config.valid_fraction * n_slates)).astype(np.int64)
        too_few = n_slates - n_test - n_valid < 1
        n_test[too_few] = 0
        n_valid[too_few] = 0
        from_end = np.repeat(n_slates, n_slates) - 1 - rank  # 0 for the user's last slate
        slate_split = np.full(len(slate_user), TRAIN, dtype=np.int8)
        slate_split[from_end < np.repeat(n_test + n_valid, n_slates)] = VALID
        slate_split[from_end < np.repeat(n_test, n_slates)] = TEST
        # Ratings after a user's last slate belong to the user's last split.
        last_split = np.where(n_test > 0, TEST, TRAIN).astype(np.int8)
        interaction_split = np.repeat(last_split, counts)
        starts = offsets[slate_user] + slate_pos
        for offset in range(length):
            interaction_split[starts + offset] = slate_split
    else:
        slate_end_time = time[offsets[slate_user] + slate_pos + length - 1]
        cut_valid, cut_test = np.quantile(
            slate_end_time, [1 - config.valid_fraction - config.test_fraction,
                             1 - config.test_fraction], method="lower",
        )  # fmt: skip
        slate_split = np.where(
            slate_end_time <= cut_valid, TRAIN, np.where(slate_end_time <= cut_test, VALID, TEST)
        ).astype(np.int8)
        # Interactions are train only if no later than the train cut-off, so nothing
        # after it (from any user) reaches the retriever or any model fitted on train.
        interaction_split = np.where(
            time <= cut_valid, TRAIN, np.where(time <= cut_test, VALID, TEST)
        ).astype(np.int8)
        starts = offsets[slate_user] + slate_pos
        for offset in range(length):
            # A slate that straddles a cut-off belongs to its later split as a whole.
            interaction_split[starts + offset] = np.maximum(
                interaction_split[starts + offset], slate_split
            )
    return slate_user, slate_pos.astype(np.int64), slate_split, interaction_split


def _chunks_by_history(
    starts: np.ndarray, ends: np.ndarray, rows: int = 2048, entries: int = 1 << 24
) -> Iterator[slice]:
    """Consecutive request slices of at most ``rows`` requests and ``entries`` history items.

    At ML-25M size one heavy user's histories hold tens of millions of items and all
    of them close to a billion, so history matrices are built a slice at a time (a
    slice holds at least one request).
    """
    total = np.cumsum(ends - starts)
    start = 0
    while start < len(starts):
        before = total[start - 1] if start else 0
        stop = int(np.searchsorted(total, before + entries, side="right"))
        stop = min(max(stop, start + 1), start + rows)
        yield slice(start, stop)
        start = stop


@dataclass(frozen=True)
class _Scorer:
    """The retriever as the request builder uses it.

    Rows with an empty history (a user's first slate) fall back to training
    popularity, since ALS fold-in and item-kNN give them all-equal scores. Items
    without a training rating by the request time are never retrieved.
    """

    retriever: Retriever
    popularity: np.ndarray
    first_rated: np.ndarray
    request_time: np.ndarray
    item: np.ndarray
    history_starts: np.ndarray
    history_ends: np.ndarray

    def __call__(self, rows: slice) -> np.ndarray:
        """Scores of every item for requests ``rows``."""
        starts, ends = self.history_starts[rows], self.history_ends[rows]
        scores = self.retriever.score_prefixes(self.item, starts, ends)
        scores[ends == starts] = self.popularity
        return scores

    def histories(self, rows: slice | np.ndarray) -> sp.csr_matrix:
        """Binary request-by-item history matrix of requests ``rows``."""
        starts, ends = self.history_starts[rows], self.history_ends[rows]
        return history_matrix(self.item, starts, ends, len(self.popularity))

    def mask(self, rows: slice | np.ndarray, scores: np.ndarray) -> None:
        """Set to -inf the scores of history items and of unavailable items.

        An item is unavailable to a request until its first training rating.
        """
        unavailable = self.first_rated[None, :] > self.request_time[rows, None]
        np.copyto(scores, -np.inf, where=unavailable)
        scores[self.histories(rows).nonzero()] = -np.inf

    def top(
        self, rows: slice, logged_items: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``size`` best items of requests ``rows`` and the logged items' scores.

        Returns:
            ``(top, top_scores, logged_scores)``: the best items first (ties by
            lower index), their scores, and the scores of ``logged_items`` (the
            rows' logged slates, before masking).
        """
        if isinstance(self.retriever, ImplicitALS):
            return self._certified_top(rows, logged_items, size)
        scores = self(rows)
        logged_scores = np.take_along_axis(scores, logged_items, axis=1)
        self.mask(rows, scores)
        top = top_items(scores, size)
        return top, np.take_along_axis(scores, top, axis=1), logged_scores

    def _certified_top(
        self, rows: slice, logged_items: np.ndarray, size: int, margin: int = 14
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`top` of the ALS retriever, scored in float32 and certified in float64.

        The product of a chunk's user vectors with every item's factors is most of
        retrieval's time at ML-25M size; in float32 it is several times faster. Each
        row's ``size + margin`` best items by the float32 scores are re-scored in
        float64, and the row's ranking is kept only where a bound on the float32
        error proves that no other item can reach its ``size``-th float64 score (so
        the result is the float64 ranking, up to float64 summation order); the rare
        rows it cannot prove are scored in float64 in full.
        """
        retriever = typing.cast(ImplicitALS, self.retriever)
        factors32 = typing.cast(np.ndarray, retriever.item_factors)
        starts, ends = self.history_starts[rows], self.history_ends[rows]
        empty = ends == starts
        users = retriever.fold_in_prefixes(self.item, starts, ends)
        scores = users.astype(np.float32) @ factors32.T
        scores[empty] = self.popularity
        self.mask(rows, scores)
        wide = min(size + margin, scores.shape[1])
        top = top_items(scores, wide)
        top_scores32 = np.take_along_axis(scores, top, axis=1)
        exact = self._exact_scores(users, empty, top)
        exact[np.isneginf(top_scores32)] = -np.inf
        # The float64 ranking of the candidates: by score, ties by lower index.
        order = np.lexsort((top, -exact), axis=1)
        top = np.take_along_axis(top, order, axis=1)[:, :size]
        exact = np.take_along_axis(exact, order, axis=1)[:, :size]
        # Error of a float32 dot product of k terms (inputs rounded once, any order of
        # summation): at most (k + 2) u sum |user_i factor_i| with u = 2^-24; doubled.
        k = users.shape[1]
        bound = 2 * (k + 2) * 2.0**-24 * (np.abs(users) @ self._largest_factors)
        bound[empty] = 0.0  # popularity is exact
        # No item outside the candidates scores above threshold + bound in float64.
        outside_best = (top_scores32[:, -1].astype(np.float64) + bound).astype(np.float32)
        key = exact[:, -1]
        certified = (key > -np.inf) & ((outside_best < key) | (wide == scores.shape[1]))
        uncertified = np.flatnonzero(~certified)
        if len(uncertified):  # scored in float64 in full, as the other retrievers are
            full = item_scores(users[uncertified], factors32.astype(np.float64))
            full[empty[uncertified]] = self.popularity
            self.mask(rows.start + uncertified, full)
            top[uncertified] = top_items(full, size)
            exact[uncertified] = np.take_along_axis(full, top[uncertified], axis=1)
        return top, exact, self._exact_scores(users, empty, logged_items)

    @functools.cached_property
    def _largest_factors(self) -> np.ndarray:
        """The largest ``|factor|`` of any item, per latent dimension (error bounds)."""
        return np.abs(typing.cast(np.ndarray, self.retriever.item_factors)).max(axis=0)

    def _exact_scores(self, users: np.ndarray, empty: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Float64 scores of ``items[r]`` for user ``r``, as float32 (popularity where empty)."""
        factors = typing.cast(np.ndarray, self.retriever.item_factors)
        exact = np.einsum("rk,rik->ri", users, factors[items].astype(np.float64))
        exact = exact.astype(np.float32)
        exact[empty] = self.popularity[items[empty]]
        return exact


def top_items(scores: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` best items per row, best first; ties by lower index.

    A total order, so the result never depends on the CPU's code path: the same as
    ``np.argsort(-scores, axis=1, kind="stable")[:, :size]`` for NaN-free scores, in
    linear time (``torch.topk``), which at 59,000 items is about 60 times faster than
    the sort (most of the pipeline's time otherwise).
    """
    import torch  # noqa: PLC0415  (the data package imports torch only where it helps)

    if size >= scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")[:, :size]
    values, columns = torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), size + 1, dim=1)
    # Where the next best item ties with the size-th, topk's choice among the tied
    # items is arbitrary: those rows (rare) are sorted in full; elsewhere the set is
    # exact and only needs the order.
    partial = (values[:, size] == values[:, size - 1]).numpy()
    columns = np.sort(columns[:, :size].numpy(), axis=1)
    order = np.argsort(-np.take_along_axis(scores, columns, axis=1), axis=1, kind="stable")
    columns = np.take_along_axis(columns, order, axis=1)
    rows = np.flatnonzero(partial)
    if len(rows):
        columns[rows] = np.argsort(-scores[rows], axis=1, kind="stable")[:, :size]
    return columns


def _retrieve(
    scorer: _Scorer,
    logged_items: np.ndarray,
    sizes: tuple[int, ...],
    progress: bool = False,
    workers: int | None = None,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Score every item once per request and keep what the requests need.

    History items and items not yet rated by anyone are excluded (score -inf).
    Returns, for each size in ``sizes``, the top items best first with their scores
    (ties broken by item index), and the scores of the logged slate's items.
    Chunks of requests are independent and run on ``workers`` threads (default: one
    per core, at most 4; each holds a chunk's scores, about 0.5 GB at ML-25M size):
    most of a chunk's work is numpy and torch calls that release the GIL, half of
    it single-threaded, so threads keep the cores busy. The result does not depend
    on the number of threads (tested).
    """
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    n = len(logged_items)
    tops = [
        (np.empty((n, size), dtype=np.int64), np.empty((n, size), dtype=np.float32))
        for size in sizes
    ]
    logged_scores = np.empty(logged_items.shape, dtype=np.float32)
    chunks = list(_chunks_by_history(scorer.history_starts, scorer.history_ends))

    def retrieve(rows: slice) -> None:
        widest, widest_scores, logged_scores[rows] = scorer.top(
            rows, logged_items[rows], max(sizes)
        )
        for size, (items, scores) in zip(sizes, tops, strict=True):
            items[rows] = widest[:, :size]
            scores[rows] = widest_scores[:, :size]

    # Minutes at ML-25M size (4M requests): worth a bar of its own.
    bar = progress_bar(description="retrieving candidates", enabled=progress, total=len(chunks))
    # One BLAS thread per worker, set here once: threadpoolctl's limits are
    # process-wide, so the retrievers' own one-thread sections then nest safely.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(retrieve, chunks):
            bar.update(1)
    bar.close()
    return tops, logged_scores


def _inject(
    retrieved: np.ndarray,
    retrieved_scores: np.ndarray,
    required: np.ndarray,
    required_scores: np.ndarray,
    required_mask: np.ndarray,
    position: str,
    stream_keys: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make every request's candidates contain its required items.

    Missing required items (``required[r][required_mask[r]]``) replace the
    lowest-scored retrieved ones and go either to uniformly random slots
    (``"random"``) or to their retriever-score rank (``"score"``). Row ``r`` draws
    its slots from its own generator seeded by ``stream_keys[r]``, so one request's
    candidates never depend on another request (of another split, say).

    Returns:
        ``(candidates, scores, injected)`` with the shape of ``retrieved``.
    """
    candidates = retrieved.copy()
    scores = retrieved_scores.copy()
    injected = np.zeros(retrieved.shape, dtype=bool)
    size = retrieved.shape[1]
    in_retrieved = (required[:, :, None] == retrieved[:, None, :]).any(axis=2)
    missing = required_mask & ~in_retrieved
    for r in np.flatnonzero(missing.any(axis=1)):
        add, add_scores = required[r][missing[r]], required_scores[r][missing[r]]
        # Make room by dropping the lowest-scored retrieved items that are not required.
        protected = np.isin(retrieved[r], required[r][required_mask[r]])
        kept = np.ones(size, dtype=bool)
        kept[np.flatnonzero(~protected)[-len(add) :]] = False
        kept_items, kept_scores = retrieved[r, kept], retrieved_scores[r, kept]
        if position == "random":
            rng = np.random.default_rng(stream_keys[r].tolist())
            is_new = np.zeros(size, dtype=bool)
            is_new[rng.choice(size, size=len(add), replace=False)] = True
            shuffled = rng.permutation(len(add))
            candidates[r, is_new] = add[shuffled]
            scores[r, is_new] = add_scores[shuffled]
            candidates[r, ~is_new] = kept_items
            scores[r, ~is_new] = kept_scores
            injected[r, is_new] = True
        else:
            merged = np.concatenate([kept_items, add])
            merged_scores = np.concatenate([kept_scores, add_scores])
            flags = np.arange(size) >= len(kept_items)
            order = np.lexsort((merged, -merged_scores))
            candidates[r], scores[r], injected[r] = (
                merged[order],
                merged_scores[order],
                flags[order],
            )
    return candidates, scores, injected


def _build_requests(
    scorer: _Scorer,
    logged_items: np.ndarray,
    logged_ratings: np.ndarray,
    config: PipelineConfig,
    stream_keys: np.ndarray,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Candidates of the main (N) protocol and of the GR2 (K) protocol."""
    ((retrieved, retrieved_scores), (gr2_retrieved, gr2_scores)), logged_scores = _retrieve(
        scorer, logged_items, (config.num_candidates, config.gr2_candidates), progress
    )
    positive = logged_ratings >= config.click_threshold
    if config.inject == "none":
        must = np.zeros_like(positive)
    else:
        must = positive if config.inject == "positives" else np.ones_like(positive)
    candidates, scores, injected = _inject(
        retrieved, retrieved_scores, logged_items, logged_scores, must,
        config.inject_position, np.column_stack([stream_keys, np.zeros_like(stream_keys[:, 0])]),
    )  # fmt: skip
    # One logged position at a time: an [R, N, L] comparison is gigabytes at 25M ratings.
    rating = np.zeros(candidates.shape, dtype=np.float32)
    retrieved_positive = np.zeros_like(positive)
    for slot in range(logged_items.shape[1]):
        logged = logged_items[:, slot : slot + 1]
        rating += (candidates == logged) * logged_ratings[:, slot : slot + 1]
        retrieved_positive[:, slot] = positive[:, slot] & (retrieved == logged).any(axis=1)
    main = {
        "candidates": candidates,
        "scores": scores,
        "rating": rating,
        "injected": injected,
        # Logged positives the retriever found on its own (for recall@N).
        "retrieved_positive": retrieved_positive,
    }

    # GR2: the true next item is the first logged positive, time order.
    request = np.flatnonzero(positive.any(axis=1))
    first = positive[request].argmax(axis=1)[:, None]
    target = np.take_along_axis(logged_items[request], first, axis=1)
    if config.gr2_mode == "filter":
        # Only requests whose pre-ranked top K already holds the true next item.
        holds = (gr2_retrieved[request] == target).any(axis=1)
        request, first, target = request[holds], first[holds], target[holds]
    target_scores = np.take_along_axis(logged_scores[request], first, axis=1)
    gr2_candidates, _, gr2_injected = _inject(
        gr2_retrieved[request], gr2_scores[request], target, target_scores,
        np.ones_like(target, dtype=bool), config.inject_position,
        np.column_stack([stream_keys[request], np.ones_like(request)]),
    )  # fmt: skip
    gr2 = {
        "request": request.astype(np.int64),
        "candidates": gr2_candidates,
        "target_pos": (gr2_candidates == target).argmax(axis=1).astype(np.int64),
        "injected": gr2_injected.any(axis=1),
    }
    return main, gr2


def _user_features(ratings: MovieLensData, users: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """One-hot gender, ML-1M age group and occupation; none without demographics."""
    if not ratings.has_demographics:
        return np.zeros((len(users), 0), dtype=np.float32), ()
    age = ratings.user_age[users].astype(np.int64)
    if ratings.name != "ml-100k":  # ML-1M and the synthetic world use ML-1M's age codes
        age_group = np.searchsorted(ML1M_AGE_CODES, age)
    else:  # ML-100K gives ages in years: bucket them into ML-1M's age groups
        age_group = np.searchsorted(ML1M_AGE_CODES, age, side="right") - 1
        age_group = np.maximum(age_group, 0)
    blocks = [
        np.eye(2, dtype=np.float32)[ratings.user_gender[users]],
        np.eye(len(ML1M_AGE_CODES), dtype=np.float32)[age_group],
        np.eye(len(ratings.occupation_names), dtype=np.float32)[ratings.user_occupation[users]],
    ]
    names = (
        ("gender=F", "gender=M")
        + tuple(f"age>={code}" if code > 1 else "age<18" for code in ML1M_AGE_CODES)
        + tuple(f"occupation={name}" for name in ratings.occupation_names)
    )
    return np.concatenate(blocks, axis=1), names


def _item_features(ratings: MovieLensData, items: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Genre flags and the standardised release year (0 where unknown)."""
    year = ratings.item_year[items].astype(np.float64)
    known = ~np.isnan(year)
    standardised = np.zeros_like(year)
    if known.any():
        spread = year[known].std() or 1.0
        standardised[known] = (year[known] - year[known].mean()) / spread
    features = np.concatenate(
        [ratings.item_genres[items].astype(np.float32), standardised[:, None].astype(np.float32)],
        axis=1,
    )
    return features, tuple(f"genre={g}" for g in ratings.genre_names) + ("release_year_z",)


def compute_stats(data: RerankData, retrieved_positive: np.ndarray) -> dict[str, float]:
    """Summary numbers of processed data (stored in the cache metadata).

    Args:
        data: The processed data.
        retrieved_positive: bool ``[R, L]``: the logged slate's item is a positive
            that the retriever found on its own (not injected).
    """
    cfg = data.config
    stats: dict[str, float] = {
        "users": data.n_users,
        "items": data.n_items,
        "interactions": len(data.interaction_item),
        "positive_rate": float((data.interaction_rating >= cfg.click_threshold).mean()),
        "like_rate": float((data.interaction_rating >= cfg.like_threshold).mean()),
    }
    clicks = data.logged_clicks
    missed = clicks & ~retrieved_positive
    has_candidate_positive = data.candidate_positive.any(axis=1)
    for name in SPLITS:
        index = data.split_indices(name)
        stats[f"{name}_requests"] = len(index)
        total = clicks[index].sum()
        with_positive = index[clicks[index].any(axis=1)]
        stats[f"{name}_positives_per_request"] = (
            float(clicks[index].sum(axis=1).mean()) if len(index) else float("nan")
        )
        stats[f"{name}_recall_at_n"] = (
            float(retrieved_positive[index].sum() / total) if total else float("nan")
        )
        # Share of requests (with a positive) where a positive would have to be injected.
        stats[f"{name}_missed_positive_share"] = (
            float(missed[with_positive].any(axis=1).mean()) if len(with_positive) else float("nan")
        )
        stats[f"{name}_with_candidate_positive_share"] = (
            float(has_candidate_positive[index].mean()) if len(index) else float("nan")
        )
    test_positive = data.candidate_positive[data.split_indices("test")]
    stats["test_positive_mean_initial_rank"] = _mean(np.nonzero(test_positive)[1])

    gr2_test = data.request_split[data.gr2_request] == TEST
    pos = data.gr2_target_pos[gr2_test]
    stats["gr2_test_requests"] = int(gr2_test.sum())
    stats["gr2_test_recall_at_1"] = _mean(recall_at_k(pos, 1))
    stats["gr2_test_recall_at_5"] = _mean(recall_at_k(pos, 5))
    stats["gr2_test_ndcg_at_5"] = _mean(ndcg_at_k(pos, 5))
    stats["gr2_test_injected_share"] = _mean(data.gr2_injected[gr2_test])
    return stats


def _mean(values: np.ndarray) -> float:
    """Mean as a float, NaN (without a warning) for no values."""
    return float(values.mean()) if values.size else float("nan")
