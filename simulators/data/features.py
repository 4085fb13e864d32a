"""User and item side features of the processed data (one-hot demographics, genres, year)."""

from __future__ import annotations

import numpy as np

from simulators.data.movielens import ML1M_AGE_CODES, MovieLensData


def user_features(ratings: MovieLensData, users: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
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


def item_features(ratings: MovieLensData, items: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
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
