"""Strict readers for delimited text files.

Every reader checks each line's field count and each field's type and raises a
:class:`~simulators.data.errors.DataFormatError` naming file and line on the first
problem. A file that ends without a newline is refused as possibly truncated: the
published GroupLens and Open Bandit files end every line with one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from simulators.data.errors import DataFormatError, DataNotFoundError

# Separators users most often confuse; used only to word a helpful error.
_COMMON_SEPARATORS = {"\t": "tab", "|": "'|'", "::": "'::'", ",": "','", ";": "';'", " ": "space"}


_INTEGER = re.compile(r"[+-]?[0-9]+")


def describe_separator(sep: str) -> str:
    """Return a human name for a field separator (a tab -> ``"tab"``)."""
    return _COMMON_SEPARATORS.get(sep, repr(sep))


def require_file(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`DataNotFoundError`.

    Args:
        path: The file expected.
        what: What the file holds (for the message), e.g. ``"MovieLens 100K ratings"``.
        hint: How the user can fix it, appended to the message.
    """
    if not path.is_file():
        raise DataNotFoundError(f"{what} file not found: {path}. {hint}")
    return path


def read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """Read a text file as lines without line endings, refusing truncated files.

    Args:
        path: File to read.
        encoding: Text encoding (GroupLens ``u.item`` is latin-1).

    Raises:
        DataFormatError: The file cannot be decoded, is empty, or its last line has
            no line ending (the file looks truncated).
    """
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataFormatError(
            path, line, f"cannot decode byte {raw[err.start]:#04x} as {encoding}: {err.reason}"
        ) from None
    if not text:
        raise DataFormatError(path, None, "the file is empty")
    if not text.endswith("\n"):
        n_lines = text.count("\n") + 1
        raise DataFormatError(
            path,
            n_lines,
            "the last line has no line ending, so the file looks truncated "
            "(re-download or re-extract it; if it is complete, end it with a newline)",
        )
    lines = text.split("\n")[:-1]
    # Tolerate Windows line endings: they do not change any field.
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def split_fields(
    path: Path,
    lines: Sequence[str],
    sep: str,
    field_names: Sequence[str],
    *,
    first_line: int = 1,
    allow_more: bool = False,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for every line, checking the field count.

    Args:
        path: File the lines come from (for messages).
        lines: The lines, without line endings.
        sep: Field separator.
        field_names: Expected fields, in order (their count is enforced).
        first_line: Line number of ``lines[0]`` in the file (2 after a header).
        allow_more: Accept lines with more fields than ``field_names``.

    Raises:
        DataFormatError: A blank line or a line with the wrong number of fields.
    """
    expected = len(field_names)
    for offset, line in enumerate(lines):
        lineno = first_line + offset
        if not line.strip():
            raise DataFormatError(path, lineno, "blank line; expected a record")
        fields = line.split(sep)
        if len(fields) == expected or (allow_more and len(fields) > expected):
            yield lineno, fields
            continue
        hint = ""
        if len(fields) < expected:
            # Suggest a separator only if it splits this line into the expected fields.
            fitting = [
                name
                for candidate, name in _COMMON_SEPARATORS.items()
                if candidate != sep and len(line.split(candidate)) == expected
            ]
            if fitting:
                hint = f" The line splits on {fitting[0]} instead: is the separator wrong?"
            else:
                hint = " The line may be truncated."
        names = ", ".join(field_names)
        if len(field_names) > 8:
            names = f"{', '.join(field_names[:6])}, ..., {field_names[-1]}"
        raise DataFormatError(
            path,
            lineno,
            f"expected {expected} {describe_separator(sep)}-separated fields "
            f"({names}), found {len(fields)}: {_preview(line)}.{hint}",
        )


def parse_int(path: Path, lineno: int, name: str, value: str) -> int:
    """Parse an ASCII decimal integer field or raise a :class:`DataFormatError` naming it.

    Stricter than ``int()``: no underscores, surrounding spaces or non-ASCII digits.
    """
    if not _INTEGER.fullmatch(value):
        raise DataFormatError(
            path, lineno, f"field {name!r} must be an integer, found {_preview(value)}"
        )
    return int(value)


def parse_float(path: Path, lineno: int, name: str, value: str) -> float:
    """Parse a finite number field or raise a :class:`DataFormatError` naming it."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or "_" in value or not value.isascii():
        raise DataFormatError(
            path, lineno, f"field {name!r} must be a finite number, found {_preview(value)}"
        )
    return number


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
