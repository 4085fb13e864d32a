"""Where raw data is found and where processed data is cached."""

from __future__ import annotations

import os
from pathlib import Path

from simulators.data.errors import ConfigError, DataNotFoundError

DATA_ENV_VAR = "RERANK_ENV_DATA"
CACHE_ENV_VAR = "RERANK_ENV_CACHE"

# Folder name of each dataset inside a data root.
DATASET_FOLDERS = {
    "ml-100k": "ml-100k",
    "ml-1m": "ml-1m",
    "ml-10m": "ml-10M100K",  # the name ml-10m.zip extracts to
    "ml-20m": "ml-20m",
    "ml-25m": "ml-25m",
    "ml-32m": "ml-32m",
    "ml-latest": "ml-latest",
    "ml-latest-small": "ml-latest-small",
    "open-bandit": "open-bandit",
}


def _source_checkout_root() -> Path:
    # simulators/data/paths.py -> repository root (only meaningful in a source checkout).
    return Path(__file__).resolve().parents[2]


def data_root_candidates() -> list[Path]:
    """Return the data roots searched, in order, when no folder is given.

    ``$RERANK_ENV_DATA`` alone when it is set (an explicit choice is never silently
    replaced by another folder); otherwise ``../shared/data`` beside the working
    directory and beside a source checkout of this project.
    """
    if os.environ.get(DATA_ENV_VAR):
        return [Path(os.environ[DATA_ENV_VAR]).expanduser()]
    candidates = []
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(_source_checkout_root().parent / "shared" / "data")
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def find_dataset_dir(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Locate the raw files of ``dataset``.

    Args:
        dataset: A key of :data:`DATASET_FOLDERS` (``"ml-100k"``, ``"ml-1m"``,
            ``"ml-10m"``, ``"ml-25m"``, ..., ``"open-bandit"``).
        data_dir: Either the dataset's own folder (holding e.g. ``u.data``) or a data
            root holding a ``<dataset>/`` folder. ``None`` searches
            :func:`data_root_candidates`.

    Raises:
        ValueError: Unknown dataset name.
        DataNotFoundError: No folder found; the message lists every place searched.
    """
    if dataset not in DATASET_FOLDERS:
        raise ConfigError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASET_FOLDERS)}")
    folder = DATASET_FOLDERS[dataset]
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        for path in (root, root / folder):
            if _looks_like(dataset, path):
                return path
        raise DataNotFoundError(
            f"no {dataset} files in {root} or {root / folder}. {download_hint(dataset)}"
        )
    searched = data_root_candidates()
    for root in searched:
        if _looks_like(dataset, root / folder):
            return root / folder
    listed = ", ".join(str(root / folder) for root in searched)
    raise DataNotFoundError(
        f"cannot find the {dataset} files; searched {listed}. Pass data_dir=... "
        f"(--data-dir on the command line) or set ${DATA_ENV_VAR} to the folder that "
        f"holds {folder}/. {download_hint(dataset)}"
    )


def _looks_like(dataset: str, path: Path) -> bool:
    markers = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-10m": "ratings.dat"}
    marker = markers.get(dataset, "random" if dataset == "open-bandit" else "ratings.csv")
    return (path / marker).exists()


def download_hint(dataset: str) -> str:
    """Return a one-line instruction for getting the raw files of ``dataset``."""
    hints = {
        "ml-100k": "Get ml-100k.zip from https://grouplens.org/datasets/movielens/100k/ "
        "and unzip it (the folder holds u.data, u.item, u.user).",
        "ml-1m": "Get ml-1m.zip from https://grouplens.org/datasets/movielens/1m/ "
        "and unzip it (the folder holds ratings.dat, movies.dat, users.dat).",
        "ml-10m": "Get ml-10m.zip from https://grouplens.org/datasets/movielens/10m/ "
        "and unzip it (the folder ml-10M100K holds ratings.dat and movies.dat).",
        **{
            name: f"Get {name}.zip from https://grouplens.org/datasets/movielens/"
            f"{name.removeprefix('ml-').removesuffix('-small')}/ and unzip it (the "
            "folder holds ratings.csv and movies.csv)."
            for name in ("ml-20m", "ml-25m", "ml-32m", "ml-latest", "ml-latest-small")
        },
        "open-bandit": "The Open Bandit Dataset is published by ZOZO "
        "(https://research.zozo.com/data.html); a small sample ships inside the obp "
        "package under obp/dataset/obd/.",
    }
    return hints[dataset]


def cache_dir() -> Path:
    """Return the user cache folder for processed data (created on demand).

    ``$RERANK_ENV_CACHE`` if set, else ``$XDG_CACHE_HOME/rerank-env``, else
    ``~/.cache/rerank-env``. Never inside the installed package.
    """
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "rerank-env"
