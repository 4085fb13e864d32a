"""Tests of the MovieLens loaders on real ML-100K and on small ML-100K/ML-1M files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulators.data.errors import DataFormatError, DataNotFoundError
from simulators.data.movielens import (
    ML1M_GENRES,
    ML1M_OCCUPATIONS,
    ML100K_GENRES,
    MovieLensData,
    load_ml1m,
    load_ml100k,
    load_movielens,
)

# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def ml100k(ml100k_ratings) -> MovieLensData:
    return ml100k_ratings  # the session's load (conftest.py)


def test_real_ml100k_sizes(ml100k: MovieLensData) -> None:
    assert ml100k.name == "ml-100k"
    assert ml100k.n_users == 943
    assert ml100k.n_items == 1682
    assert ml100k.n_ratings == 100_000
    assert len(ml100k.genre_names) == 19
    assert ml100k.genre_names == ML100K_GENRES
    assert ml100k.item_genres.shape == (1682, 19) and ml100k.item_genres.dtype == bool


def test_real_ml100k_content(ml100k: MovieLensData) -> None:
    assert ml100k.item_titles[0] == "Toy Story (1995)"
    assert ml100k.item_year[0] == 1995
    # Toy Story: Animation, Children's, Comedy.
    flagged = {ml100k.genre_names[g] for g in np.flatnonzero(ml100k.item_genres[0])}
    assert flagged == {"Animation", "Children's", "Comedy"}
    # Dense indices in raw-id order: raw ids are 1..N here.
    np.testing.assert_array_equal(ml100k.user_ids, np.arange(1, 944))
    np.testing.assert_array_equal(ml100k.item_ids, np.arange(1, 1683))
    assert ml100k.rating.min() == 1 and ml100k.rating.max() == 5
    assert set(np.unique(ml100k.rating).tolist()) == {1, 2, 3, 4, 5}
    assert ml100k.user.min() == 0 and ml100k.user.max() == 942
    assert ml100k.item.min() == 0 and ml100k.item.max() == 1681
    # First line of u.data: 196 242 3 881250949.
    assert (ml100k.user[0], ml100k.item[0], ml100k.rating[0]) == (195, 241, 3)
    assert ml100k.timestamp[0] == 881250949
    # First line of u.user: 1|24|M|technician|85711.
    assert (ml100k.user_age[0], ml100k.user_gender[0]) == (24, 1)
    assert ml100k.occupation_names[ml100k.user_occupation[0]] == "technician"
    assert ml100k.user_gender[1] == 0  # 2|53|F|other|94043
    assert [p.name for p in ml100k.files][:3] == ["u.data", "u.item", "u.user"]


def test_real_ml100k_latin1_titles(ml100k: MovieLensData) -> None:
    titles = set(ml100k.item_titles.tolist())
    assert "Misérables, Les (1995)" in titles
    assert not any("\ufffd" in t for t in titles)


def test_real_ml100k_folder_itself(data_root: Path, ml100k: MovieLensData) -> None:
    data = load_ml100k(data_root / "ml-100k")
    np.testing.assert_array_equal(data.rating, ml100k.rating)


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match="ml-2m.*ml-latest-small"):
        load_movielens("ml-2m")


# ------------------------------------------------------------------ small ML-100K files

ML100K_ITEMS = [
    (1, "Toy Story (1995)", "01-Jan-1995", {"Animation", "Children's", "Comedy"}),
    (2, "GoldenEye (1995)", "01-Jan-1995", {"Action", "Adventure", "Thriller"}),
    (3, "unknown", "", {"unknown"}),
]
ML100K_USERS = ["1|24|M|technician|85711", "2|53|F|other|94043"]
ML100K_RATINGS = ["1\t1\t5\t881250949", "1\t2\t3\t881250950", "2\t1\t4\t881250951"]


def _item_line(item_id: int, title: str, date: str, genres: set[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
    return f"{item_id}|{title}|{date}||http://us.imdb.com/M/title-exact?{item_id}|{flags}"


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _write_ml100k(
    folder: Path,
    *,
    items: str | None = None,
    users: str | None = None,
    ratings: str | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    item_text = _text([_item_line(*row) for row in ML100K_ITEMS]) if items is None else items
    (folder / "u.item").write_bytes(item_text.encode("latin-1"))
    (folder / "u.user").write_text(_text(ML100K_USERS) if users is None else users)
    (folder / "u.data").write_text(_text(ML100K_RATINGS) if ratings is None else ratings)
    return folder


def test_small_ml100k_loads(tmp_path: Path) -> None:
    data = load_ml100k(_write_ml100k(tmp_path / "ml-100k"))
    assert (data.n_users, data.n_items, data.n_ratings) == (2, 3, 3)
    np.testing.assert_array_equal(data.user, [0, 0, 1])
    np.testing.assert_array_equal(data.item, [0, 1, 0])
    np.testing.assert_array_equal(data.rating, [5, 3, 4])
    assert data.rating.dtype == np.float32  # stars (half stars from ML-10M on)
    assert data.item_year[0] == 1995 and np.isnan(data.item_year[2])
    # Without u.occupation the vocabulary is the sorted occupations of u.user.
    assert data.occupation_names == ("other", "technician")
    np.testing.assert_array_equal(data.user_occupation, [1, 0])
    # Found through a data root as well.
    assert load_movielens("ml-100k", tmp_path).n_ratings == 3


def test_small_ml100k_latin1_title(tmp_path: Path) -> None:
    items = _text(
        [_item_line(1, "Misérables, Les (1995)", "01-Jan-1995", {"Drama"})]
        + [_item_line(*row) for row in ML100K_ITEMS[1:]]
    )
    data = load_ml100k(_write_ml100k(tmp_path, items=items))
    assert data.item_titles[0] == "Misérables, Les (1995)"


def test_ml100k_occupation_file_gives_vocabulary(tmp_path: Path) -> None:
    folder = _write_ml100k(tmp_path)
    (folder / "u.occupation").write_text("administrator\nother\ntechnician\n")
    data = load_ml100k(folder)
    assert data.occupation_names == ("administrator", "other", "technician")
    np.testing.assert_array_equal(data.user_occupation, [2, 1])
    assert folder / "u.occupation" in data.files


def test_ml100k_occupation_not_in_occupation_file(tmp_path: Path) -> None:
    folder = _write_ml100k(tmp_path)
    (folder / "u.occupation").write_text("administrator\nother\n")
    with pytest.raises(DataFormatError) as err:
        load_ml100k(folder)
    assert err.value.line == 1
    assert "u.user, line 1:" in str(err.value) and "technician" in str(err.value)


# -------------------------------------------------------------------- small ML-1M files

ML1M_MOVIES = [
    "10::GoldenEye (1995)::Action|Adventure|Thriller",
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "5::Father of the Bride Part II (1995)::Comedy",
    "7::Sabrina::Comedy|Romance",
]
ML1M_USERS = ["7::M::25::12::12345", "2::F::1::10::48067"]
ML1M_RATINGS = [
    "2::1::5::978300760",
    "7::10::3::978302109",
    "2::5::4::978301968",
    "7::7::1::978302110",
]


def _write_ml1m(
    folder: Path,
    *,
    movies: str | None = None,
    users: str | None = None,
    ratings: str | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    movie_text = _text(ML1M_MOVIES) if movies is None else movies
    (folder / "movies.dat").write_bytes(movie_text.encode("latin-1"))
    (folder / "users.dat").write_text(_text(ML1M_USERS) if users is None else users)
    (folder / "ratings.dat").write_text(_text(ML1M_RATINGS) if ratings is None else ratings)
    return folder


def test_small_ml1m_loads(tmp_path: Path) -> None:
    data = load_movielens("ml-1m", _write_ml1m(tmp_path / "ml-1m"))
    assert data.name == "ml-1m"
    assert (data.n_users, data.n_items, data.n_ratings) == (2, 4, 4)
    # Dense indices follow increasing raw ids, not file order.
    np.testing.assert_array_equal(data.item_ids, [1, 5, 7, 10])
    np.testing.assert_array_equal(data.user_ids, [2, 7])
    np.testing.assert_array_equal(data.user, [0, 1, 0, 1])
    np.testing.assert_array_equal(data.item, [0, 3, 1, 2])
    np.testing.assert_array_equal(data.rating, [5, 3, 4, 1])
    np.testing.assert_array_equal(data.timestamp, [978300760, 978302109, 978301968, 978302110])
    assert data.item_titles.tolist() == [
        "Toy Story (1995)",
        "Father of the Bride Part II (1995)",
        "Sabrina",
        "GoldenEye (1995)",
    ]
    assert data.genre_names == ML1M_GENRES and len(ML1M_GENRES) == 18
    assert data.item_genres.shape == (4, 18)
    flagged = [{data.genre_names[g] for g in np.flatnonzero(row)} for row in data.item_genres]
    assert flagged == [
        {"Animation", "Children's", "Comedy"},
        {"Comedy"},
        {"Comedy", "Romance"},
        {"Action", "Adventure", "Thriller"},
    ]
    np.testing.assert_array_equal(data.item_year[[0, 1, 3]], [1995, 1995, 1995])
    assert np.isnan(data.item_year[2])  # no "(Year)" in the title
    np.testing.assert_array_equal(data.user_gender, [0, 1])  # user 2 is F, user 7 is M
    np.testing.assert_array_equal(data.user_age, [1, 25])
    np.testing.assert_array_equal(data.user_occupation, [10, 12])
    assert data.occupation_names == ML1M_OCCUPATIONS
    assert data.occupation_names[12] == "programmer"
    assert [p.name for p in data.files] == ["ratings.dat", "movies.dat", "users.dat"]
    # A data root holding ml-1m/ works as well.
    assert load_movielens("ml-1m", tmp_path).n_ratings == 4


def test_small_ml1m_latin1_title(tmp_path: Path) -> None:
    movies = _text([*ML1M_MOVIES[:3], "7::Misérables, Les (1995)::Drama"])
    data = load_ml1m(_write_ml1m(tmp_path, movies=movies))
    assert data.item_titles[2] == "Misérables, Les (1995)"
    assert data.item_year[2] == 1995


# ------------------------------------------------------------------------- broken files

FORMATS = {
    # name: (writer, loader, ratings file, separator, ratings lines)
    "ml-100k": (_write_ml100k, load_ml100k, "u.data", "\t", ML100K_RATINGS),
    "ml-1m": (_write_ml1m, load_ml1m, "ratings.dat", "::", ML1M_RATINGS),
}
REQUIRED_FILES = [
    ("ml-100k", "u.data"),
    ("ml-100k", "u.item"),
    ("ml-100k", "u.user"),
    ("ml-1m", "ratings.dat"),
    ("ml-1m", "movies.dat"),
    ("ml-1m", "users.dat"),
]


def _expect_format_error(call, path_name: str, line: int | None, *texts: str) -> str:
    with pytest.raises(DataFormatError) as err:
        call()
    message = str(err.value)
    assert err.value.path.name == path_name
    assert err.value.line == line
    where = f"{path_name}, line {line}:" if line is not None else f"{path_name}:"
    assert where in message
    for text in texts:
        assert text in message, message
    return message


@pytest.mark.parametrize(("fmt", "missing"), REQUIRED_FILES)
def test_missing_file(tmp_path: Path, fmt: str, missing: str) -> None:
    writer, loader, *_ = FORMATS[fmt]
    folder = writer(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(DataNotFoundError) as err:
        loader(folder)
    assert missing in str(err.value)
    assert f"grouplens.org/datasets/movielens/{fmt.removeprefix('ml-')}" in str(err.value)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_missing_folder_gives_download_hint(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(DataNotFoundError, match="grouplens"):
        load_movielens(fmt, tmp_path)


def _ratings_with(fmt: str, index: int, column: int | None, value: str) -> str:
    _, _, _, sep, lines = FORMATS[fmt]
    lines = list(lines)
    if column is None:
        lines[index] = value
    else:
        fields = lines[index].split(sep)
        fields[column] = value
        lines[index] = sep.join(fields)
    return _text(lines)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_wrong_separator(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, sep, lines = FORMATS[fmt]
    folder = writer(tmp_path, ratings=_text([line.replace(sep, ",") for line in lines]))
    _expect_format_error(
        lambda: loader(folder), name, 1, "found 1", "splits on ','", "separator wrong"
    )


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_non_numeric_rating(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, *_ = FORMATS[fmt]
    folder = writer(tmp_path, ratings=_ratings_with(fmt, 1, 2, "five"))
    _expect_format_error(lambda: loader(folder), name, 2, "'rating' must be an integer", "five")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_truncated_line(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, sep, lines = FORMATS[fmt]
    short = sep.join(lines[1].split(sep)[:3])
    folder = writer(tmp_path, ratings=_ratings_with(fmt, 1, None, short))
    _expect_format_error(lambda: loader(folder), name, 2, "found 3", "truncated")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_without_final_newline(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, _, lines = FORMATS[fmt]
    folder = writer(tmp_path, ratings=_text(lines)[:-1])
    _expect_format_error(lambda: loader(folder), name, len(lines), "no line ending", "truncated")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_empty_file(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, *_ = FORMATS[fmt]
    folder = writer(tmp_path, ratings="")
    _expect_format_error(lambda: loader(folder), name, None, "empty")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_blank_line(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, *_ = FORMATS[fmt]
    folder = writer(tmp_path, ratings=_ratings_with(fmt, 2, None, ""))
    _expect_format_error(lambda: loader(folder), name, 3, "blank line")


@pytest.mark.parametrize(("fmt", "value"), [(f, v) for f in FORMATS for v in ("6", "0")])
def test_ratings_out_of_range(tmp_path: Path, fmt: str, value: str) -> None:
    writer, loader, name, *_ = FORMATS[fmt]
    folder = writer(tmp_path, ratings=_ratings_with(fmt, 1, 2, value))
    _expect_format_error(lambda: loader(folder), name, 2, f"rating must be 1-5, found {value}")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_unknown_user(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, *_ = FORMATS[fmt]
    users_file = "u.user" if fmt == "ml-100k" else "users.dat"
    folder = writer(tmp_path, ratings=_ratings_with(fmt, 2, 0, "99"))
    _expect_format_error(lambda: loader(folder), name, 3, f"user 99 is not listed in {users_file}")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_unknown_item(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, *_ = FORMATS[fmt]
    items_file = "u.item" if fmt == "ml-100k" else "movies.dat"
    folder = writer(tmp_path, ratings=_ratings_with(fmt, 0, 1, "404"))
    _expect_format_error(lambda: loader(folder), name, 1, f"item 404 is not listed in {items_file}")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_negative_timestamp(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, *_ = FORMATS[fmt]
    folder = writer(tmp_path, ratings=_ratings_with(fmt, 1, 3, "-5"))
    _expect_format_error(lambda: loader(folder), name, 2, "timestamp")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ratings_duplicate_names_both_lines(tmp_path: Path, fmt: str) -> None:
    writer, loader, name, sep, lines = FORMATS[fmt]
    # Line 4 repeats the user and item of line 1 with another rating.
    first = lines[0].split(sep)
    repeat = sep.join([first[0], first[1], "2", first[3]])
    folder = writer(tmp_path, ratings=_text([*lines[:3], repeat]))
    message = _expect_format_error(lambda: loader(folder), name, 4, "twice", "first on line 1")
    assert f"user {first[0]} rated item {first[1]}" in message


def test_ml100k_ratings_with_spaces_instead_of_tabs(tmp_path: Path) -> None:
    ratings = _text([line.replace("\t", " ") for line in ML100K_RATINGS])
    folder = _write_ml100k(tmp_path, ratings=ratings)
    _expect_format_error(
        lambda: load_ml100k(folder), "u.data", 1, "tab-separated", "found 1", "splits on space"
    )


def test_ml100k_duplicate_item_id(tmp_path: Path) -> None:
    rows = [_item_line(*row) for row in ML100K_ITEMS] + [_item_line(2, "Again", "", set())]
    folder = _write_ml100k(tmp_path, items=_text(rows))
    _expect_format_error(lambda: load_ml100k(folder), "u.item", 4, "item 2 is listed twice")


def test_ml100k_item_with_too_few_fields(tmp_path: Path) -> None:
    rows = [_item_line(*row) for row in ML100K_ITEMS]
    rows[1] = rows[1].rsplit("|", 1)[0]  # 23 fields instead of 24
    folder = _write_ml100k(tmp_path, items=_text(rows))
    _expect_format_error(lambda: load_ml100k(folder), "u.item", 2, "expected 24", "found 23")


def test_ml100k_bad_genre_flag(tmp_path: Path) -> None:
    rows = [_item_line(*row) for row in ML100K_ITEMS]
    rows[2] = rows[2][:-1] + "2"
    folder = _write_ml100k(tmp_path, items=_text(rows))
    _expect_format_error(lambda: load_ml100k(folder), "u.item", 3, "genre flags must be 0 or 1")


def test_ml100k_bad_release_date(tmp_path: Path) -> None:
    rows = [_item_line(*row) for row in ML100K_ITEMS]
    rows[0] = rows[0].replace("01-Jan-1995", "01-Jan-95")
    folder = _write_ml100k(tmp_path, items=_text(rows))
    _expect_format_error(lambda: load_ml100k(folder), "u.item", 1, "4-digit year")


def test_ml100k_bad_gender(tmp_path: Path) -> None:
    folder = _write_ml100k(tmp_path, users=_text([ML100K_USERS[0], "2|53|X|other|94043"]))
    _expect_format_error(lambda: load_ml100k(folder), "u.user", 2, "gender must be 'F' or 'M'")


def test_ml100k_non_numeric_age(tmp_path: Path) -> None:
    folder = _write_ml100k(tmp_path, users=_text(["1|old|M|technician|85711", ML100K_USERS[1]]))
    _expect_format_error(lambda: load_ml100k(folder), "u.user", 1, "'age' must be an integer")


def test_ml100k_undecodable_ratings_file(tmp_path: Path) -> None:
    folder = _write_ml100k(tmp_path)
    (folder / "u.data").write_bytes(b"1\t1\t5\t881250949\n1\t2\t\xff\t881250950\n")
    _expect_format_error(lambda: load_ml100k(folder), "u.data", 2, "cannot decode byte 0xff")


def test_ml1m_unknown_genre(tmp_path: Path) -> None:
    movies = _text([ML1M_MOVIES[0], "1::Toy Story (1995)::Animation|Kids|Comedy", *ML1M_MOVIES[2:]])
    folder = _write_ml1m(tmp_path, movies=movies)
    _expect_format_error(lambda: load_ml1m(folder), "movies.dat", 2, "unknown genre 'Kids'")


def test_ml1m_bad_age_code(tmp_path: Path) -> None:
    folder = _write_ml1m(tmp_path, users=_text([ML1M_USERS[0], "2::F::20::10::48067"]))
    _expect_format_error(lambda: load_ml1m(folder), "users.dat", 2, "age-group code", "found 20")


def test_ml1m_bad_occupation_code(tmp_path: Path) -> None:
    folder = _write_ml1m(tmp_path, users=_text(["7::M::25::21::12345", ML1M_USERS[1]]))
    _expect_format_error(
        lambda: load_ml1m(folder), "users.dat", 1, "Occupation must be a code 0-20"
    )


def test_ml1m_users_written_with_pipes(tmp_path: Path) -> None:
    users = _text([line.replace("::", "|") for line in ML1M_USERS])
    folder = _write_ml1m(tmp_path, users=users)
    _expect_format_error(lambda: load_ml1m(folder), "users.dat", 1, "'|'", "separator wrong")


def test_ml1m_duplicate_user(tmp_path: Path) -> None:
    folder = _write_ml1m(tmp_path, users=_text([*ML1M_USERS, "7::F::18::3::00000"]))
    _expect_format_error(lambda: load_ml1m(folder), "users.dat", 3, "user 7 is listed twice")
