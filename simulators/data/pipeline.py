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

This module runs the steps (:func:`build_rerank_data`) and holds their output,
:class:`RerankData`; the stages live in their own modules: the choices in
:mod:`~simulators.data.pipeline_config`, steps 2-4 in :mod:`~simulators.data.splits`,
the retrievers in :mod:`~simulators.data.retrieval` (their top-k machinery in
:mod:`~simulators.data.top_k`), steps 6-7 in :mod:`~simulators.data.candidates`,
side features in :mod:`~simulators.data.features`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from simulators.data.candidates import build_candidates
from simulators.data.errors import ConfigError
from simulators.data.features import item_features, user_features
from simulators.data.movielens import MovieLensData
from simulators.data.pipeline_config import PipelineConfig
from simulators.data.retrieval import make_retriever
from simulators.data.splits import (
    SPLITS,
    TEST,
    TRAIN,
    k_core_mask,
    mix_hash,
    slates_and_split,
    split_code,
)
from simulators.data.top_k import RetrievalRequests, chunks_by_history, history_matrix
from simulators.metrics import ndcg_at_k, recall_at_k
from simulators.progress import progress_bar

# Bump whenever a change to this module or to the stages it calls (pipeline_config,
# splits, retrieval, top_k, candidates, features) changes its output for an
# unchanged config: the cache key includes it, so old cache files are not reused.
# tests/test_pipeline.py holds a golden digest that fails until it is bumped.
PIPELINE_VERSION = 3


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
        retriever_user_factors: ALS user factors, float32 ``[U, F]`` (``[U, 0]`` for
            other retrievers), fitted on the training interactions like the items'.
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
    retriever_user_factors: np.ndarray
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
        return np.flatnonzero(self.request_split == split_code(split))

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
    tie_break = mix_hash(ratings.user_ids[kept_users][user], raw_item[item], config.seed)
    order = np.lexsort((tie_break, time, user))
    user, item, rating, time = user[order], item[order], rating[order], time[order]
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=n_users), out=offsets[1:])
    steps.update()

    slate_user, slate_pos, slate_split, interaction_split = slates_and_split(offsets, time, config)
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
    for rows in chunks_by_history(history_starts, history_ends):
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
    requests, gr2 = build_candidates(
        retriever,
        RetrievalRequests(
            item, history_starts, history_ends, request_time, first_rated, popularity
        ),
        logged_items,
        logged_ratings,
        config,
        stream_keys,
        progress,
    )
    steps.update(2)
    steps.close()

    user_feature_values, user_names = user_features(ratings, kept_users)
    item_feature_values, item_names = item_features(ratings, kept_items)
    data = RerankData(
        name=ratings.name,
        config=config,
        user_ids=ratings.user_ids[kept_users],
        item_ids=raw_item,
        item_titles=ratings.item_titles[kept_items],
        user_features=user_feature_values,
        user_feature_names=user_names,
        item_features=item_feature_values,
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
        retriever_item_factors=retriever.item_representations(n_items),
        retriever_user_factors=retriever.user_representations(n_users),
    )
    stats = compute_stats(data, retrieved_positive=requests["retrieved_positive"])
    stats["dropped_requests_too_few_items"] = int((~enough).sum())
    return dataclasses.replace(data, stats=stats)


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
