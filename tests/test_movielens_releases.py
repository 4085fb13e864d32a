"""The later MovieLens releases (ML-10M ``::``, ML-20M on CSV) on files written from ML-100K.

The real ML-100K ratings are written in each release's format (half stars on every
other timestamp, ML-100K genres renamed to the later vocabulary, an item without
genres as ``(no genres listed)``), loaded back with the release's loader, and
compared with what was written; then broken copies test every error path.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from simulators.data import PipelineConfig
from simulators.data.datasets import load_rerank_data
from simulators.data.errors import DataFormatError, DataNotFoundError
from simulators.data.movielens import (
    CSV_RELEASES,
    ML10M_GENRES,
    NO_GENRES,
    MovieLensData,
    load_ml1m,
    load_ml10m,
    load_movielens,
    load_movielens_csv,
)
from simulators.factory import SimulatorSpec, build_simulator
from simulators.training import fit_simulator

# ML-100K's genre names in the later releases' vocabulary ("unknown" has no counterpart).
_RENAMED = {"Children's": "Children"}


def _genre_field(ml100k: MovieLensData, item: int) -> str:
    names = [
        _RENAMED.get(ml100k.genre_names[g], ml100k.genre_names[g])
        for g in np.flatnonzero(ml100k.item_genres[item])
        if ml100k.genre_names[g] != "unknown"
    ]
    return "|".join(names) or NO_GENRES


def _expected_ratings(ml100k: MovieLensData) -> np.ndarray:
    """Half a star less on odd timestamps, so every value 0.5-5 occurs."""
    return ml100k.rating.astype(np.float32) - 0.5 * (ml100k.timestamp % 2)


def _write(ml100k: MovieLensData, folder: Path, release: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stars = _expected_ratings(ml100k)
    raw_user, raw_item = ml100k.user_ids[ml100k.user], ml100k.item_ids[ml100k.item]
    if release == "ml-10m":
        movies = "".join(
            f"{ml100k.item_ids[i]}::{ml100k.item_titles[i]}::{_genre_field(ml100k, i)}\n"
            for i in range(ml100k.n_items)
        )
        # ML-10M writes whole stars without a decimal ("5"), half stars as "3.5".
        ratings = "".join(
            f"{u}::{i}::{r:g}::{t}\n"
            for u, i, r, t in zip(raw_user, raw_item, stars, ml100k.timestamp, strict=True)
        )
        (folder / "movies.dat").write_text(movies, encoding="utf-8")
        (folder / "ratings.dat").write_text(ratings)
        return folder
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["movieId", "title", "genres"])
    for i in range(ml100k.n_items):
        writer.writerow([ml100k.item_ids[i], ml100k.item_titles[i], _genre_field(ml100k, i)])
    (folder / "movies.csv").write_text(buffer.getvalue(), encoding="utf-8")
    ratings = "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{r:.1f},{t}\n"
        for u, i, r, t in zip(raw_user, raw_item, stars, ml100k.timestamp, strict=True)
    )
    (folder / "ratings.csv").write_text(ratings)
    return folder


@pytest.fixture(scope="module")
def written(ml100k_ratings, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("releases")
    return {
        "ml-10m": _write(ml100k_ratings, root / "ml-10M100K", "ml-10m"),
        "ml-25m": _write(ml100k_ratings, root / "ml-25m", "ml-25m"),
    }


@pytest.mark.parametrize("release", ["ml-10m", "ml-25m"])
def test_release_loads_back_what_was_written(written, ml100k_ratings, release) -> None:
    ml100k = ml100k_ratings
    data = load_movielens(release, written[release].parent)  # found by its folder name
    assert data.name == release and not data.has_demographics
    assert data.user_age is None and data.occupation_names == ()
    assert (data.n_users, data.n_items, data.n_ratings) == (943, 1682, 100_000)
    np.testing.assert_array_equal(data.user, ml100k.user)
    np.testing.assert_array_equal(data.item, ml100k.item)
    np.testing.assert_array_equal(data.timestamp, ml100k.timestamp)
    assert data.rating.dtype == np.float32
    np.testing.assert_array_equal(data.rating, _expected_ratings(ml100k))
    assert set(np.unique(data.rating).tolist()) == {0.5 * k for k in range(1, 11)}
    np.testing.assert_array_equal(data.item_titles, ml100k.item_titles)  # commas, quotes
    assert data.genre_names == ML10M_GENRES
    for genre in ML10M_GENRES:
        old = {"Children": "Children's"}.get(genre, genre)
        column = data.item_genres[:, ML10M_GENRES.index(genre)]
        if old in ml100k.genre_names:
            np.testing.assert_array_equal(
                column, ml100k.item_genres[:, ml100k.genre_names.index(old)]
            )
        else:
            assert not column.any()  # IMAX
    # Items whose only ML-100K genre is "unknown" were written as "(no genres listed)".
    unknown_only = ml100k.item_genres[:, 0] & (ml100k.item_genres.sum(axis=1) == 1)
    assert unknown_only.any() and not data.item_genres[unknown_only].any()
    assert data.item_year[0] == 1995  # "Toy Story (1995)": the year from the title


def test_every_csv_release_name_reads_the_csv_format(written, ml100k_ratings) -> None:
    for release in CSV_RELEASES:
        data = load_movielens_csv(written["ml-25m"], release)
        assert data.name == release and data.n_ratings == 100_000
    with pytest.raises(ValueError, match="name must be one of .*'ml-20m'.*got 'ml-10m'"):
        load_movielens_csv(written["ml-25m"], "ml-10m")


def test_half_star_threshold_and_no_demographics_through_the_pipeline(
    written, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("RERANK_ENV_CACHE", str(tmp_path / "cache"))
    small = dict(num_candidates=20, mf_factors=8, mf_iterations=2, gr2_candidates=10)
    whole = load_rerank_data("ml-25m", written["ml-25m"], PipelineConfig(**small), progress=False)
    half = load_rerank_data(
        "ml-25m", written["ml-25m"], PipelineConfig(click_threshold=3.5, **small), progress=False
    )
    assert whole.user_features.shape == (whole.n_users, 0) and whole.user_feature_names == ()
    assert whole.logged_ratings.dtype == np.float32
    # 3.5 stars is a click at threshold 3.5, not at 4: labels follow the stars exactly.
    at_35 = whole.logged_ratings == 3.5
    assert at_35.any()
    assert not whole.logged_clicks[at_35].any() and half.logged_clicks[at_35].all()
    assert half.stats["positive_rate"] > whole.stats["positive_rate"]
    # 4 and 4.0 are one configuration (one cache file).
    assert PipelineConfig(click_threshold=4.0).to_json() == PipelineConfig().to_json()

    # A learned simulator fits on users without features, with no warning.
    spec = SimulatorSpec.for_data(whole, "pbm", dim=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_simulator(
            spec, torch.as_tensor(whole.user_features), torch.as_tensor(whole.item_features)
        )
    result = fit_simulator(model, whole, epochs=2, progress=False)
    assert np.isfinite(result.valid_nll).all() and result.valid_nll[-1] < result.valid_nll[0]


def test_ml1m_accepts_no_genres(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_text(
        f"1::Toy Story (1995)::Comedy\n2::Nothing (1996)::{NO_GENRES}\n"
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n")
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978300761\n")
    data = load_ml1m(folder)
    assert data.item_genres[0].any() and not data.item_genres[1].any()


# ------------------------------------------------------------------------- broken files

MOVIES = (
    'movieId,title,genres\n1,Toy Story (1995),Animation|Children|Comedy\n2,"Net, The (1995)",IMAX\n'
)
RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964981247\n"


def _csv_release(tmp_path: Path, movies: str = MOVIES, ratings: str = RATINGS) -> Path:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir(exist_ok=True)
    (folder / "movies.csv").write_text(movies)
    (folder / "ratings.csv").write_text(ratings)
    return folder


def _expect(call, name: str, line: int, *texts: str) -> None:
    with pytest.raises(DataFormatError) as err:
        call()
    assert err.value.path.name == name and err.value.line == line, str(err.value)
    for text in texts:
        assert text in str(err.value), str(err.value)


def test_small_csv_release_parses_quotes_and_half_stars(tmp_path: Path) -> None:
    _csv_release(tmp_path)
    data = load_movielens("ml-latest-small", tmp_path)
    assert data.item_titles.tolist() == ["Toy Story (1995)", "Net, The (1995)"]
    assert data.rating.tolist() == [4.0, 3.5]
    assert data.item_genres[1].tolist() == [g == "IMAX" for g in ML10M_GENRES]


@pytest.mark.parametrize(
    ("rating", "text"),
    [("4.3", "'4.3'"), ("0", "'0'"), ("0.0", "'0.0'"), ("5.5", "'5.5'"), ("four", "'four'")],
)
def test_rating_off_the_half_star_scale(tmp_path: Path, rating: str, text: str) -> None:
    folder = _csv_release(tmp_path, ratings=RATINGS.replace("3.5", rating))
    _expect(lambda: load_movielens_csv(folder), "ratings.csv", 3, "half stars", text)


def test_whole_star_release_refuses_half_stars(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n")
    (folder / "ratings.dat").write_text("1::1::3.5::978300760\n")
    _expect(lambda: load_ml1m(folder), "ratings.dat", 1, "'rating' must be an integer")


@pytest.mark.parametrize(
    ("genres", "text"),
    [
        ("Children's", 'unknown genre "Children\'s"'),
        (f"{NO_GENRES}|Drama", "unknown genre '(no genres listed)'"),
        ("Comedy|", "unknown genre ''"),
    ],
)
def test_unknown_genre(tmp_path: Path, genres: str, text: str) -> None:
    folder = _csv_release(tmp_path, movies=MOVIES.replace("Animation|Children|Comedy", genres))
    _expect(lambda: load_movielens_csv(folder), "movies.csv", 2, text, "alone")


def test_wrong_header_names_the_expected_one(tmp_path: Path) -> None:
    folder = _csv_release(tmp_path, ratings=RATINGS.replace("userId", "user"))
    _expect(lambda: load_movielens_csv(folder), "ratings.csv", 1, "userId,movieId,rating,timestamp")
    # An ML-10M-style file given as CSV: the header check names the mistake.
    folder = _csv_release(tmp_path, ratings="1::1::4::964982703\n")
    _expect(lambda: load_movielens_csv(folder), "ratings.csv", 1, "expected the header")


def test_bad_csv_rows(tmp_path: Path) -> None:
    folder = _csv_release(tmp_path, movies=MOVIES.replace('"Net, The (1995)"', "Net, The (1995)"))
    _expect(lambda: load_movielens_csv(folder), "movies.csv", 3, "expected 3", "found 4")
    folder = _csv_release(tmp_path, movies=MOVIES.replace('"Net, The (1995)"', '"Net, The (1995)'))
    with pytest.raises(DataFormatError, match="movies.csv"):
        load_movielens_csv(folder)
    folder = _csv_release(tmp_path, ratings=RATINGS.replace(",2,", ",7,"))
    _expect(
        lambda: load_movielens_csv(folder), "ratings.csv", 3, "item 7 is not listed in movies.csv"
    )
    folder = _csv_release(tmp_path, ratings=RATINGS.replace(",2,3.5", ",1,3.5"))
    _expect(
        lambda: load_movielens_csv(folder), "ratings.csv", 3, "rated item 1 twice (first on line 2)"
    )
    folder = _csv_release(tmp_path, ratings=RATINGS[:-1])
    _expect(lambda: load_movielens_csv(folder), "ratings.csv", 3, "truncated")


def test_ml10m_rating_line_numbers_and_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "ml-10M100K"
    folder.mkdir()
    (folder / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n")
    (folder / "ratings.dat").write_text("1::1::5::838985046\n2::1::2.5::838985046\n3::1::6::8\n")
    _expect(lambda: load_ml10m(folder), "ratings.dat", 3, "half stars", "'6'")
    (folder / "movies.dat").unlink()
    with pytest.raises(DataNotFoundError, match="movies.dat.*grouplens.org/datasets/movielens/10m"):
        load_ml10m(folder)
    with pytest.raises(DataNotFoundError, match="no ml-25m files.*movielens/25m/.*ratings.csv"):
        load_movielens("ml-25m", tmp_path)
