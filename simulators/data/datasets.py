"""One call from raw files to processed, cached reranking data."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from simulators.data.cache import cache_key, files_checksum, read_cache, write_cache
from simulators.data.errors import ConfigError
from simulators.data.movielens import (
    CSV_RELEASES,
    MOVIELENS_RELEASES,
    load_ml1m,
    load_movielens,
)
from simulators.data.paths import cache_dir, find_dataset_dir
from simulators.data.pipeline import RerankData, build_rerank_data
from simulators.data.pipeline_config import PipelineConfig
from simulators.data.synthetic_config import SyntheticConfig
from simulators.progress import progress_bar

MOVIELENS_DATASETS = MOVIELENS_RELEASES
DATASETS = (*MOVIELENS_DATASETS, "synthetic")
# The files each release is read from (their checksum keys the cache).
_RAW_FILES = {
    "ml-100k": ("u.data", "u.item", "u.user", "u.occupation"),
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
    "ml-10m": ("ratings.dat", "movies.dat"),
    **{name: ("ratings.csv", "movies.csv") for name in CSV_RELEASES},
}


def cache_path(
    dataset: str = "ml-100k",
    data_dir: str | os.PathLike[str] | None = None,
    config: PipelineConfig | None = None,
    synthetic: SyntheticConfig | None = None,
) -> Path:
    """Return the cache file that :func:`load_rerank_data` reads or writes."""
    config = config or PipelineConfig()
    folder = _raw_folder(dataset, data_dir, synthetic)
    return _cache_file(dataset, config, _checksum(dataset, folder))


def synthetic_world_dir(synthetic: SyntheticConfig | None = None) -> Path:
    """Folder of the synthetic world's logs (ML-1M format), written on first use."""
    from simulators.data.synthetic_world import SyntheticWorld  # noqa: PLC0415  (imports torch)

    synthetic = synthetic or SyntheticConfig()
    folder = cache_dir() / "synthetic" / synthetic.key()
    if not all((folder / name).is_file() for name in _RAW_FILES["ml-1m"]):
        SyntheticWorld(synthetic).write_logs(folder)
    return folder


def _raw_folder(
    dataset: str, data_dir: str | os.PathLike[str] | None, synthetic: SyntheticConfig | None
) -> Path:
    if dataset == "synthetic":
        return synthetic_world_dir(synthetic)
    if synthetic is not None:
        raise ConfigError(f"synthetic=... only applies to dataset='synthetic', not {dataset!r}")
    return find_dataset_dir(dataset, data_dir)


def data_checksum(dataset: str = "ml-100k", data_dir: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 of the raw files of ``dataset`` (recorded in caches and checkpoints)."""
    return _checksum(dataset, _raw_folder(dataset, data_dir, None))


def load_rerank_data(
    dataset: str = "ml-100k",
    data_dir: str | os.PathLike[str] | None = None,
    config: PipelineConfig | None = None,
    *,
    use_cache: bool = True,
    rebuild: bool = False,
    progress: bool = True,
    synthetic: SyntheticConfig | None = None,
) -> RerankData:
    """Load processed reranking data, building it from the raw files if needed.

    Args:
        dataset: A MovieLens release (``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"``,
            ``"ml-20m"``, ``"ml-25m"``, ``"ml-32m"``, ``"ml-latest"``,
            ``"ml-latest-small"``) or ``"synthetic"`` (a world with a known true user
            model, generated on first use; see :mod:`simulators.data.synthetic_world`).
        data_dir: The dataset folder or a data root holding it; ``None`` searches
            ``$RERANK_ENV_DATA`` and ``../shared/data`` (see ``find_dataset_dir``).
        config: Pipeline choices (defaults: :class:`PipelineConfig()`).
        use_cache: Read and write the on-disk cache (``$RERANK_ENV_CACHE``, else the
            user cache folder).
        rebuild: Build from the raw files even if a cache file exists, and replace it.
        progress: Show progress bars.
        synthetic: The world of ``dataset="synthetic"`` (default ``SyntheticConfig()``).

    Raises:
        DataNotFoundError: The raw files are not found.
        DataFormatError: A raw file is malformed.
        CacheError: The cache file exists but cannot be used (pass ``rebuild=True``).
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    config = config or PipelineConfig()
    folder = _raw_folder(dataset, data_dir, synthetic)
    checksum = _checksum(dataset, folder)
    path = _cache_file(dataset, config, checksum)
    if use_cache and not rebuild and path.exists():
        data, _ = read_cache(path)
        return data
    with progress_bar(1, f"reading {dataset}", progress) as bar:
        if dataset == "synthetic":
            ratings = dataclasses.replace(load_ml1m(folder), name="synthetic")
        else:
            ratings = load_movielens(dataset, folder)
        bar.update()
    data = build_rerank_data(ratings, config, progress=progress)
    if use_cache:
        write_cache(path, data, checksum)
    return data


def _checksum(dataset: str, folder: Path) -> str:
    names = _RAW_FILES["ml-1m" if dataset == "synthetic" else dataset]
    return files_checksum(folder / name for name in names if (folder / name).is_file())


def _cache_file(dataset: str, config: PipelineConfig, checksum: str) -> Path:
    return cache_dir() / "processed" / f"{dataset}-{cache_key(dataset, config, checksum)[:20]}.npz"
