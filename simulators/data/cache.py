"""On-disk cache of processed reranking data.

A cache file is an ``.npz`` archive (no pickled objects) of every array of a
:class:`~simulators.data.pipeline.RerankData` plus a JSON metadata record: the
format version, the dataset, the pipeline config, a SHA-256 checksum of the raw
input files, the summary metrics, and when and by which version it was made. Its
name is keyed by a hash of the format version, the pipeline version
(``PIPELINE_VERSION``, bumped whenever the pipeline's output changes), the
input checksum and the config, so a change to any of them builds anew. Files are
written atomically (temporary file in the same folder, then rename), so an
interrupted build never leaves a half file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from simulators._io import atomic_write
from simulators.data.errors import CacheError
from simulators.data.pipeline import PIPELINE_VERSION, RerankData
from simulators.data.pipeline_config import PipelineConfig

# 2: ratings are float32 stars (half stars from ML-10M on), were int8.
CACHE_FORMAT_VERSION = 2
_METADATA_KEY = "__metadata__"
# Fields stored in the metadata record rather than as arrays.
_NON_ARRAY_FIELDS = ("name", "config", "stats", "user_feature_names", "item_feature_names")


def files_checksum(paths: Iterable[Path]) -> str:
    """SHA-256 over the names and bytes of ``paths`` (in the given order)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_key(dataset: str, config: PipelineConfig, data_checksum: str) -> str:
    """Hash of everything a processed dataset depends on."""
    payload = json.dumps(
        {
            "format_version": CACHE_FORMAT_VERSION,
            "pipeline_version": PIPELINE_VERSION,
            "dataset": dataset,
            "config": json.loads(config.to_json()),
            "data_checksum": data_checksum,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def write_cache(path: Path, data: RerankData, data_checksum: str) -> None:
    """Write ``data`` to ``path`` atomically, with its metadata record."""
    metadata = {
        "format_version": CACHE_FORMAT_VERSION,
        "pipeline_version": PIPELINE_VERSION,
        "dataset": data.name,
        "config": json.loads(data.config.to_json()),
        "data_checksum": data_checksum,
        "stats": data.stats,
        "user_feature_names": list(data.user_feature_names),
        "item_feature_names": list(data.item_feature_names),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": package_version(),
    }
    arrays = {
        f.name: getattr(data, f.name)
        for f in dataclasses.fields(data)
        if f.name not in _NON_ARRAY_FIELDS
    }
    arrays[_METADATA_KEY] = np.asarray(json.dumps(metadata))
    atomic_write(path, lambda out: np.savez(out, **arrays))


def package_version() -> str:
    """Installed version of rerank-env (recorded in caches and bundles)."""
    # From the installed distribution: simulators must not import rerank_env.
    try:
        return importlib.metadata.version("rerank-env")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def read_cache(path: Path) -> tuple[RerankData, dict[str, Any]]:
    """Read a cache file written by :func:`write_cache`.

    Raises:
        CacheError: The file is unreadable, incomplete, or of another format version.
    """
    fix = f"delete {path} or rebuild (rebuild=True, or --rebuild on the command line)"
    try:
        with np.load(path, allow_pickle=False) as archive:
            metadata = json.loads(str(archive[_METADATA_KEY]))
            version = metadata.get("format_version")
            if version != CACHE_FORMAT_VERSION:
                raise CacheError(
                    f"{path} has cache format version {version}; this rerank-env reads "
                    f"version {CACHE_FORMAT_VERSION}. {fix}"
                )
            arrays = {name: archive[name] for name in archive.files if name != _METADATA_KEY}
    except CacheError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise CacheError(f"cannot read processed-data cache {path} ({err}); {fix}") from err
    expected = {f.name for f in dataclasses.fields(RerankData)} - set(_NON_ARRAY_FIELDS)
    if set(arrays) != expected:
        raise CacheError(
            f"{path} lacks arrays {sorted(expected - set(arrays))} or has unexpected "
            f"{sorted(set(arrays) - expected)}; {fix}"
        )
    try:
        data = RerankData(
            name=metadata["dataset"],
            config=PipelineConfig(**metadata["config"]),
            stats=metadata["stats"],
            user_feature_names=tuple(metadata["user_feature_names"]),
            item_feature_names=tuple(metadata["item_feature_names"]),
            **arrays,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CacheError(f"{path} has incomplete or invalid metadata ({err!r}); {fix}") from err
    return data, metadata
