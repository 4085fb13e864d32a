"""Loaders for MovieLens in the GroupLens formats (ML-100K and ML-1M).

Both loaders return the same :class:`MovieLensData`: ratings as parallel arrays
indexed by dense user and item indices (0-based, in increasing raw-id order), and
the side information (demographics, genres, release year). Every file is parsed
strictly: a missing file, wrong separator, non-numeric field, unknown id, rating out
of range, duplicate rating or truncated line raises an error naming the file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulators.data._parsing import parse_int, read_lines, require_file, split_fields
from simulators.data.errors import DataFormatError
from simulators.data.paths import download_hint, find_dataset_dir

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_GENRES = ML100K_GENRES[1:]
ML1M_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer",
    "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
    "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip
_RATING_FIELDS = ("user", "item", "rating", "timestamp")
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True, eq=False)
class MovieLensData:
    """Ratings and side information of one MovieLens dataset.

    Users and items are dense 0-based indices in increasing raw-id order;
    ``user_ids[u]`` and ``item_ids[i]`` give the raw GroupLens ids back.

    Attributes:
        name: ``"ml-100k"`` or ``"ml-1m"``.
        user: Rating's user index, int64 ``[R]``.
        item: Rating's item index, int64 ``[R]``.
        rating: Star rating 1-5, int8 ``[R]``.
        timestamp: Unix seconds, int64 ``[R]``.
        user_ids: Raw user id of each user index, int64 ``[U]``.
        item_ids: Raw item id of each item index, int64 ``[I]``.
        item_titles: Title of each item, str ``[I]``.
        item_genres: Genre flags, bool ``[I, G]``.
        genre_names: Name of each genre column.
        item_year: Release year, float32 ``[I]`` (NaN where the file has none).
        user_age: Age in years (ML-100K) or the ML-1M age-group code, int16 ``[U]``.
        user_gender: 0 = female, 1 = male, int8 ``[U]``.
        user_occupation: Occupation index into ``occupation_names``, int16 ``[U]``.
        occupation_names: Occupation vocabulary.
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
    user_age: np.ndarray
    user_gender: np.ndarray
    user_occupation: np.ndarray
    occupation_names: tuple[str, ...]
    files: tuple[Path, ...]

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
    """Load ``"ml-100k"`` or ``"ml-1m"`` from ``data_dir`` (see :func:`find_dataset_dir`)."""
    if name == "ml-100k":
        return load_ml100k(find_dataset_dir(name, data_dir))
    if name == "ml-1m":
        return load_ml1m(find_dataset_dir(name, data_dir))
    raise ValueError(f"unknown MovieLens dataset {name!r}; expected 'ml-100k' or 'ml-1m'")


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
        user_path, read_lines(user_path, encoding="latin-1"), "|",
        ("user", "age", "gender", "occupation", "zip code"),
    ):  # fmt: skip
        user_id = parse_int(user_path, lineno, "user", fields[0])
        age = parse_int(user_path, lineno, "age", fields[1])
        gender = _parse_gender(user_path, lineno, fields[2])
        if fields[3] not in occupations:
            if occupation_path.is_file():
                raise DataFormatError(
                    user_path, lineno,
                    f"occupation {fields[3]!r} is not listed in {occupation_path.name}",
                )  # fmt: skip
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

    genre_index = {name: k for k, name in enumerate(ML1M_GENRES)}
    item_ids, titles, genres, years = [], [], [], []
    for lineno, fields in split_fields(
        movie_path, read_lines(movie_path, encoding="latin-1"), "::",
        ("MovieID", "Title", "Genres"),
    ):  # fmt: skip
        item_ids.append(parse_int(movie_path, lineno, "MovieID", fields[0]))
        titles.append(fields[1])
        flags = [False] * len(ML1M_GENRES)
        for genre in fields[2].split("|"):
            if genre not in genre_index:
                raise DataFormatError(
                    movie_path, lineno,
                    f"unknown genre {genre!r}; expected '|'-separated names from {ML1M_GENRES}",
                )  # fmt: skip
            flags[genre_index[genre]] = True
        genres.append(flags)
        match = _YEAR_IN_TITLE.search(fields[1])
        years.append(float(match.group(1)) if match else np.nan)

    user_rows = []
    for lineno, fields in split_fields(
        user_path, read_lines(user_path, encoding="latin-1"), "::",
        ("UserID", "Gender", "Age", "Occupation", "Zip-code"),
    ):  # fmt: skip
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
        extra_files=(),
    )


def _assemble(
    *,
    name: str,
    item_path: Path,
    item_ids: list[int],
    titles: list[str],
    genres: list[list[bool]],
    genre_names: tuple[str, ...],
    years: list[float],
    user_path: Path,
    user_rows: list[tuple[int, int, int, int]],
    occupation_names: tuple[str, ...],
    data_path: Path,
    rating_lines: list[str],
    rating_sep: str,
    extra_files: tuple[Path, ...],
) -> MovieLensData:
    raw_items = np.asarray(item_ids, dtype=np.int64)
    _refuse_duplicate_ids(item_path, raw_items, "item")
    raw_users = np.asarray([row[0] for row in user_rows], dtype=np.int64)
    _refuse_duplicate_ids(user_path, raw_users, "user")
    item_order = np.argsort(raw_items, kind="stable")
    user_order = np.argsort(raw_users, kind="stable")
    item_lookup = {int(raw): k for k, raw in enumerate(raw_items[item_order])}
    user_lookup = {int(raw): k for k, raw in enumerate(raw_users[user_order])}

    n = len(rating_lines)
    users = np.empty(n, dtype=np.int64)
    items = np.empty(n, dtype=np.int64)
    ratings = np.empty(n, dtype=np.int8)
    times = np.empty(n, dtype=np.int64)
    for row, (lineno, fields) in enumerate(
        split_fields(data_path, rating_lines, rating_sep, _RATING_FIELDS)
    ):
        user = user_lookup.get(parse_int(data_path, lineno, "user", fields[0]))
        item = item_lookup.get(parse_int(data_path, lineno, "item", fields[1]))
        rating = parse_int(data_path, lineno, "rating", fields[2])
        timestamp = parse_int(data_path, lineno, "timestamp", fields[3])
        if user is None:
            raise DataFormatError(
                data_path, lineno, f"user {fields[0]} is not listed in {user_path.name}"
            )
        if item is None:
            raise DataFormatError(
                data_path, lineno, f"item {fields[1]} is not listed in {item_path.name}"
            )
        if not 1 <= rating <= 5:
            raise DataFormatError(data_path, lineno, f"rating must be 1-5, found {rating}")
        if timestamp < 0:
            raise DataFormatError(
                data_path, lineno, f"timestamp must be Unix seconds >= 0, found {timestamp}"
            )
        users[row], items[row], ratings[row], times[row] = user, item, rating, timestamp
    if n == 0:
        raise DataFormatError(data_path, None, "no ratings")

    pair = users * len(raw_items) + items
    order = np.argsort(pair, kind="stable")
    repeated = np.flatnonzero(pair[order][1:] == pair[order][:-1])
    if len(repeated):
        first, second = sorted(int(k) for k in order[repeated[0] : repeated[0] + 2])
        raise DataFormatError(
            data_path,
            second + 1,  # the ratings file has no header: row k is line k + 1
            f"user {raw_users[user_order][users[second]]} rated item "
            f"{raw_items[item_order][items[second]]} twice (first on line {first + 1}); "
            "expected at most one rating per user and item",
        )

    user_table = np.asarray(user_rows, dtype=np.int64)[user_order]
    return MovieLensData(
        name=name,
        user=users,
        item=items,
        rating=ratings,
        timestamp=times,
        user_ids=raw_users[user_order],
        item_ids=raw_items[item_order],
        item_titles=np.asarray(titles, dtype=str)[item_order],
        item_genres=np.asarray(genres, dtype=bool).reshape(len(raw_items), -1)[item_order],
        genre_names=genre_names,
        item_year=np.asarray(years, dtype=np.float32)[item_order],
        user_age=user_table[:, 1].astype(np.int16),
        user_gender=user_table[:, 2].astype(np.int8),
        user_occupation=user_table[:, 3].astype(np.int16),
        occupation_names=occupation_names,
        files=(data_path, item_path, user_path, *extra_files),
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
