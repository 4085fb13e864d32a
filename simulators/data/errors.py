"""Errors raised by the data loaders and the processing pipeline."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Base class of every data error raised by :mod:`simulators.data`."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset folder or one of its files is missing."""


class DataFormatError(DataError, ValueError):
    """A data file does not have the expected format.

    The message names the file, the 1-based line number (when the problem is on one
    line), what was found and what was expected, so that a broken or truncated file
    is never read as a silently shorter dataset.

    Attributes:
        path: The offending file.
        line: 1-based line number, or ``None`` when the problem concerns the whole file.
    """

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}" if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")


class CacheError(DataError):
    """A cached processed dataset cannot be used (other format version, corrupt file)."""


class ConfigError(ValueError):
    """A configuration value is invalid (the message names it and the valid range)."""
