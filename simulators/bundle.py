"""Simulator bundles: fitted simulators plus the request pool they serve, in one folder.

A bundle is what an environment needs to run with no raw data: for one dataset,

* ``requests.npz``: the :class:`RequestPool` (every request's user, candidates in
  the initial ranker's order with its scores, recent history as item indices, the
  logged slate with binary click labels, the split; the GR2 requests; user and item
  side features and item titles). No rating values and no timestamps;
* ``<kind>.pt``: one simulator checkpoint per model kind (an ensemble whose last
  member is held out for evaluation), in the format of :mod:`simulators.checkpoint`;
* ``semantic_ids.npz`` (optional): every item's semantic ID, fitted on the training
  items with the upstream retriever's item vectors (:func:`add_semantic_ids`;
  tasks fit and cache them when a bundle has none or another config is asked for);
* ``manifest.json``: format version, the pipeline and bundle configs, the raw
  data's checksum, each file's SHA-256, and each simulator's metrics.

The embedded default (``simulators/bundles/ml-100k``, shipped as package data) is
reproduced from the raw MovieLens files by::

    rerank-env simulator bundle --out simulators/bundles/ml-100k

Files are checked against the manifest's checksums when loaded, so a damaged or
hand-edited bundle is refused rather than silently used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulators._io import atomic_write, file_sha256, replace_folder
from simulators.base import ClickSimulator
from simulators.checkpoint import CheckpointError, load_simulator, save_simulator
from simulators.composed import (
    AssumedComposition,
    ComposedSimulator,
    CompositionSetting,
    composition_from,
)
from simulators.composition_fit import (
    COMPOSITION_FORMAT,
    cached_fitted_composition,
    member_rows,
)
from simulators.data.cache import package_version
from simulators.data.errors import ConfigError
from simulators.data.pipeline import PIPELINE_VERSION, RerankData
from simulators.data.semantic_id_config import SemanticIdConfig, SemanticIds
from simulators.data.semantic_id_tokenizer import fit_semantic_ids, semantic_id_report
from simulators.data.semantic_ids import input_checksum, load_semantic_ids, save_semantic_ids
from simulators.data.splits import SPLITS
from simulators.factory import MODEL_KINDS, SimulatorSpec, build_simulator, evaluation_split
from simulators.progress import progress_bar
from simulators.request_pool import RequestPool

BUNDLE_FORMAT_VERSION = 2
#: History items simulators are fitted, evaluated and served with (``logged_slates``).
SIMULATOR_HISTORY = 50
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "bundles" / "ml-100k"
_POOL_FILE, _MANIFEST_FILE = "requests.npz", "manifest.json"
_SEMANTIC_IDS_FILE = "semantic_ids.npz"
#: The ``kind`` of semantic IDs fitted on the retriever's item vectors.
RETRIEVER_VECTORS = "retriever"


#: How a bundle's held-out member is made independent (:attr:`BundleConfig.held_out`).
HELD_OUT_SPLITS = ("seed", "sessions", "users")


@dataclass(frozen=True)
class BundleConfig:
    """How a bundle's simulators are fitted.

    Attributes:
        kinds: Model kinds to fit (each becomes ``<kind>.pt``).
        members: Ensemble members per kind (member ``k`` seeded ``seed + k``); the last
            is the held-out evaluation simulator, so at least 2.
        bootstrap: Fit each member on a bootstrap resample of the training slates.
            Off by default: on ML-100K it cost each member about 0.02 test AUC
            (0.767 against 0.789 for the context-aware model), more than the
            diversity between members is worth.
        dim: Attractiveness and Transformer width.
        epochs: Maximum epochs (early stopping on validation likelihood).
        learning_rate: Adam step size.
        weight_decay: Adam L2 weight decay.
        weight_decay_per_epoch: Fit the members with AdamW's decoupled decay of this
            much per pass over the training slates instead of Adam's L2
            ``weight_decay`` (:func:`~simulators.training.fit_simulator`); ``None``
            (default) keeps Adam. 50 lifted the synthetic world's list-reward
            rank correlation from 0.51 to 0.60 at 12,600 slates and tied the best
            setting at 126,000 (docs/benchmarks.md).
        seed: Member ``k`` uses ``seed + k`` for initialisation, shuffling and bootstrap.
        history_length: History items stored per request (at least
            :data:`SIMULATOR_HISTORY`, the items simulators are fitted and served with).
        position_bias: Default DCG examination exponent of the composed simulator.
        diversity_strength: Default diminishing-returns strength of the composed simulator.
        headroom_requests: Test requests on which the manifest records the default
            composed simulator's headroom.
        fit_composition: Also fit each default-kind member's composition
            (:meth:`SimulatorBundle.fitted_composition`) while building, and record it
            in the manifest (``fitted_composition``), so ``composition="fitted"``
            needs no fit on first use.
        held_out: How the held-out member differs from the training members:
            ``"sessions"`` (default) or ``"users"``: the training members on one
            half of the logged slates and the held-out member on the other
            (:func:`~simulators.training.disjoint_halves`, split seeded by
            ``seed``), a judge that shares no slate with the training simulator
            (docs/simulators.md measures which is most honest: the session halves);
            ``"seed"``: all fitted on every training slate, each with its own seed.
    """

    kinds: tuple[str, ...] = ("transformer", "pbm", "dcm", "cascade")
    members: int = 2
    bootstrap: bool = False
    dim: int = 32
    epochs: int = 20
    learning_rate: float = 5e-3
    weight_decay: float = 1e-5
    weight_decay_per_epoch: float | None = None
    seed: int = 0
    history_length: int = 50
    position_bias: float = 1.0
    diversity_strength: float = 2.0
    headroom_requests: int = 200
    fit_composition: bool = False
    held_out: str = "sessions"

    def __post_init__(self) -> None:
        if self.held_out not in HELD_OUT_SPLITS:
            raise ConfigError(
                f"BundleConfig.held_out must be one of {HELD_OUT_SPLITS}, got {self.held_out!r}"
            )
        if self.weight_decay_per_epoch is not None and not self.weight_decay_per_epoch >= 0:
            raise ConfigError(
                "BundleConfig.weight_decay_per_epoch must be None (Adam's L2 weight_decay) or "
                f">= 0, got {self.weight_decay_per_epoch!r}"
            )
        if self.held_out != "seed" and self.bootstrap:
            raise ConfigError(
                "BundleConfig.held_out='sessions' or 'users' fits members on halves of the "
                "logs; bootstrap=True would resample them: use one or the other"
            )
        unknown = [kind for kind in self.kinds if kind not in MODEL_KINDS]
        if unknown or not self.kinds:
            raise ConfigError(
                f"BundleConfig.kinds must be a non-empty subset of {MODEL_KINDS}, got {self.kinds}"
            )
        if self.history_length < SIMULATOR_HISTORY:
            raise ConfigError(
                f"BundleConfig.history_length must be >= {SIMULATOR_HISTORY} (simulators are "
                f"fitted on the {SIMULATOR_HISTORY} most recent items), got {self.history_length}"
            )
        if self.members < 2:
            raise ConfigError(
                f"BundleConfig.members must be >= 2 (the last member is the held-out "
                f"evaluation simulator), got {self.members}"
            )


@dataclass
class SimulatorBundle:
    """A loaded bundle: the request pool and one fitted ensemble per model kind.

    Attributes:
        path: Folder it was loaded from.
        manifest: The parsed ``manifest.json``.
        pool: The :class:`RequestPool`.
        ensembles: Fitted (uncomposed) ensemble per kind.
    """

    path: Path
    manifest: dict[str, Any]
    pool: RequestPool
    ensembles: dict[str, ClickSimulator]

    @property
    def kinds(self) -> tuple[str, ...]:
        """Model kinds in the bundle."""
        return tuple(self.ensembles)

    def similarity_vectors(self) -> torch.Tensor:
        """Item vectors of the composed simulator's diminishing returns: genre flags."""
        return torch.as_tensor(self.pool.item_features[:, :-1])  # last column: year

    def simulators(
        self, kind: str = "transformer", *, composition: CompositionSetting = "assumed"
    ) -> tuple[ClickSimulator, ClickSimulator]:
        """``(training simulator, held-out evaluation simulator)`` of one kind.

        Args:
            kind: One of :attr:`kinds`.
            composition: ``"none"`` (the learned simulators alone), an
                :class:`AssumedComposition` (or ``"assumed"``, default: the DCG prior
                and the bundle's default strengths) or ``"fitted"``: each member's
                effects fitted on the training logs (:meth:`fitted_composition`); the
                training simulator takes the mean of its members' values, the
                held-out member its own. See :func:`composition_from`.

        Raises:
            ConfigError: An unknown ``composition``.
        """
        if kind not in self.ensembles:
            raise ValueError(f"this bundle has no {kind!r} simulator; it has {self.kinds}")
        composition = composition_from(composition)
        train, held_out = evaluation_split(self.ensembles[kind])
        if composition == "none":
            return train, held_out
        if composition == "fitted":
            members = self.fitted_composition(kind)["members"]
            return (
                self._composed(train, _mean_composition(members[:-1])),
                self._composed(held_out, members[-1]),
            )
        composed_train = ComposedSimulator(
            train,
            self.similarity_vectors(),
            **dataclasses.asdict(self.assumed_composition(composition)),
            max_positions=self.pool.slate_length,
        )
        return composed_train, composed_train.with_base(held_out)

    def judge_requests(self) -> np.ndarray:
        """Requests whose logs only the held-out member was fitted on (sorted).

        With ``held_out="sessions"`` or ``"users"`` the held-out member is fitted on
        one of :func:`~simulators.training.disjoint_halves` and the training members
        on the other: these are the held-out member's half (its training and
        validation logs). A task reserves them (:meth:`RequestPool.reserve`) so that no agent
        trains on its judge's data. Empty with ``held_out="seed"``, whose held-out
        member shares every log with the training members.
        """
        config = self.manifest["bundle_config"]
        rows = member_rows(self.pool, config.get("held_out", "seed"), 2, config["seed"])[-1]
        if rows is None:
            return np.empty(0, dtype=np.int64)
        return np.sort(
            np.concatenate([self.pool.split_indices(split)[rows[split]] for split in rows])
        )

    def assumed_composition(self, composition: AssumedComposition) -> AssumedComposition:
        """``composition`` with the bundle's defaults in place of its ``None`` fields."""
        defaults = self.manifest["bundle_config"]
        return AssumedComposition(
            **{
                name: defaults[name] if value is None else value
                for name, value in dataclasses.asdict(composition).items()
            }
        )

    def _composed(self, base: ClickSimulator, values: dict[str, Any]) -> ComposedSimulator:
        """``base`` with a fitted composition's values (fixed)."""
        pairs = values["complementarity"]
        return ComposedSimulator(
            base,
            self.similarity_vectors(),
            examination=torch.tensor(values["examination"]),
            diversity_strength=values["diversity_strength"],
            max_positions=self.pool.slate_length,
            redundancy=values["redundancy"],
            complementarity=None if pairs is None else torch.tensor(pairs),
        )

    def fitted_composition(self, kind: str = "transformer", *, progress: bool = False) -> dict:
        """Examination and list effects fitted on the training logs, one fit per member.

        Each member of ``kind``'s ensemble is the attractiveness model, kept fixed
        (:func:`~simulators.composition_fit.fit_composition` with ``mode="after"``,
        ``redundancy="sum"`` and a complementarity matrix over the genre vectors):
        what the composition adds is the list effect the member has not learned
        itself. Read from the manifest when the bundle was built with
        ``BundleConfig(fit_composition=True)``; otherwise fitted on first use and
        cached in ``$RERANK_ENV_CACHE/compositions`` (versioned, keyed by the member
        checkpoint's checksum, written atomically), never into the bundle folder (the
        embedded one is part of the package).

        Returns:
            ``{"format", "kind", "simulator_sha256", "mode", "members": [per member:
            Composition fields, best_epoch, valid_nll], "summary": {field: {mean,
            min, max}} over the members}``: the spread over members is the fit's
            interval.
        """
        if kind not in self.ensembles:
            raise ValueError(f"this bundle has no {kind!r} simulator; it has {self.kinds}")
        recorded = self.manifest.get("fitted_composition", {}).get(kind)
        if recorded is not None and recorded.get("format") == COMPOSITION_FORMAT:
            return recorded  # fitted when the bundle was built
        fitted_with = self.manifest["bundle_config"]
        return cached_fitted_composition(
            self.ensembles[kind].members,
            self.pool,
            self.similarity_vectors(),
            kind=kind,
            checksum=self.manifest["files"][f"{kind}.pt"],
            held_out=fitted_with.get("held_out", "seed"),
            seed=fitted_with["seed"],
            progress=progress,
        )

    def stored_semantic_ids(self) -> tuple[SemanticIds, dict[str, Any]] | None:
        """``(semantic IDs, their manifest entry)`` saved in the bundle, or ``None``.

        The entry says whose item vectors they were fitted on (``kind``: ``"retriever"``
        or a simulator kind) and holds their ``config`` and ``report``.
        """
        entry = self.manifest.get("semantic_ids")
        if entry is None:
            return None
        ids, _ = load_semantic_ids(self.path / _SEMANTIC_IDS_FILE)
        return ids, entry

    def representations(self, kind: str = "transformer") -> tuple[torch.Tensor, torch.Tensor]:
        """Learned ``(user vectors [U, d], item vectors [I, d])`` of the first member."""
        first = self.ensembles[kind].members[0]
        every_user = torch.arange(self.pool.n_users)
        every_item = torch.arange(self.pool.n_items)
        with torch.no_grad():
            return (
                first.attractiveness.user_vectors(every_user),
                first.attractiveness.item_vectors(every_item),
            )


def fitted_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The short form of :meth:`SimulatorBundle.fitted_composition`'s entry.

    Mean, min and max over the members of the redundancy strength and the position
    exponent, and the members' mean examination curve (for task descriptions).
    """
    return {
        "mode": entry["mode"],
        "members": len(entry["members"]),
        **entry["summary"],
        "examination": np.mean([m["examination"] for m in entry["members"]], axis=0).tolist(),
    }


def _mean_composition(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise mean of several fitted compositions (same form)."""
    pairs = [m["complementarity"] for m in members]
    return {
        "examination": np.mean([m["examination"] for m in members], axis=0).tolist(),
        "diversity_strength": float(np.mean([m["diversity_strength"] for m in members])),
        "redundancy": members[0]["redundancy"],
        "complementarity": None if pairs[0] is None else np.mean(pairs, axis=0).tolist(),
    }


def build_bundle(
    data: RerankData,
    out: str | Path,
    config: BundleConfig | None = None,
    *,
    data_checksum: str,
    semantic_ids: SemanticIdConfig | None = SemanticIdConfig(),  # noqa: B008  (frozen)
    progress: bool = True,
) -> Path:
    """Fit a bundle's simulators on ``data`` and write the bundle folder ``out``.

    The folder is written next to ``out`` under a temporary name and moved into
    place when complete, so an interrupted build never leaves a partial bundle.

    Args:
        data: Processed data (its config and checksum go into the manifest).
        out: Destination folder (replaced if it exists).
        config: How to fit (default :class:`BundleConfig()`).
        data_checksum: SHA-256 of the raw files (``simulators.data.data_checksum``).
        semantic_ids: Tokenizer settings of the bundle's semantic IDs
            (:func:`add_semantic_ids`); ``None`` writes none.
        progress: Progress bars.

    Returns:
        The bundle folder.
    """
    from simulators.report import simulator_diagnostics  # noqa: PLC0415  (matplotlib)
    from simulators.training import evaluate_simulator, fit_members  # noqa: PLC0415

    config = config or BundleConfig()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        pool = RequestPool.from_data(data, config.history_length)
        pool.save(staging / _POOL_FILE)
        users, items = torch.as_tensor(pool.user_features), torch.as_tensor(pool.item_features)
        simulators: dict[str, Any] = {}
        for kind in progress_bar(
            description="bundle", enabled=progress, iterable=config.kinds, leave=True
        ):
            spec = SimulatorSpec.for_data(
                data, kind, dim=config.dim, seed=config.seed, ensemble_size=config.members
            )
            ensemble = build_simulator(spec, users, items)
            start = time.perf_counter()
            fit_members(
                list(ensemble.members),
                pool,
                seed=config.seed,
                bootstrap=config.bootstrap,
                rows=member_rows(pool, config.held_out, config.members, config.seed),
                epochs=config.epochs,
                learning_rate=config.learning_rate,
                weight_decay=config.weight_decay,
                weight_decay_per_epoch=config.weight_decay_per_epoch,
                progress=progress,
            )
            seconds = time.perf_counter() - start
            train, held_out = evaluation_split(ensemble)
            metrics = {
                role: {split: evaluate_simulator(model, pool, split) for split in ("valid", "test")}
                for role, model in (("train", train), ("held_out", held_out))
            }
            save_simulator(staging / f"{kind}.pt", ensemble, spec, {"metrics": metrics})
            simulators[kind] = {"spec": spec.to_dict(), "fit_seconds": seconds, "metrics": metrics}
        bundle = _assemble(staging, _manifest(data, data_checksum, config, simulators, staging))
        default_kind = config.kinds[0]
        composed_train, _ = bundle.simulators(default_kind)
        diagnostics = simulator_diagnostics(
            composed_train, pool, requests=config.headroom_requests, seed=config.seed
        )
        manifest = bundle.manifest
        manifest["default_simulator"] = {
            "kind": default_kind,
            "position_bias": config.position_bias,
            "diversity_strength": config.diversity_strength,
            "test_diagnostics": diagnostics,
        }
        if config.fit_composition:
            entry = bundle.fitted_composition(default_kind, progress=progress)
            manifest["fitted_composition"] = {default_kind: entry}
        if semantic_ids is not None:
            _save_semantic_ids(bundle, semantic_ids, RETRIEVER_VECTORS)  # writes the manifest
        else:
            _write_manifest(staging, manifest)
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def add_semantic_ids(
    folder: str | Path, config: SemanticIdConfig | None = None, kind: str = "retriever"
) -> dict[str, Any]:
    """Fit every item's semantic ID and save it in the bundle at ``folder``.

    The tokenizer reads the item side features and the item vectors of ``kind``:
    ``"retriever"`` (default: the upstream retriever's, what observations carry by
    default) or a simulator kind of the bundle (its first member's learned vectors,
    for ``representations="privileged"``). It fits on the training items only
    (:meth:`RequestPool.semantic_id_inputs`) and writes ``semantic_ids.npz`` and a
    ``semantic_ids`` manifest entry (kind, config, input checksum, report), replacing
    any earlier ones. The simulators are untouched.

    Returns:
        The manifest entry.
    """
    bundle = load_bundle(folder)
    return _save_semantic_ids(bundle, config or SemanticIdConfig(), kind)


def _save_semantic_ids(bundle: SimulatorBundle, config: SemanticIdConfig, kind: str) -> dict:
    """Fit, write ``semantic_ids.npz`` and the manifest (with the entry); returns the entry."""
    if kind != RETRIEVER_VECTORS and kind not in bundle.kinds:
        raise ValueError(
            f"semantic IDs are fitted on {RETRIEVER_VECTORS!r} item vectors or on a simulator "
            f"kind of the bundle {bundle.kinds}, got {kind!r}"
        )
    if kind == RETRIEVER_VECTORS:
        item_vectors = bundle.pool.retriever_item_factors
    else:
        item_vectors = bundle.representations(kind)[1].numpy()
    features, fit_rows = bundle.pool.semantic_id_inputs(item_vectors)
    ids = fit_semantic_ids(features, fit_rows, config)
    report = semantic_id_report(ids, features, bundle.pool.genres())
    checksum = input_checksum(features, fit_rows)
    save_semantic_ids(
        bundle.path / _SEMANTIC_IDS_FILE, ids, {"input_checksum": checksum, "report": report}
    )
    entry = {
        "kind": kind,
        "config": dataclasses.asdict(config),
        "fit_items": int(fit_rows.sum()),
        "input_checksum": checksum,
        "report": report,
    }
    bundle.manifest["semantic_ids"] = entry
    bundle.manifest["files"][_SEMANTIC_IDS_FILE] = file_sha256(bundle.path / _SEMANTIC_IDS_FILE)
    _write_manifest(bundle.path, bundle.manifest)
    return entry


def _manifest(
    data: RerankData,
    data_checksum: str,
    config: BundleConfig,
    simulators: dict[str, Any],
    folder: Path,
) -> dict[str, Any]:
    return {
        "format_version": BUNDLE_FORMAT_VERSION,
        "pipeline_version": PIPELINE_VERSION,
        "package_version": package_version(),
        "dataset": data.name,
        "data_checksum": data_checksum,
        "data_config": json.loads(data.config.to_json()),
        "bundle_config": dataclasses.asdict(config),
        "pool": {
            "requests": data.n_requests,
            "users": data.n_users,
            "items": data.n_items,
            "num_candidates": data.candidates.shape[1],
            "slate_length": data.logged_items.shape[1],
            "split_sizes": {s: int(len(data.split_indices(s))) for s in SPLITS},
        },
        "simulators": simulators,
        "files": {p.name: file_sha256(p) for p in sorted(folder.iterdir())},
    }


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / _MANIFEST_FILE, lambda out: out.write(text.encode()))


def _assemble(folder: Path, manifest: dict[str, Any]) -> SimulatorBundle:
    """Load the files of ``folder`` described by ``manifest`` (checksums verified)."""
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(
                f"bundle {folder} is missing {name}; rebuild it "
                "(rerank-env simulator bundle --out ...)"
            )
        if file_sha256(path) != expected:
            raise CheckpointError(
                f"{path} does not match the SHA-256 in {folder / _MANIFEST_FILE}: the file "
                "is damaged or was changed after the bundle was built; rebuild it "
                "(rerank-env simulator bundle --out ...)"
            )
    pool = RequestPool.load(folder / _POOL_FILE)
    ensembles = {}
    for kind in manifest["simulators"]:
        model, spec, _ = load_simulator(folder / f"{kind}.pt")
        if (spec.n_users, spec.n_items) != (pool.n_users, pool.n_items):
            raise CheckpointError(
                f"{folder / (kind + '.pt')} has {spec.n_users} users / {spec.n_items} items, "
                f"its request pool {pool.n_users} / {pool.n_items}"
            )
        ensembles[kind] = model
    return SimulatorBundle(folder, manifest, pool, ensembles)


def load_bundle(path: str | Path | None = None) -> SimulatorBundle:
    """Load a bundle folder (default: the embedded ML-100K bundle).

    Raises:
        CheckpointError: Missing or damaged files, another format version, or
            simulators that do not fit the request pool.
    """
    folder = Path(path) if path is not None else DEFAULT_BUNDLE_DIR
    manifest_path = folder / _MANIFEST_FILE
    if not manifest_path.is_file():
        hint = (
            "the package was installed without its data files; reinstall rerank-env"
            if path is None
            else "build one with: rerank-env simulator bundle --out " + str(folder)
        )
        raise CheckpointError(f"no simulator bundle at {folder} ({_MANIFEST_FILE} missing): {hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{manifest_path} is not valid JSON: {err}") from err
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != BUNDLE_FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} is a bundle of format version {version}; this rerank-env reads "
            f"version {BUNDLE_FORMAT_VERSION}. Rebuild it (rerank-env simulator bundle --out "
            f"{folder})"
        )
    return _assemble(folder, manifest)
