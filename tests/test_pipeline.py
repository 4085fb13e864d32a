"""The ratings-to-requests pipeline: splits, slates, histories, candidates, leaks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from simulators.data import retrieval as retrieval_module
from simulators.data import top_k as top_k_module
from simulators.data.datasets import load_rerank_data
from simulators.data.movielens import load_ml1m
from simulators.data.pipeline import PIPELINE_VERSION, RerankData, build_rerank_data
from simulators.data.pipeline_config import PipelineConfig
from simulators.data.retrieval import make_retriever
from simulators.data.splits import TEST, TRAIN, VALID, k_core_mask
from simulators.data.top_k import RetrievalRequests, full_scores, history_matrix, top_items

GOLDEN_DIGEST = "26e54271d34707fb"


@pytest.fixture(scope="module")
def data(ml100k_ratings) -> RerankData:
    return build_rerank_data(ml100k_ratings, PipelineConfig(), progress=False)


@pytest.fixture(scope="module")
def injected(ml100k_ratings) -> RerankData:
    """Missed logged positives injected at random slots (an opt-in mode)."""
    return build_rerank_data(ml100k_ratings, PipelineConfig(inject="positives"), progress=False)


def _user_sequences(data: RerankData):
    for u in range(data.n_users):
        yield u, slice(data.user_offsets[u], data.user_offsets[u + 1])


# ---------------------------------------------------------------- k-core and labels


def test_k_core_mask_cascades_until_stable() -> None:
    # Item 2 has one rating -> removed; then user 1 is left with one rating -> removed.
    # Item 1 keeps two ratings (users 0 and 2), so the cascade stops there.
    user = np.array([0, 0, 1, 1, 2, 2, 0, 2])
    item = np.array([0, 3, 1, 2, 0, 3, 1, 1])
    keep = k_core_mask(user, item, k=2)
    assert keep.tolist() == [True, True, False, False, True, True, True, True]
    # With k = 3 item 0 and item 3 (two ratings each) go, which takes everyone down.
    assert not k_core_mask(user, item, k=3).any()


def test_every_user_and_item_meets_k_core(data: RerankData) -> None:
    k = data.config.k_core
    assert np.diff(data.user_offsets).min() >= k
    assert np.bincount(data.interaction_item, minlength=data.n_items).min() >= k
    assert data.n_users == 943 and data.n_items < 1682  # ML-100K users are all 20-core


def test_labels_follow_thresholds(data: RerankData) -> None:
    assert (data.logged_clicks == (data.logged_ratings >= 4)).all()
    assert data.stats["positive_rate"] == pytest.approx((data.interaction_rating >= 4).mean())


# ---------------------------------------------------------------- time order and split


def test_interactions_are_time_ordered_and_splits_never_go_back_in_time(data: RerankData) -> None:
    for _, seq in _user_sequences(data):
        assert (np.diff(data.interaction_time[seq]) >= 0).all()
        split = data.interaction_split[seq]
        assert (np.diff(split) >= 0).all(), "a train interaction comes after a valid/test one"


def test_slates_are_consecutive_windows_from_the_first_rating(data: RerankData) -> None:
    length = data.config.slate_length
    start = data.user_offsets[data.request_user] + data.request_seq_pos
    for offset in range(length):
        assert (data.logged_items[:, offset] == data.interaction_item[start + offset]).all()
        assert (data.interaction_split[start + offset] == data.request_split).all()
    assert (data.request_time == data.interaction_time[start]).all()
    # Each user's slates tile the sequence from its start; fewer than L ratings remain.
    # Only slates at the very start of the log (too few items rated by anyone yet to
    # offer N candidates) are dropped, so what is kept is a suffix of the tiling.
    dropped = 0
    for u, seq in _user_sequences(data):
        pos = np.sort(data.request_seq_pos[data.request_user == u])
        tiling = list(range(0, seq.stop - seq.start - length + 1, length))
        assert pos.tolist() == tiling[len(tiling) - len(pos) :]
        dropped += len(tiling) - len(pos)
    assert dropped == data.stats["dropped_requests_too_few_items"]
    assert dropped < 0.01 * data.n_requests


def test_each_user_with_three_slates_has_valid_and_test_as_the_latest(data: RerankData) -> None:
    for u in range(data.n_users):
        mine = np.flatnonzero(data.request_user == u)
        split = data.request_split[mine[np.argsort(data.request_seq_pos[mine])]]
        if len(mine) >= 3:
            assert split[-1] == TEST and VALID in split and split[0] == TRAIN
        else:
            assert (split == TRAIN).all()
    assert len(data.split_indices("test")) > 1000


def test_global_split_keeps_all_training_data_before_every_later_slate(ml100k_ratings) -> None:
    data = build_rerank_data(ml100k_ratings, PipelineConfig(split="global"), progress=False)
    train_time = data.interaction_time[data.interaction_split == TRAIN]
    later = data.request_split != TRAIN
    end = data.user_offsets[data.request_user] + data.request_seq_pos + data.config.slate_length - 1
    assert train_time.max() < data.interaction_time[end[later]].min()
    assert len(data.split_indices("test")) > 0 and len(data.split_indices("valid")) > 0


# ---------------------------------------------------------------- histories and candidates


def test_history_is_the_past_only(data: RerankData) -> None:
    requests = np.arange(0, data.n_requests, 7)
    items, lengths = data.history(requests, max_length=20)
    assert items.shape == (len(requests), 20)
    for row, r in enumerate(requests):
        seq_start = data.user_offsets[data.request_user[r]]
        expected = data.interaction_item[seq_start : seq_start + data.request_seq_pos[r]][-20:]
        assert lengths[row] == len(expected)
        assert items[row, : lengths[row]].tolist() == expected.tolist()
        assert (items[row, lengths[row] :] == -1).all()
        assert not set(expected) & set(data.logged_items[r])


def _check_candidates(data: RerankData) -> None:
    n = data.config.num_candidates
    assert data.candidates.shape == (data.n_requests, n)
    ordered = np.sort(data.candidates, axis=1)
    assert (np.diff(ordered, axis=1) > 0).all(), "a candidate appears twice in a request"
    assert np.isfinite(data.candidate_scores).all()
    for r in range(0, data.n_requests, 13):
        seq_start = data.user_offsets[data.request_user[r]]
        history = data.interaction_item[seq_start : seq_start + data.request_seq_pos[r]]
        assert not np.isin(data.candidates[r], history).any()
        logged = dict(
            zip(data.logged_items[r].tolist(), data.logged_ratings[r].tolist(), strict=True)
        )
        for c, rating in zip(
            data.candidates[r].tolist(), data.candidate_rating[r].tolist(), strict=True
        ):
            assert rating == logged.get(c, 0)


def test_candidates_are_distinct_retrievable_and_outside_the_history(data: RerankData) -> None:
    _check_candidates(data)
    assert not data.candidate_injected.any()
    assert (data.candidate_positive.sum(axis=1) <= data.logged_clicks.sum(axis=1)).all()
    # Every candidate had a training rating at or before the request time.
    train = data.interaction_split == TRAIN
    first = np.full(data.n_items, np.iinfo(np.int64).max)
    np.minimum.at(first, data.interaction_item[train], data.interaction_time[train])
    assert (first[data.candidates] <= data.request_time[:, None]).all()


def test_injection_puts_every_logged_positive_among_the_candidates(injected: RerankData) -> None:
    _check_candidates(injected)
    assert (injected.candidate_positive.sum(axis=1) == injected.logged_clicks.sum(axis=1)).all()


def test_candidates_follow_retriever_order_with_ties_by_item_index(data: RerankData) -> None:
    scores, items = data.candidate_scores, data.candidates
    assert (np.diff(scores, axis=1) <= 0).all()
    tied = np.diff(scores, axis=1) == 0
    assert tied.any()  # popularity fallback rows have ties
    assert (np.diff(items, axis=1)[tied] > 0).all()


def test_top_items_is_a_total_order() -> None:
    scores = np.zeros((2, 9), dtype=np.float32)
    scores[1, [2, 5, 7]] = 1.0
    assert top_items(scores, 4).tolist() == [[0, 1, 2, 3], [2, 5, 7, 0]]


@pytest.mark.parametrize("values", ["distinct", "few levels", "few levels and -inf"])
def test_top_items_equals_the_stable_sort(values: str) -> None:
    # topk's choice among tied items is arbitrary; top_items must not be.
    rng = np.random.default_rng(len(values))
    for _ in range(200):
        rows, items = int(rng.integers(1, 20)), int(rng.integers(1, 60))
        size = int(rng.integers(1, items + 1))
        if values == "distinct":
            scores = rng.normal(size=(rows, items)).astype(np.float32)
        else:
            scores = rng.integers(0, 4, size=(rows, items)).astype(np.float32)
        if values.endswith("-inf"):
            scores[rng.random((rows, items)) < 0.3] = -np.inf
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :size]
        np.testing.assert_array_equal(top_items(scores, size), expected)


def test_first_slates_fall_back_to_training_popularity(data: RerankData) -> None:
    first = np.flatnonzero(data.request_seq_pos == 0)
    assert len(first) > 100
    train = data.interaction_split == TRAIN
    popularity = np.bincount(data.interaction_item[train], minlength=data.n_items)
    np.testing.assert_array_equal(data.candidate_scores[first], popularity[data.candidates[first]])


def _ndcg_at(relevance: np.ndarray, order: np.ndarray, k: int) -> float:
    """Mean NDCG@k of binary relevance [R, N] when each row is shown in ``order``."""
    gains = np.take_along_axis(relevance, order, axis=1)[:, :k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.sort(relevance, axis=1)[:, ::-1][:, :k]
    return float(((gains * discount).sum(1) / (ideal * discount).sum(1)).mean())


def _leak_probes(data: RerankData) -> dict[str, float]:
    test = data.split_indices("test")
    test = test[data.candidate_positive[test].any(axis=1)]
    relevance = data.candidate_positive[test].astype(float)
    train = data.interaction_split == TRAIN
    popularity = np.bincount(data.interaction_item[train], minlength=data.n_items)
    initial = np.tile(np.arange(data.config.num_candidates), (len(test), 1))
    least_popular = np.argsort(popularity[data.candidates[test]], axis=1, kind="stable")
    lowest_score = np.argsort(data.candidate_scores[test], axis=1, kind="stable")
    return {
        "initial": _ndcg_at(relevance, initial, 6),
        "least_popular": _ndcg_at(relevance, least_popular, 6),
        "lowest_score": _ndcg_at(relevance, lowest_score, 6),
    }


def test_default_candidates_carry_no_injection_leak(data: RerankData) -> None:
    probes = _leak_probes(data)
    # Knowing nothing of the user, "least popular" or "lowest retriever score first"
    # must not find logged positives better than the retriever's own order.
    assert probes["least_popular"] < probes["initial"]
    assert probes["lowest_score"] < probes["initial"]


def test_injection_leak_is_real_and_documented(injected: RerankData) -> None:
    # Why inject="none" is the default: with injection, a model-free "lowest retriever
    # score first" order beats the retriever's own order by a wide margin.
    probes = _leak_probes(injected)
    assert probes["lowest_score"] > 2 * probes["initial"]


def test_random_injection_hides_injected_items_among_all_slots(injected: RerankData) -> None:
    slots = np.nonzero(injected.candidate_injected)[1]
    n = injected.config.num_candidates
    assert len(slots) > 1000
    # Uniform slots: mean (N - 1) / 2 with a standard error of about 0.3 here.
    assert abs(slots.mean() - (n - 1) / 2) < 2.0
    assert (injected.candidate_positive[injected.candidate_injected]).all()


def test_score_injection_puts_injected_items_at_their_score_rank(ml100k_ratings) -> None:
    data = build_rerank_data(
        ml100k_ratings,
        PipelineConfig(inject="positives", inject_position="score"),
        progress=False,
    )
    assert (np.diff(data.candidate_scores, axis=1) <= 0).all()
    slots = np.nonzero(data.candidate_injected)[1]
    assert slots.mean() > 0.8 * data.config.num_candidates


def _check_gr2(data: RerankData) -> None:
    k = data.config.gr2_candidates
    assert data.gr2_candidates.shape == (len(data.gr2_request), k)
    assert (np.diff(np.sort(data.gr2_candidates, axis=1), axis=1) > 0).all()
    clicks = data.logged_clicks[data.gr2_request]
    first_positive = data.logged_items[data.gr2_request, clicks.argmax(axis=1)]
    chosen = data.gr2_candidates[np.arange(len(data.gr2_request)), data.gr2_target_pos]
    assert (chosen == first_positive).all()


def test_gr2_filter_mode_keeps_pre_ranked_lists_that_hold_the_next_item(data: RerankData) -> None:
    _check_gr2(data)
    assert data.config.gr2_mode == "filter" and not data.gr2_injected.any()
    # Exactly the retriever's top K: its own order (the N list starts with the same items
    # wherever nothing was injected).
    plain = ~data.candidate_injected[data.gr2_request, :10].any(axis=1)
    assert plain.sum() > 100
    np.testing.assert_array_equal(
        data.gr2_candidates[plain], data.candidates[data.gr2_request[plain], :10]
    )
    assert 100 < data.stats["gr2_test_requests"] < len(data.split_indices("test"))


def test_gr2_inject_mode_covers_every_request_with_a_positive(ml100k_ratings) -> None:
    data = build_rerank_data(
        ml100k_ratings, PipelineConfig(gr2_mode="inject", retriever="pop"), progress=False
    )
    _check_gr2(data)
    assert (np.flatnonzero(data.logged_clicks.any(axis=1)) == data.gr2_request).all()
    assert data.gr2_injected.mean() > 0.5


def test_summary_reports_recall_and_missed_positives(data: RerankData) -> None:
    text = data.summary()
    assert "recall@50, test" in text and "a positive the retriever missed" in text
    s = data.stats
    assert 0.0 < s["test_recall_at_n"] < 1.0
    assert 0.0 < s["test_missed_positive_share"] < 1.0
    # Without injection, a request has a candidate positive only if one was retrieved.
    test = data.split_indices("test")
    assert s["test_with_candidate_positive_share"] == pytest.approx(
        data.candidate_positive[test].any(axis=1).mean()
    )


# ---------------------------------------------------------------- leaks and determinism


@pytest.mark.parametrize(
    ("split", "retriever"), [("user", "mf"), ("global", "itemknn")], ids=["user-mf", "global-knn"]
)
def test_nothing_from_valid_or_test_reaches_the_retriever(ml100k_ratings, split, retriever) -> None:
    """Rewrite every later-than-training interaction; training outputs must not move."""
    config = PipelineConfig(k_core=1, mf_iterations=3, split=split, retriever=retriever)
    base = build_rerank_data(ml100k_ratings, config, progress=False)
    raw = ml100k_ratings
    # Per user, the last training timestamp; interactions strictly after it are rewritten
    # (a tie with a training interaction is neither past nor future, so it is left alone).
    train = base.interaction_split == TRAIN
    owner = np.repeat(np.arange(base.n_users), np.diff(base.user_offsets))
    last_train = np.full(base.n_users, -1, dtype=np.int64)
    np.maximum.at(last_train, owner[train], base.interaction_time[train])
    raw_user = np.searchsorted(base.user_ids, raw.user_ids[raw.user])
    later = raw.timestamp > last_train[raw_user]
    assert later.sum() > 10_000
    rng = np.random.default_rng(0)
    item = raw.item.copy()
    for u in np.unique(raw.user[later]):
        mine = raw.user == u
        unrated = np.setdiff1d(np.arange(raw.n_items), raw.item[mine])
        rows = np.flatnonzero(mine & later)
        item[rows] = rng.choice(unrated, size=len(rows), replace=False)
    changed = build_rerank_data(dataclasses.replace(raw, item=item), config, progress=False)
    assert changed.n_items == base.n_items  # k_core=1 and the catalogue is u.item
    np.testing.assert_array_equal(changed.retriever_item_factors, base.retriever_item_factors)
    np.testing.assert_array_equal(changed.request_split, base.request_split)
    train_requests = base.split_indices("train")
    np.testing.assert_array_equal(
        changed.candidates[train_requests], base.candidates[train_requests]
    )
    test_requests = base.split_indices("test")
    assert not np.array_equal(changed.logged_items[test_requests], base.logged_items[test_requests])


def test_same_config_gives_identical_data_and_seed_changes_randomness(
    ml100k_ratings, injected
) -> None:
    config = PipelineConfig(inject="positives")
    first = injected  # the module's build with this config
    second = build_rerank_data(ml100k_ratings, config, progress=False)
    for field in dataclasses.fields(RerankData):
        value = getattr(first, field.name)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, getattr(second, field.name), err_msg=field.name)
    other = build_rerank_data(ml100k_ratings, dataclasses.replace(config, seed=1), progress=False)
    # The seed orders same-second ratings and picks injection slots.
    assert not np.array_equal(first.interaction_item, other.interaction_item)
    assert not np.array_equal(first.candidates, other.candidates)


def test_same_second_ratings_are_not_ordered_by_item_id(data: RerankData) -> None:
    same_second = np.diff(data.interaction_time) == 0
    same_user = np.diff(np.repeat(np.arange(data.n_users), np.diff(data.user_offsets))) == 0
    pairs = same_second & same_user
    rising = np.diff(data.item_ids[data.interaction_item]) > 0
    # With item-id tie-breaks this share would be 1; with a hash it is about one half.
    assert 0.4 < rising[pairs].mean() < 0.6


def test_pipeline_output_is_pinned_to_its_version(tmp_path: Path) -> None:
    """Fails when the pipeline's output changes: then bump PIPELINE_VERSION and the digest."""
    import hashlib

    folder = _write_ml1m_world(tmp_path / "ml-1m")
    config = PipelineConfig(
        num_candidates=20, gr2_candidates=5, retriever="pop", inject="positives"
    )
    data = build_rerank_data(load_ml1m(folder), config, progress=False)
    digest = hashlib.sha256()
    arrays = (
        "interaction_item",
        "interaction_split",
        "request_seq_pos",
        "candidates",
        "candidate_rating",
        "candidate_injected",
        "gr2_request",
        "gr2_candidates",
    )
    for name in arrays:
        digest.update(np.ascontiguousarray(getattr(data, name)).astype(np.int64).tobytes())
    assert (PIPELINE_VERSION, digest.hexdigest()[:16]) == (PIPELINE_VERSION, GOLDEN_DIGEST), (
        "the pipeline's output changed: bump PIPELINE_VERSION in simulators/data/pipeline.py "
        f"and set GOLDEN_DIGEST = {digest.hexdigest()[:16]!r}"
    )


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"num_candidates": 4}, "num_candidates (4) must be >= slate_length (6)"),
        ({"k_core": 0}, "k_core must be >= 1, got 0"),
        ({"valid_fraction": 0.5, "test_fraction": 0.5}, "sum to < 1"),
        ({"retriever": "bm25"}, "retriever must be one of ('mf', 'itemknn', 'pop'), got 'bm25'"),
        ({"k_core": 2.5}, "k_core must be an integer, got 2.5"),
        (
            {"like_threshold": 3},
            "like_threshold must be a rating in half stars from click_threshold (4) to 5",
        ),
        ({"click_threshold": 3.7}, "click_threshold must be a rating 0.5-5 in half stars, got 3.7"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"mf_factors": 0}, "mf_factors must be >= 1, got 0"),
        ({"click_threshold": 6}, "click_threshold must be a rating 0.5-5 in half stars, got 6"),
        ({"gr2_candidates": 60}, "gr2_candidates must be in [2, num_candidates], got 60"),
    ],
)
def test_invalid_config_names_the_value(kwargs, text) -> None:
    with pytest.raises(ValueError) as err:
        PipelineConfig(**kwargs)
    assert text in str(err.value)


def test_k_core_that_removes_everything_is_an_error(ml100k_ratings) -> None:
    with pytest.raises(ValueError, match="k_core=10000 removes every rating"):
        build_rerank_data(ml100k_ratings, PipelineConfig(k_core=10000), progress=False)


# ---------------------------------------------------------------- ML-1M format end to end


def _write_ml1m_world(folder: Path, n_users: int = 40, n_items: int = 60) -> Path:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    genres = ["Action", "Comedy", "Drama", "Sci-Fi"]
    movies = [
        f"{i + 1}::Movie {i} ({1980 + i % 20})::{genres[i % 4]}|{genres[(i + 1) % 4]}"
        for i in range(n_items)
    ]
    users = [
        f"{u + 1}::{'MF'[u % 2]}::{(1, 18, 25, 35, 45, 50, 56)[u % 7]}::{u % 21}::0000{u}"
        for u in range(n_users)
    ]
    ratings = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, size=30, replace=False)):
            ratings.append(f"{u + 1}::{i + 1}::{rng.integers(1, 6)}::{978300000 + 100 * t + u}")
    for name, lines in (("movies.dat", movies), ("users.dat", users), ("ratings.dat", ratings)):
        (folder / name).write_text("\n".join(lines) + "\n", encoding="latin-1")
    return folder


def test_ml1m_format_runs_through_the_pipeline_and_cache(tmp_path: Path) -> None:
    folder = _write_ml1m_world(tmp_path / "ml-1m")
    config = PipelineConfig(num_candidates=20, gr2_candidates=5, mf_factors=8)
    data = load_rerank_data("ml-1m", tmp_path, config, progress=False)
    raw = load_ml1m(folder)
    assert data.n_users == 40
    assert data.n_requests + data.stats["dropped_requests_too_few_items"] == 40 * 5
    assert data.user_features.shape == (40, 2 + 7 + 21)
    # Age-group one-hot matches the ML-1M code of each user.
    age_columns = data.user_features[:, 2:9].argmax(axis=1)
    assert (np.array((1, 18, 25, 35, 45, 50, 56))[age_columns] == raw.user_age).all()
    assert data.item_features.shape[1] == len(raw.genre_names) + 1
    _check_candidates(data)
    again = load_rerank_data("ml-1m", folder, config, progress=False)
    np.testing.assert_array_equal(again.candidates, data.candidates)


@pytest.mark.parametrize("retriever", ["mf", "itemknn", "pop"])
def test_prefix_scores_equal_history_matrix_scores(retriever: str) -> None:
    # The request builder scores prefixes of users' sequences (ALS adds each slate's
    # terms to running sums); any order of requests must give score()'s numbers.
    rng = np.random.default_rng(0)
    model = make_retriever(retriever, factors=16, iterations=3)
    model.fit(rng.integers(0, 50, 5000), rng.integers(0, 300, 5000), 50, 300)
    items = rng.integers(0, 300, 3000)
    # 40 users' sequences, one request per 6-item slate: histories [start, start + 6j).
    lengths = rng.integers(0, 150, 40)
    user_starts = np.r_[0, np.cumsum(lengths)[:-1]]
    slates = [np.arange(0, n, 6) for n in lengths]
    starts = np.repeat(user_starts, [len(j) for j in slates])
    ends = starts + np.concatenate(slates)
    for order in (np.arange(len(starts)), rng.permutation(len(starts))):
        prefixes = (items, starts[order], ends[order])
        expected = model.score(history_matrix(*prefixes, 300))
        np.testing.assert_array_equal(model.score_prefixes(*prefixes), expected)


@pytest.mark.parametrize("duplicated", [False, True])
def test_float32_retrieval_with_float64_certificate_equals_float64_retrieval(
    duplicated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ALS retriever scores in float32 and re-scores each row's best candidates in
    # float64; the ranking must be the float64 one. Duplicated items tie with items
    # outside the candidates, which no bound can separate: those rows must fall back
    # to a full float64 scoring (counted) and still give the float64 ranking.
    # (The float32 path is not the same code as the reference: score_prefixes.)
    rng = np.random.default_rng(1)
    n_items = 300
    model = make_retriever("mf", factors=16, iterations=3)
    model.fit(rng.integers(0, 50, 5000), rng.integers(0, n_items, 5000), 50, n_items)
    if duplicated:  # 15 distinct items, 20 copies each
        model.item_factors[:] = model.item_factors[rng.integers(0, 15, n_items)]
    items = rng.integers(0, n_items, 4000)
    lengths = rng.integers(0, 150, 40)
    user_starts = np.r_[0, np.cumsum(lengths)[:-1]]
    slates = [np.arange(0, n, 6) for n in lengths]
    starts = np.repeat(user_starts, [len(j) for j in slates])
    ends = starts + np.concatenate(slates)
    # Popularity scores the empty histories: tied counts where duplicated.
    popularity = rng.integers(0, 20, n_items) if duplicated else rng.permutation(n_items)
    popularity = popularity.astype(np.float32)
    requests = RetrievalRequests(
        items,
        starts,
        ends,
        time=rng.integers(50, 150, len(starts)),
        available_from=rng.integers(0, 100, n_items),
        fallback=popularity,
    )
    rows = slice(0, len(starts))
    logged = rng.integers(0, n_items, (len(starts), 6))
    reference = full_scores(model.score_prefixes, requests, rows)
    expected_logged = np.take_along_axis(reference, logged, axis=1)
    requests.mask(rows, reference)
    expected = top_items(reference, 20)

    full_scorings = []  # rows per full float64 scoring
    original = retrieval_module.item_scores
    monkeypatch.setattr(
        retrieval_module,
        "item_scores",
        lambda users, *rest: full_scorings.append(len(users)) or original(users, *rest),
    )
    top, top_scores, logged_scores = model.top_k(requests, 20, logged)
    np.testing.assert_array_equal(top, expected)
    np.testing.assert_array_equal(top_scores, np.take_along_axis(reference, expected, axis=1))
    np.testing.assert_array_equal(logged_scores, expected_logged)
    if duplicated:  # rows scored in full
        assert sum(full_scorings) > 10
    else:
        assert sum(full_scorings) < len(starts) // 10


@pytest.mark.parametrize("retriever", ["mf", "itemknn", "pop"])
def test_every_retriever_retrieves_its_own_top_k(retriever: str) -> None:
    # The pipeline asks the retriever for its top k; each one's answer is the best
    # available items outside the history by its own scores (ALS: certified float32).
    rng = np.random.default_rng(2)
    n_items = 200
    model = make_retriever(retriever, factors=8, iterations=2, neighbors=20)
    model.fit(rng.integers(0, 40, 3000), rng.integers(0, n_items, 3000), 40, n_items)
    items = rng.integers(0, n_items, 2000)
    starts = np.repeat([0, 500, 1000], 10)
    ends = starts + np.tile(np.arange(0, 60, 6), 3)
    requests = RetrievalRequests(
        items,
        starts,
        ends,
        time=rng.integers(50, 150, len(starts)),
        available_from=rng.integers(0, 100, n_items),
        fallback=rng.permutation(n_items).astype(np.float32),
    )
    rows = slice(0, len(starts))
    logged = rng.integers(0, n_items, (len(starts), 6))
    reference = full_scores(model.score_prefixes, requests, rows)
    expected_logged = np.take_along_axis(reference, logged, axis=1)
    requests.mask(rows, reference)
    expected = top_items(reference, 12)
    top, top_scores, logged_scores = model.top_k(requests, 12, logged, workers=2)
    np.testing.assert_array_equal(top, expected)
    np.testing.assert_array_equal(top_scores, np.take_along_axis(reference, expected, axis=1))
    np.testing.assert_array_equal(logged_scores, expected_logged)
    assert np.isneginf(top_scores).sum() == 0  # enough available items outside histories
    # What a reranker may read of the retriever: ALS's item factors, the others none.
    vectors = model.item_representations(n_items)
    assert vectors.dtype == np.float32 and vectors.shape == (n_items, 8 if retriever == "mf" else 0)


def test_retrieval_threads_give_the_same_requests(ml100k_ratings, data) -> None:
    # Chunks run on two threads by default; one thread must give every array the same.
    original = top_k_module.chunked_top_k
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            retrieval_module,
            "chunked_top_k",
            lambda *args, **kwargs: original(*args, **{**kwargs, "workers": 1}),
        )
        single = build_rerank_data(ml100k_ratings, PipelineConfig(), progress=False)
    np.testing.assert_array_equal(single.candidates, data.candidates)
    np.testing.assert_array_equal(single.candidate_scores, data.candidate_scores)
