"""Loader for the Open Bandit Dataset (ZOZO) in its published CSV layout.

The dataset is a folder per logging policy and campaign::

    <root>/<policy>/<campaign>/<campaign>.csv        one row per displayed item
    <root>/<policy>/<campaign>/item_context.csv      one row per item

Each campaign row is one item shown at one position of a slate, with whether it was
clicked, the logging policy's propensity, four hashed user features and the user's
affinity to every item. Both files are parsed strictly: a wrong header, wrong
separator, non-numeric field, unknown item, out-of-range value or truncated line
raises a :class:`~simulators.data.errors.DataFormatError` naming the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from simulators.data._parsing import (
    describe_separator,
    parse_float,
    parse_int,
    read_lines,
    require_file,
    split_fields,
)
from simulators.data.errors import DataFormatError, DataNotFoundError
from simulators.data.paths import download_hint, find_dataset_dir

N_USER_FEATURES = 4
N_ITEM_CATEGORIES = 3
_SEP = ","
_INDEX_COLUMN = ""  # the unnamed row-index column pandas writes first
_CAMPAIGN_FIXED_COLUMNS = (
    _INDEX_COLUMN,
    "timestamp",
    "item_id",
    "position",
    "click",
    "propensity_score",
    *(f"user_feature_{k}" for k in range(N_USER_FEATURES)),
)
_AFFINITY_PREFIX = "user-item_affinity_"
_ITEM_CONTEXT_COLUMNS = (
    _INDEX_COLUMN,
    "item_id",
    "item_feature_0",
    *(f"item_feature_{k + 1}" for k in range(N_ITEM_CATEGORIES)),
)
_ITEM_CONTEXT_FILE = "item_context.csv"


@dataclass(frozen=True, eq=False)
class OpenBanditData:
    """Logged impressions of one Open Bandit policy and campaign.

    Rows keep the file's order (the published files are sorted by time, but this is
    not enforced). Categorical features are hashed strings in the files; here they are
    integer codes into a vocabulary sorted in increasing string order, so that a code
    does not depend on row order: ``user_feature_vocab[k][user_features[r, k]]`` is
    the original string. The hashes differ between policies' files, so codes of two
    policies are not comparable.

    Attributes:
        policy: Logging policy folder name, e.g. ``"random"`` or ``"bts"``.
        campaign: Campaign folder name, e.g. ``"all"``.
        timestamp: Time of each impression, Unix seconds, float64 ``[N]``.
        item: Item shown, an index into the item arrays (the file's ``item_id``,
            which must be ``0..n_items-1``), int64 ``[N]``.
        position: Slot the item was shown in, **0-based** (the file's 1-based
            ``position`` minus 1), int64 ``[N]``.
        click: Whether the item was clicked, bool ``[N]``.
        propensity: Logging policy's probability of this item at this position,
            in ``(0, 1]``, float64 ``[N]``.
        user_features: Codes of ``user_feature_0..3``, int64 ``[N, 4]``.
        user_feature_vocab: For each user feature, its sorted category strings.
        affinity: ``user-item_affinity_<i>`` for every item ``i``, float32
            ``[N, n_items]``.
        item_numeric: ``item_feature_0`` of each item, float32 ``[n_items]``.
        item_categories: Codes of ``item_feature_1..3``, int64 ``[n_items, 3]``.
        item_category_vocab: For each item categorical feature, its sorted strings.
        files: The raw files read (campaign file, then ``item_context.csv``).
    """

    policy: str
    campaign: str
    timestamp: np.ndarray
    item: np.ndarray
    position: np.ndarray
    click: np.ndarray
    propensity: np.ndarray
    user_features: np.ndarray
    user_feature_vocab: tuple[tuple[str, ...], ...]
    affinity: np.ndarray
    item_numeric: np.ndarray
    item_categories: np.ndarray
    item_category_vocab: tuple[tuple[str, ...], ...]
    files: tuple[Path, ...]

    @property
    def n_rows(self) -> int:
        """Number of logged impressions (rows of the campaign file)."""
        return len(self.item)

    @property
    def n_items(self) -> int:
        """Number of items listed in ``item_context.csv``."""
        return len(self.item_numeric)

    @property
    def n_positions(self) -> int:
        """Number of slate positions: the largest 0-based position plus one."""
        return int(self.position.max()) + 1 if self.n_rows else 0

    def position_ctr(self) -> tuple[np.ndarray, np.ndarray]:
        """Count clicks and impressions at each position.

        Under the uniformly random logging policy every item is equally likely at
        every position, so ``clicks / impressions`` estimates the relative
        examination probability of each position (position bias).

        Returns:
            ``(clicks, impressions)``, two int64 arrays of length ``n_positions``
            indexed by 0-based position.
        """
        impressions = np.bincount(self.position, minlength=self.n_positions)
        clicks = np.bincount(self.position[self.click], minlength=self.n_positions)
        return clicks.astype(np.int64), impressions.astype(np.int64)


def load_open_bandit(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    policy: str = "random",
    campaign: str = "all",
) -> OpenBanditData:
    """Load one policy and campaign of the Open Bandit Dataset.

    Reads ``<policy>/<campaign>/<campaign>.csv`` and the ``item_context.csv`` beside
    it (each policy folder has its own, with its own feature hashes).

    Args:
        data_dir: The ``open-bandit`` folder (holding ``random/``) or a data root
            holding ``open-bandit/``; ``None`` searches the default places (see
            :func:`~simulators.data.paths.find_dataset_dir`).
        policy: Logging policy folder, e.g. ``"random"`` or ``"bts"``.
        campaign: Campaign folder, e.g. ``"all"``, ``"men"`` or ``"women"``.

    Returns:
        The impressions and item features.

    Raises:
        DataNotFoundError: The dataset, the policy or campaign folder, or a file is
            missing (the message lists the folders that exist).
        DataFormatError: A file is malformed (the message names file and line).
    """
    root = find_dataset_dir("open-bandit", data_dir)
    hint = download_hint("open-bandit")
    policy_dir = _require_subfolder(root, policy, "policy", hint)
    campaign_dir = _require_subfolder(policy_dir, campaign, "campaign", hint)
    campaign_path = require_file(
        campaign_dir / f"{campaign}.csv", f"Open Bandit {policy}/{campaign} log", hint
    )
    item_path = require_file(
        campaign_dir / _ITEM_CONTEXT_FILE, f"Open Bandit {policy}/{campaign} item context", hint
    )

    item_numeric, item_categories, item_vocab = _read_item_context(item_path)
    n_items = len(item_numeric)
    columns = _read_campaign(campaign_path, item_path, n_items)
    return OpenBanditData(
        policy=policy,
        campaign=campaign,
        item_numeric=item_numeric,
        item_categories=item_categories,
        item_category_vocab=item_vocab,
        files=(campaign_path, item_path),
        **columns,
    )


def _require_subfolder(parent: Path, name: str, what: str, hint: str) -> Path:
    folder = parent / name
    if not folder.is_dir():
        available = sorted(p.name for p in parent.iterdir() if p.is_dir())
        listed = ", ".join(repr(a) for a in available) if available else "none"
        raise DataNotFoundError(
            f"Open Bandit {what} folder {name!r} not found in {parent}; "
            f"available {what} folders: {listed}. {hint}"
        )
    return folder


def _check_header(
    path: Path, header: str, expected: Sequence[str], note: str = "", note_from: int = 0
) -> None:
    """Refuse a header that is not exactly ``expected``, naming the first difference.

    Args:
        path: The file (for messages).
        header: Its first line.
        expected: The exact column names, in order.
        note: Appended to a message about column ``note_from`` (0-based) or later,
            or about the column count.
        note_from: First column the note concerns.
    """
    found = header.split(_SEP)
    if len(found) == 1 and len(expected) > 1:
        others = [
            describe_separator(sep) for sep in (";", "\t", "|") if sep in header
        ]  # a file written with another separator reads as a single column
        guess = (
            f" The header contains {', '.join(others)}: is the separator wrong?" if others else ""
        )
        raise DataFormatError(
            path,
            1,
            f"expected a header of {len(expected)} comma-separated columns, found 1 "
            f"column: {_short(header)}.{guess}",
        )
    for k, (got, want) in enumerate(zip(found, expected, strict=False)):
        if got != want:
            raise DataFormatError(
                path,
                1,
                f"header column {k + 1} is {_column_name(got)}, expected {_column_name(want)}"
                f"{note if k >= note_from else ''}",
            )
    if len(found) < len(expected):
        raise DataFormatError(
            path,
            1,
            f"header has {len(found)} columns, expected {len(expected)}: column "
            f"{len(found) + 1} should be {_column_name(expected[len(found)])}{note}",
        )
    if len(found) > len(expected):
        raise DataFormatError(
            path,
            1,
            f"header has {len(found)} columns, expected {len(expected)}: unexpected "
            f"column {len(expected) + 1} {_column_name(found[len(expected)])}{note}",
        )


def _read_item_context(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[tuple[str, ...], ...]]:
    lines = read_lines(path)
    _check_header(path, lines[0], _ITEM_CONTEXT_COLUMNS)
    if len(lines) < 2:
        raise DataFormatError(path, None, "no items: the file has a header but no rows")
    n_items = len(lines) - 1
    numeric = np.empty(n_items, dtype=np.float32)
    categories: list[list[str]] = [[""] * N_ITEM_CATEGORIES for _ in range(n_items)]
    first_line: dict[int, int] = {}
    for lineno, fields in split_fields(
        path, lines[1:], _SEP, _display_names(_ITEM_CONTEXT_COLUMNS), first_line=2
    ):
        parse_int(path, lineno, "(index)", fields[0])
        item_id = parse_int(path, lineno, "item_id", fields[1])
        if item_id in first_line:
            raise DataFormatError(
                path,
                lineno,
                f"item_id {item_id} is listed twice (first on line {first_line[item_id]})",
            )
        if not 0 <= item_id < n_items:
            raise DataFormatError(
                path,
                lineno,
                f"item_id {item_id} is out of range: the file lists {n_items} items, "
                f"whose ids must be 0..{n_items - 1}",
            )
        first_line[item_id] = lineno
        numeric[item_id] = parse_float(path, lineno, "item_feature_0", fields[2])
        categories[item_id] = fields[3:]
    codes, vocab = _encode_categories(categories, N_ITEM_CATEGORIES)
    return numeric, codes, vocab


def _read_campaign(path: Path, item_path: Path, n_items: int) -> dict[str, object]:
    lines = read_lines(path)
    expected = (*_CAMPAIGN_FIXED_COLUMNS, *(f"{_AFFINITY_PREFIX}{i}" for i in range(n_items)))
    _check_header(
        path,
        lines[0],
        expected,
        note=f" (one {_AFFINITY_PREFIX}<i> column per item: {item_path.name} lists "
        f"{n_items} items)",
        note_from=len(_CAMPAIGN_FIXED_COLUMNS),
    )
    n = len(lines) - 1
    if n == 0:
        raise DataFormatError(path, None, "no rows: the file has a header but no impressions")

    timestamp = np.empty(n, dtype=np.float64)
    item = np.empty(n, dtype=np.int64)
    position = np.empty(n, dtype=np.int64)
    click = np.empty(n, dtype=bool)
    propensity = np.empty(n, dtype=np.float64)
    user_raw: list[list[str]] = []
    affinity_raw: list[list[str]] = []
    n_fixed = len(_CAMPAIGN_FIXED_COLUMNS)
    for row, (lineno, fields) in enumerate(
        split_fields(path, lines[1:], _SEP, _display_names(expected), first_line=2)
    ):
        parse_int(path, lineno, "(index)", fields[0])
        timestamp[row] = _parse_timestamp(path, lineno, fields[1])
        item_id = parse_int(path, lineno, "item_id", fields[2])
        if not 0 <= item_id < n_items:
            raise DataFormatError(
                path,
                lineno,
                f"item_id {item_id} is not listed in {item_path.name} (ids 0..{n_items - 1})",
            )
        item[row] = item_id
        pos = parse_int(path, lineno, "position", fields[3])
        if pos < 1:
            raise DataFormatError(path, lineno, f"position must be >= 1 (1-based), found {pos}")
        position[row] = pos - 1
        clicked = parse_int(path, lineno, "click", fields[4])
        if clicked not in (0, 1):
            raise DataFormatError(path, lineno, f"click must be 0 or 1, found {clicked}")
        click[row] = clicked == 1
        score = parse_float(path, lineno, "propensity_score", fields[5])
        if not 0.0 < score <= 1.0:
            raise DataFormatError(
                path, lineno, f"propensity_score must be in (0, 1], found {fields[5]!r}"
            )
        propensity[row] = score
        user_raw.append(fields[6:n_fixed])
        affinity_raw.append(fields[n_fixed:])

    user_features, user_vocab = _encode_categories(user_raw, N_USER_FEATURES)
    return {
        "timestamp": timestamp,
        "item": item,
        "position": position,
        "click": click,
        "propensity": propensity,
        "user_features": user_features,
        "user_feature_vocab": user_vocab,
        "affinity": _parse_affinity(path, affinity_raw, n_items),
    }


def _parse_affinity(path: Path, rows: list[list[str]], n_items: int) -> np.ndarray:
    """Convert the affinity block in one numpy call; on failure find the bad field."""
    try:
        values = np.array(rows, dtype=np.float64).reshape(len(rows), n_items)
    except ValueError:
        values = None
    if values is None or not np.isfinite(values).all():
        for row, fields in enumerate(rows):
            for i, text in enumerate(fields):
                parse_float(path, row + 2, f"{_AFFINITY_PREFIX}{i}", text)  # raises
        raise AssertionError(
            "unreachable: a bad affinity value was not located"
        )  # pragma: no cover
    return values.astype(np.float32)


def _parse_timestamp(path: Path, lineno: int, text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DataFormatError(
            path,
            lineno,
            f"timestamp must be ISO 8601 like '2019-11-24 00:00:34.762830+00:00', "
            f"found {_short(text)}",
        ) from None
    if moment.tzinfo is None:
        raise DataFormatError(
            path,
            lineno,
            f"timestamp {text!r} has no UTC offset (expected e.g. '+00:00'), so its "
            "instant is ambiguous",
        )
    return moment.timestamp()


def _encode_categories(
    rows: list[list[str]], n_columns: int
) -> tuple[np.ndarray, tuple[tuple[str, ...], ...]]:
    """Map each column's strings to codes into its sorted vocabulary."""
    codes = np.empty((len(rows), n_columns), dtype=np.int64)
    vocab = []
    for k in range(n_columns):
        names, inverse = np.unique(np.asarray([r[k] for r in rows], dtype=str), return_inverse=True)
        codes[:, k] = inverse.reshape(-1)
        vocab.append(tuple(str(name) for name in names))
    return codes, tuple(vocab)


def _display_names(columns: Sequence[str]) -> list[str]:
    """Column names for field-count messages (the unnamed index column as ``(index)``)."""
    return [name or "(index)" for name in columns]


def _column_name(name: str) -> str:
    return "the unnamed index column ''" if name == "" else repr(name)


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
