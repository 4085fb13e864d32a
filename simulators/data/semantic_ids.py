"""Semantic IDs: each item as a short sequence of codes, and their files and cache.

GloRank and GR2 generate items as semantic-ID (SID) token sequences instead of
candidate positions. What a semantic ID is lives in
:mod:`simulators.data.semantic_id_config` (:class:`SemanticIdConfig`,
:class:`SemanticIds`); the tokenizer that fits one, a residual quantizer, in
:mod:`simulators.data.semantic_id_tokenizer`. This module is around it:

* :func:`semantic_id_features`: the tokenizer's input, item content (genres, year,
  other side features) next to the learned item vector; an item without training
  interactions gets its vector part predicted from its content (a ridge
  regression fitted on the items that have interactions), so its code comes from
  content alone;
* :func:`input_checksum` / :func:`codes_checksum`: what the codes were fitted on,
  and what a model's tokens mean;
* :func:`save_semantic_ids` / :func:`load_semantic_ids`: a versioned ``.npz`` with
  a metadata record (format version, config, input checksum, report), written
  atomically; :func:`cached_semantic_ids` fits once per input and config into the
  user cache. Bundles hold one (``semantic_ids.npz``, see ``simulators.bundle``)
  and tasks expose it as ``task.semantic_ids``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from simulators._io import atomic_write
from simulators.data.errors import CacheError, ConfigError
from simulators.data.paths import cache_dir
from simulators.data.semantic_id_config import SemanticIdConfig, SemanticIds
from simulators.data.semantic_id_tokenizer import fit_semantic_ids, semantic_id_report

#: Bumped whenever saved semantic IDs would be read differently or fitted differently.
SEMANTIC_ID_FORMAT_VERSION = 1
_METADATA_KEY = "__metadata__"


def items_with_interactions(n_items: int, *item_arrays: np.ndarray) -> np.ndarray:
    """Bool ``[n_items]``: which items occur in any of ``item_arrays`` (``-1`` ignored).

    Pass the training split's arrays (its logged slates and histories) to get the
    items whose learned vectors were trained.
    """
    seen = np.zeros(n_items, dtype=bool)
    for items in item_arrays:
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        seen[items[items >= 0]] = True
    return seen


def semantic_id_features(
    content: np.ndarray, learned: np.ndarray, has_interactions: np.ndarray, *, alpha: float = 1.0
) -> np.ndarray:
    """The tokenizer's input: ``[content, learned vector]`` per item, float64 ``[I, Dc + Dl]``.

    A learned vector means something only for items the simulators saw in training;
    for every other item it is replaced by its prediction from content (a ridge
    regression with strength ``alpha``, fitted on the items with interactions), so
    that item's code is decided by its content alone.

    Args:
        content: Side features (genres, year, ...), ``[I, Dc]``.
        learned: Learned item vectors, ``[I, Dl]``.
        has_interactions: Bool ``[I]``, items with training interactions.
        alpha: Ridge strength.

    Raises:
        ConfigError: Shapes disagree, or no item has interactions.
    """
    from sklearn.linear_model import Ridge  # noqa: PLC0415  (heavy: only when fitting)

    content = np.asarray(content, dtype=np.float64)
    learned = np.asarray(learned, dtype=np.float64)
    known = np.asarray(has_interactions, dtype=bool)
    if content.ndim != 2 or learned.ndim != 2 or not len(content) == len(learned) == len(known):
        raise ConfigError(
            f"content {content.shape}, learned {learned.shape} and has_interactions "
            f"{known.shape} must describe the same items: [I, Dc], [I, Dl] and [I]"
        )
    if not known.any():
        raise ConfigError("no item has training interactions: nothing to fit the tokenizer on")
    vectors = learned.copy()
    if not known.all():
        ridge = Ridge(alpha=alpha).fit(content[known], learned[known])
        vectors[~known] = ridge.predict(content[~known])
    return np.concatenate([content, vectors], axis=1)


def input_checksum(features: np.ndarray, fit_rows: np.ndarray) -> str:
    """SHA-256 of a tokenizer's input (features as float64, fitting rows as a bool mask)."""
    features = np.ascontiguousarray(features, dtype=np.float64)
    rows = np.asarray(fit_rows)
    mask = rows if rows.dtype == bool else np.isin(np.arange(len(features)), rows)
    digest = hashlib.sha256()
    digest.update(str(features.shape).encode())
    digest.update(features.tobytes())
    digest.update(np.ascontiguousarray(mask, dtype=bool).tobytes())
    return digest.hexdigest()


def codes_checksum(tokens: np.ndarray) -> str:
    """Short SHA-256 of a code table: a model's output tokens mean these codes.

    Agents that read or write semantic IDs record it when trained and refuse a task
    whose codes differ.
    """
    table = np.ascontiguousarray(tokens, dtype=np.int64)
    return hashlib.sha256(table.tobytes()).hexdigest()[:16]


def save_semantic_ids(path: str | Path, ids: SemanticIds, metadata: dict[str, Any]) -> Path:
    """Write ``ids`` (codes, raw codes, codebooks, standardisation) to ``path`` atomically.

    ``metadata`` (JSON-serialisable: the input checksum, the report, ...) is stored
    with the format version, the config and when it was made. The per-item
    reconstruction is not stored (it is summarised in the report).
    """
    record = {
        **metadata,
        "format_version": SEMANTIC_ID_FORMAT_VERSION,
        "config": dataclasses.asdict(ids.config),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    arrays = {
        "codes": ids.codes,
        "raw_codes": ids.raw_codes,
        "mean": ids.mean,
        "scale": ids.scale,
        **{f"codebook_{level}": book for level, book in enumerate(ids.codebooks)},
        _METADATA_KEY: np.asarray(json.dumps(record, sort_keys=True)),
    }
    path = Path(path)
    atomic_write(path, lambda out: np.savez_compressed(out, **arrays))
    return path


def load_semantic_ids(path: str | Path) -> tuple[SemanticIds, dict[str, Any]]:
    """Read what :func:`save_semantic_ids` wrote: ``(ids, metadata)``.

    The loaded ``ids.reconstruction`` is ``None`` (see ``metadata["report"]``).

    Raises:
        CacheError: Unreadable, incomplete, or of another format version.
    """
    fix = f"delete {path} to fit the semantic IDs again"
    try:
        with np.load(path, allow_pickle=False) as archive:
            metadata = json.loads(str(archive[_METADATA_KEY]))
            version = metadata.get("format_version")
            if version != SEMANTIC_ID_FORMAT_VERSION:
                raise CacheError(
                    f"{path} holds semantic IDs of format version {version}; this rerank-env "
                    f"reads version {SEMANTIC_ID_FORMAT_VERSION}: {fix}"
                )
            config = SemanticIdConfig(**metadata["config"])
            levels = sum(name.startswith("codebook_") for name in archive.files)
            ids = SemanticIds(
                codes=archive["codes"].astype(np.int64),
                raw_codes=archive["raw_codes"].astype(np.int64),
                codebooks=[archive[f"codebook_{level}"] for level in range(levels)],
                mean=archive["mean"],
                scale=archive["scale"],
                config=config,
                reconstruction=None,
            )
    except CacheError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as err:
        raise CacheError(f"cannot read semantic IDs {path} ({err!r}): {fix}") from err
    return ids, metadata


def cached_semantic_ids(
    features: np.ndarray,
    fit_rows: np.ndarray,
    config: SemanticIdConfig | None = None,
    *,
    genres: np.ndarray | None = None,
    folder: str | Path | None = None,
) -> SemanticIds:
    """:func:`fit_semantic_ids`, fitted once per input and config and kept on disk.

    The file is named by a hash of the format version, the config and
    :func:`input_checksum`, under ``folder`` (default: ``<user cache>/semantic_ids``);
    a damaged file is fitted again. Its metadata holds :func:`semantic_id_report`
    (with ``genres`` if given).
    """
    config = config or SemanticIdConfig()
    checksum = input_checksum(features, fit_rows)
    key = hashlib.sha256(
        json.dumps(
            [SEMANTIC_ID_FORMAT_VERSION, dataclasses.asdict(config), checksum], sort_keys=True
        ).encode()
    ).hexdigest()[:16]
    path = Path(folder or cache_dir() / "semantic_ids") / f"{config.method}-{key}.npz"
    if path.is_file():
        try:
            ids, metadata = load_semantic_ids(path)
            if metadata.get("input_checksum") == checksum:
                return ids
        except CacheError:
            pass  # damaged: fit again below
    ids = fit_semantic_ids(features, fit_rows, config)
    report = semantic_id_report(ids, features, genres)
    save_semantic_ids(path, ids, {"input_checksum": checksum, "report": report})
    return ids


__all__ = [
    "SEMANTIC_ID_FORMAT_VERSION",
    "cached_semantic_ids",
    "codes_checksum",
    "input_checksum",
    "items_with_interactions",
    "load_semantic_ids",
    "save_semantic_ids",
    "semantic_id_features",
]
