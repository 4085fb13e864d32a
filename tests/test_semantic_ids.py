"""Semantic IDs: residual K-means codes, collision handling, the report."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.data.errors import ConfigError
from simulators.data.semantic_ids import (
    SemanticIdConfig,
    fit_rq_kmeans,
    fit_semantic_ids,
    resolve_collisions,
    semantic_id_report,
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


@pytest.mark.parametrize("method", ["rq-kmeans", "rq-vae"])
def test_ml100k_items_get_unique_codes_that_use_every_level(task, method) -> None:
    """Issue 17's target on ML-100K: uniqueness >= 99%, >= 90% of codes used per level.

    Input: item content (genres, year) and the learned item vector, as the task holds
    them; fitted on the items of the training slates.
    """
    pool = task.pool
    fit_rows = np.unique(pool.logged_items[pool.split_indices("train")])
    config = SemanticIdConfig(method=method, levels=3, codebook_size=64, epochs=100)
    ids = fit_semantic_ids(task.item_table, fit_rows, config)
    genres = pool.item_features[:, :-1] > 0.5  # genre flags, then the standardised year
    report = semantic_id_report(ids, task.item_table, genres)
    assert report["uniqueness"] >= 0.99
    assert min(report["usage"]) >= 0.9
    assert report["reconstruction_error"] < 0.2
    assert report["genre_first_code"] > 3 * report["random_first_code"]  # codes know genres


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
