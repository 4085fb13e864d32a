"""Loaders for MovieLens in the GroupLens formats, from ML-100K to ML-32M.

Three formats, one result:

- ML-100K (``u.data``, ``u.item``, ``u.user``) and ML-1M (``::``-separated
  ``ratings.dat``, ``movies.dat``, ``users.dat``): whole-star ratings and user
  demographics;
- ML-10M (``ml-10M100K``: ``::``-separated ``ratings.dat``, ``movies.dat``): half-star
  ratings, no demographics;
- ML-20M, ML-25M, ML-32M, ml-latest and ml-latest-small (``ratings.csv``,
  ``movies.csv`` with a header and quoted titles; ``links.csv``, ``tags.csv`` and
  the genome files are not read): half-star ratings, no demographics.

Every loader returns the same :class:`MovieLensData`: ratings as parallel arrays
indexed by dense user and item indices (0-based, in increasing raw-id order), and
the side information (demographics where the release has them, genres, release
year). The genre ``(no genres listed)`` means "no genre" (an all-false row), in every
format. Every file is parsed strictly: a missing file, wrong separator or header,
non-numeric field, unknown id or genre, rating off the release's scale, duplicate
rating or truncated line raises an error naming the file and line.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulators.data._parsing import parse_int, read_lines, require_file, split_fields
from simulators.data.errors import DataFormatError
from simulators.data.paths import download_hint, find_dataset_dir

# Vocabulary tables of the releases, kept compact for reading.
# fmt: off
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
ML1M_GENRES = ML100K_GENRES[1:]
#: Genres of ML-10M and of every later release (ML-20M, 25M, 32M, ml-latest).
ML10M_GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)
# fmt: on
#: The genre field of a movie without genres (ML-10M on): an all-false genre row.
NO_GENRES = "(no genres listed)"
#: Releases in the ``ratings.csv`` / ``movies.csv`` format.
CSV_RELEASES = ("ml-20m", "ml-25m", "ml-32m", "ml-latest", "ml-latest-small")
#: Every release :func:`load_movielens` reads.
MOVIELENS_RELEASES = ("ml-100k", "ml-1m", "ml-10m", *CSV_RELEASES)
ML1M_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)
# fmt: off
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer",
    "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
    "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
# fmt: on
_RATING_FIELDS = ("user", "item", "rating", "timestamp")
_CSV_RATINGS_HEADER = "userId,movieId,rating,timestamp"
_CSV_MOVIES_HEADER = "movieId,title,genres"
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")
_HALF_STARS = re.compile(r"[0-5](?:\.[05]0*)?")


@dataclass(frozen=True, eq=False)
class MovieLensData:
    """Ratings and side information of one MovieLens dataset.

    Users and items are dense 0-based indices in increasing raw-id order;
    ``user_ids[u]`` and ``item_ids[i]`` give the raw GroupLens ids back.

    Attributes:
        name: The release, one of :data:`MOVIELENS_RELEASES` (or ``"synthetic"``).
        user: Rating's user index, int64 ``[R]``.
        item: Rating's item index, int64 ``[R]``.
        rating: Star rating, float32 ``[R]``: whole stars 1-5 in ML-100K and ML-1M,
            half stars 0.5-5 from ML-10M on.
        timestamp: Unix seconds, int64 ``[R]``.
        user_ids: Raw user id of each user index, int64 ``[U]``.
        item_ids: Raw item id of each item index, int64 ``[I]``.
        item_titles: Title of each item, str ``[I]``.
        item_genres: Genre flags, bool ``[I, G]``.
        genre_names: Name of each genre column.
        item_year: Release year, float32 ``[I]`` (NaN where the file has none).
        user_age: Age in years (ML-100K) or the ML-1M age-group code, int16 ``[U]``;
            ``None`` for releases without demographics (ML-10M on).
        user_gender: 0 = female, 1 = male, int8 ``[U]``; ``None`` without demographics.
        user_occupation: Occupation index into ``occupation_names``, int16 ``[U]``;
            ``None`` without demographics.
        occupation_names: Occupation vocabulary (empty without demographics).
        files: The raw files read, for checksums.
    """

    name: str
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: np.ndarray
    item_genres: np.ndarray
    genre_names: tuple[str, ...]
    item_year: np.ndarray
    user_age: np.ndarray | None
    user_gender: np.ndarray | None
    user_occupation: np.ndarray | None
    occupation_names: tuple[str, ...]
    files: tuple[Path, ...]

    @property
    def has_demographics(self) -> bool:
        """Whether the release describes its users (ML-100K, ML-1M and the synthetic world)."""
        return self.user_gender is not None

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    @property
    def n_ratings(self) -> int:
        """Number of ratings."""
        return len(self.rating)


def load_movielens(name: str, data_dir: str | os.PathLike[str] | None = None) -> MovieLensData:
    """Load a release of :data:`MOVIELENS_RELEASES` (folder: :func:`find_dataset_dir`)."""
    if name not in MOVIELENS_RELEASES:
        raise ValueError(
            f"unknown MovieLens dataset {name!r}; expected one of {MOVIELENS_RELEASES}"
        )
    folder = find_dataset_dir(name, data_dir)
    if name == "ml-100k":
        return load_ml100k(folder)
    if name == "ml-1m":
        return load_ml1m(folder)
    if name == "ml-10m":
        return load_ml10m(folder)
    return load_movielens_csv(folder, name)


def load_ml100k(folder: str | os.PathLike[str]) -> MovieLensData:
    """Load MovieLens 100K from its folder (``u.data``, ``u.item``, ``u.user``).

    ``u.item`` is latin-1 text with 5 descriptive fields and 19 genre flags;
    ``u.user`` is ``user|age|gender|occupation|zip``; ``u.data`` is tab-separated
    ``user item rating timestamp``.

    Raises:
        DataNotFoundError: A required file is missing.
        DataFormatError: A file is malformed (the message names file and line).
    """
    folder = Path(folder)
    hint = download_hint("ml-100k")
    item_path = require_file(folder / "u.item", "MovieLens 100K items (u.item)", hint)
    user_path = require_file(folder / "u.user", "MovieLens 100K users (u.user)", hint)
    data_path = require_file(folder / "u.data", "MovieLens 100K ratings (u.data)", hint)

    item_fields = ("item", "title", "release date", "video release date", "IMDb URL")
    item_fields += tuple(f"genre flag {g}" for g in ML100K_GENRES)
    item_ids, titles, genres, years = [], [], [], []
    for lineno, fields in split_fields(
        item_path, read_lines(item_path, encoding="latin-1"), "|", item_fields
    ):
        item_ids.append(parse_int(item_path, lineno, "item", fields[0]))
        titles.append(fields[1])
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise DataFormatError(
                item_path, lineno, f"genre flags must be 0 or 1, found {'|'.join(flags)!r}"
            )
        genres.append([flag == "1" for flag in flags])
        date = fields[2].strip()
        years.append(_parse_year(item_path, lineno, date[-4:]) if date else np.nan)

    occupations: list[str] = []
    occupation_path = folder / "u.occupation"
    if occupation_path.is_file():
        occupations = [line.strip() for line in read_lines(occupation_path) if line.strip()]
    user_rows = []
    for lineno, fields in split_fields(
        user_path,
        read_lines(user_path, encoding="latin-1"),
        "|",
        ("user", "age", "gender", "occupation", "zip code"),
    ):
        user_id = parse_int(user_path, lineno, "user", fields[0])
        age = parse_int(user_path, lineno, "age", fields[1])
        gender = _parse_gender(user_path, lineno, fields[2])
        if fields[3] not in occupations:
            if occupation_path.is_file():
                raise DataFormatError(
                    user_path,
                    lineno,
                    f"occupation {fields[3]!r} is not listed in {occupation_path.name}",
                )
            occupations.append(fields[3])
        user_rows.append((user_id, age, gender, fields[3]))
    if not occupation_path.is_file():
        occupations.sort()
    occupation_index = {name: k for k, name in enumerate(occupations)}

    return _assemble(
        name="ml-100k",
        item_path=item_path,
        item_ids=item_ids,
        titles=titles,
        genres=genres,
        genre_names=ML100K_GENRES,
        years=years,
        user_path=user_path,
        user_rows=[(u, a, g, occupation_index[o]) for u, a, g, o in user_rows],
        occupation_names=tuple(occupations),
        data_path=data_path,
        rating_lines=read_lines(data_path),
        rating_sep="\t",
        parse_rating=_parse_whole_stars,
        extra_files=(occupation_path,) if occupation_path.is_file() else (),
    )


def load_ml1m(folder: str | os.PathLike[str]) -> MovieLensData:
    """Load MovieLens 1M from its folder (``ratings.dat``, ``movies.dat``, ``users.dat``).

    All three files are ``::``-separated: ``UserID::MovieID::Rating::Timestamp``,
    ``MovieID::Title (Year)::Genre|Genre``, ``UserID::Gender::Age::Occupation::Zip``
    (age is an age-group code, occupation a code 0-20). Text is latin-1.

    Raises:
        DataNotFoundError: A required file is missing.
        DataFormatError: A file is malformed (the message names file and line).
    """
    folder = Path(folder)
    hint = download_hint("ml-1m")
    movie_path = require_file(folder / "movies.dat", "MovieLens 1M items (movies.dat)", hint)
    user_path = require_file(folder / "users.dat", "MovieLens 1M users (users.dat)", hint)
    data_path = require_file(folder / "ratings.dat", "MovieLens 1M ratings (ratings.dat)", hint)

    item_ids, titles, genres, years = _read_movies(
        movie_path,
        split_fields(
            movie_path,
            read_lines(movie_path, encoding="latin-1"),
            "::",
            ("MovieID", "Title", "Genres"),
        ),
        ML1M_GENRES,
    )

    user_rows = []
    for lineno, fields in split_fields(
        user_path,
        read_lines(user_path, encoding="latin-1"),
        "::",
        ("UserID", "Gender", "Age", "Occupation", "Zip-code"),
    ):
        user_id = parse_int(user_path, lineno, "UserID", fields[0])
        gender = _parse_gender(user_path, lineno, fields[1])
        age = parse_int(user_path, lineno, "Age", fields[2])
        if age not in ML1M_AGE_CODES:
            raise DataFormatError(
                user_path, lineno, f"Age must be an age-group code in {ML1M_AGE_CODES}, found {age}"
            )
        occupation = parse_int(user_path, lineno, "Occupation", fields[3])
        if not 0 <= occupation < len(ML1M_OCCUPATIONS):
            raise DataFormatError(
                user_path, lineno, f"Occupation must be a code 0-20, found {occupation}"
            )
        user_rows.append((user_id, age, gender, occupation))

    return _assemble(
        name="ml-1m",
        item_path=movie_path,
        item_ids=item_ids,
        titles=titles,
        genres=genres,
        genre_names=ML1M_GENRES,
        years=years,
        user_path=user_path,
        user_rows=user_rows,
        occupation_names=ML1M_OCCUPATIONS,
        data_path=data_path,
        rating_lines=read_lines(data_path),
        rating_sep="::",
        parse_rating=_parse_whole_stars,
        extra_files=(),
    )


def load_ml10m(folder: str | os.PathLike[str], encoding: str = "utf-8") -> MovieLensData:
    """Load MovieLens 10M from its folder (``ml-10M100K``: ``ratings.dat``, ``movies.dat``).

    Both files are ``::``-separated: ``UserID::MovieID::Rating::Timestamp`` with
    half-star ratings (0.5-5), and ``MovieID::Title (Year)::Genre|Genre`` over
    :data:`ML10M_GENRES` or ``(no genres listed)``. There is no user file: the users
    are those who rated, without demographics. ``tags.dat`` is not read.

    Args:
        folder: The folder holding the files.
        encoding: Text encoding of ``movies.dat`` (the ratings are ASCII).

    Raises:
        DataNotFoundError: A required file is missing.
        DataFormatError: A file is malformed (the message names file and line).
    """
    folder = Path(folder)
    hint = download_hint("ml-10m")
    movie_path = require_file(folder / "movies.dat", "MovieLens 10M items (movies.dat)", hint)
    data_path = require_file(folder / "ratings.dat", "MovieLens 10M ratings (ratings.dat)", hint)
    movies = split_fields(
        movie_path, read_lines(movie_path, encoding=encoding), "::", ("MovieID", "Title", "Genres")
    )
    ratings = read_lines(data_path)
    return _without_demographics("ml-10m", movie_path, movies, data_path, ratings, "::")


def load_movielens_csv(folder: str | os.PathLike[str], name: str = "ml-25m") -> MovieLensData:
    """Load a MovieLens release in the CSV format (ML-20M, 25M, 32M, ml-latest[-small]).

    ``ratings.csv`` is ``userId,movieId,rating,timestamp`` with half-star ratings
    (0.5-5); ``movies.csv`` is ``movieId,title,genres``, a title with a comma or quote
    being quoted as CSV does, genres over :data:`ML10M_GENRES` or
    ``(no genres listed)``. Both start with that header line and are UTF-8. There is
    no user file (no demographics); ``links.csv``, ``tags.csv`` and the genome files
    are not needed and not read.

    Args:
        folder: The folder holding the files.
        name: Which release, one of :data:`CSV_RELEASES` (names the result and the
            download hint).

    Raises:
        ValueError: ``name`` is not a CSV release.
        DataNotFoundError: A required file is missing.
        DataFormatError: A file is malformed (the message names file and line).
    """
    if name not in CSV_RELEASES:
        raise ValueError(f"name must be one of {CSV_RELEASES}, got {name!r}")
    folder = Path(folder)
    hint = download_hint(name)
    movie_path = require_file(folder / "movies.csv", f"MovieLens {name} items (movies.csv)", hint)
    data_path = require_file(
        folder / "ratings.csv", f"MovieLens {name} ratings (ratings.csv)", hint
    )
    movie_lines = _after_header(movie_path, read_lines(movie_path), _CSV_MOVIES_HEADER)
    movies = _csv_rows(movie_path, movie_lines, ("movieId", "title", "genres"))
    rating_lines = _after_header(data_path, read_lines(data_path), _CSV_RATINGS_HEADER)
    return _without_demographics(name, movie_path, movies, data_path, rating_lines, ",", 2)


def _without_demographics(
    name: str,
    movie_path: Path,
    movies: Iterable[tuple[int, list[str]]],
    data_path: Path,
    rating_lines: list[str],
    rating_sep: str,
    first_rating_line: int = 1,
) -> MovieLensData:
    """A release from ML-10M on: half stars, the later genres, no user file."""
    item_ids, titles, genres, years = _read_movies(movie_path, movies, ML10M_GENRES)
    return _assemble(
        name=name,
        item_path=movie_path,
        item_ids=item_ids,
        titles=titles,
        genres=genres,
        genre_names=ML10M_GENRES,
        years=years,
        user_path=None,
        user_rows=None,
        occupation_names=(),
        data_path=data_path,
        rating_lines=rating_lines,
        rating_sep=rating_sep,
        parse_rating=_parse_half_stars,
        extra_files=(),
        first_rating_line=first_rating_line,
    )


def _after_header(path: Path, lines: list[str], header: str) -> list[str]:
    """The lines after the header line, which must be ``header`` exactly."""
    if lines[0] != header:
        raise DataFormatError(
            path,
            1,
            f"expected the header {header!r}, found {lines[0][:80]!r}: is this the "
            "right file of the right MovieLens release?",
        )
    return lines[1:]


def _csv_rows(
    path: Path, lines: list[str], field_names: tuple[str, ...]
) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of CSV lines after a header, checking the field count."""
    rows = []
    try:
        for offset, fields in enumerate(csv.reader(lines, strict=True)):
            lineno = offset + 2
            if len(fields) != len(field_names):
                raise DataFormatError(
                    path,
                    lineno,
                    f"expected {len(field_names)} comma-separated fields "
                    f"({', '.join(field_names)}), found {len(fields)}: {lines[offset][:80]!r}",
                )
            rows.append((lineno, fields))
    except csv.Error as err:
        raise DataFormatError(path, offset + 2, f"not valid CSV ({err})") from None
    return rows


def _read_movies(
    path: Path, rows: Iterable[tuple[int, list[str]]], genre_names: tuple[str, ...]
) -> tuple[list[int], list[str], list[list[bool]], list[float]]:
    """Ids, titles, genre flags and title years of ``(line, [id, title, genres])`` rows."""
    genre_index = {genre: k for k, genre in enumerate(genre_names)}
    item_ids, titles, genres, years = [], [], [], []
    for lineno, fields in rows:
        item_ids.append(parse_int(path, lineno, "MovieID", fields[0]))
        titles.append(fields[1])
        flags = [False] * len(genre_names)
        if fields[2] != NO_GENRES:
            for genre in fields[2].split("|"):
                if genre not in genre_index:
                    raise DataFormatError(
                        path,
                        lineno,
                        f"unknown genre {genre!r}; expected '|'-separated names from "
                        f"{genre_names}, or {NO_GENRES!r} alone",
                    )
                flags[genre_index[genre]] = True
        genres.append(flags)
        match = _YEAR_IN_TITLE.search(fields[1])
        years.append(float(match.group(1)) if match else np.nan)
    return item_ids, titles, genres, years


def _parse_whole_stars(path: Path, lineno: int, text: str) -> float:
    rating = parse_int(path, lineno, "rating", text)
    if not 1 <= rating <= 5:
        raise DataFormatError(path, lineno, f"rating must be 1-5, found {rating}")
    return float(rating)


def _parse_half_stars(path: Path, lineno: int, text: str) -> float:
    rating = float(text) if _HALF_STARS.fullmatch(text) else None
    if rating is None or not 0.5 <= rating <= 5:
        raise DataFormatError(
            path, lineno, f"rating must be 0.5-5 in half stars (like 3.5 or 4.0), found {text!r}"
        )
    return rating


def _assemble(
    *,
    name: str,
    item_path: Path,
    item_ids: list[int],
    titles: list[str],
    genres: list[list[bool]],
    genre_names: tuple[str, ...],
    years: list[float],
    user_path: Path | None,
    user_rows: list[tuple[int, int, int, int]] | None,
    occupation_names: tuple[str, ...],
    data_path: Path,
    rating_lines: list[str],
    rating_sep: str,
    parse_rating: Callable[[Path, int, str], float],
    extra_files: tuple[Path, ...],
    first_rating_line: int = 1,
) -> MovieLensData:
    """Ratings and side information as :class:`MovieLensData`.

    ``user_rows`` (``(id, age, gender, occupation)``) lists the users where the
    release has a user file; ``None``: the users are those in the ratings.
    """
    raw_items = np.asarray(item_ids, dtype=np.int64)
    _refuse_duplicate_ids(item_path, raw_items, "item")
    item_order = np.argsort(raw_items, kind="stable")
    item_lookup = {int(raw): k for k, raw in enumerate(raw_items[item_order])}

    n = len(rating_lines)
    raw_user_of_row = np.empty(n, dtype=np.int64)
    items = np.empty(n, dtype=np.int64)
    ratings = np.empty(n, dtype=np.float32)
    times = np.empty(n, dtype=np.int64)
    for row, (lineno, fields) in enumerate(
        split_fields(
            data_path, rating_lines, rating_sep, _RATING_FIELDS, first_line=first_rating_line
        )
    ):
        raw_user_of_row[row] = parse_int(data_path, lineno, "user", fields[0])
        item = item_lookup.get(parse_int(data_path, lineno, "item", fields[1]))
        rating = parse_rating(data_path, lineno, fields[2])
        timestamp = parse_int(data_path, lineno, "timestamp", fields[3])
        if item is None:
            raise DataFormatError(
                data_path, lineno, f"item {fields[1]} is not listed in {item_path.name}"
            )
        if timestamp < 0:
            raise DataFormatError(
                data_path, lineno, f"timestamp must be Unix seconds >= 0, found {timestamp}"
            )
        items[row], ratings[row], times[row] = item, rating, timestamp
    if n == 0:
        raise DataFormatError(data_path, None, "no ratings")

    if user_rows is None:
        sorted_users, users = np.unique(raw_user_of_row, return_inverse=True)
        user_table = None
    else:
        raw_users = np.asarray([row[0] for row in user_rows], dtype=np.int64)
        _refuse_duplicate_ids(user_path, raw_users, "user")
        user_order = np.argsort(raw_users, kind="stable")
        sorted_users = raw_users[user_order]
        users = np.minimum(np.searchsorted(sorted_users, raw_user_of_row), len(sorted_users) - 1)
        unlisted = np.flatnonzero(sorted_users[users] != raw_user_of_row)
        if len(unlisted):
            raise DataFormatError(
                data_path,
                int(unlisted[0]) + first_rating_line,
                f"user {raw_user_of_row[unlisted[0]]} is not listed in {user_path.name}",
            )
        user_table = np.asarray(user_rows, dtype=np.int64)[user_order]
    users = users.astype(np.int64)

    pair = users * len(raw_items) + items
    order = np.argsort(pair, kind="stable")
    repeated = np.flatnonzero(pair[order][1:] == pair[order][:-1])
    if len(repeated):
        first, second = sorted(int(k) for k in order[repeated[0] : repeated[0] + 2])
        raise DataFormatError(
            data_path,
            second + first_rating_line,  # row k of the ratings is this line
            f"user {sorted_users[users[second]]} rated item "
            f"{raw_items[item_order][items[second]]} twice (first on line "
            f"{first + first_rating_line}); expected at most one rating per user and item",
        )

    return MovieLensData(
        name=name,
        user=users,
        item=items,
        rating=ratings,
        timestamp=times,
        user_ids=sorted_users,
        item_ids=raw_items[item_order],
        item_titles=np.asarray(titles, dtype=str)[item_order],
        item_genres=np.asarray(genres, dtype=bool).reshape(len(raw_items), -1)[item_order],
        genre_names=genre_names,
        item_year=np.asarray(years, dtype=np.float32)[item_order],
        user_age=None if user_table is None else user_table[:, 1].astype(np.int16),
        user_gender=None if user_table is None else user_table[:, 2].astype(np.int8),
        user_occupation=None if user_table is None else user_table[:, 3].astype(np.int16),
        occupation_names=occupation_names,
        files=(data_path, item_path, *((user_path,) if user_path else ()), *extra_files),
    )


def _refuse_duplicate_ids(path: Path, ids: np.ndarray, what: str) -> None:
    values, first_index, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        raw = int(values[np.argmax(counts > 1)])
        lines = (np.flatnonzero(ids == raw) + 1).tolist()
        raise DataFormatError(path, lines[1], f"{what} {raw} is listed twice (lines {lines})")


def _parse_gender(path: Path, lineno: int, value: str) -> int:
    if value not in ("F", "M"):
        raise DataFormatError(path, lineno, f"gender must be 'F' or 'M', found {value!r}")
    return int(value == "M")


def _parse_year(path: Path, lineno: int, text: str) -> float:
    if not text.isdigit():
        raise DataFormatError(
            path, lineno, f"release date must end in a 4-digit year, found {text!r}"
        )
    return float(text)
