"""Where a task's simulators come from: a bundle folder, the embedded bundle, or a fit.

:func:`load_source` turns a :class:`BundleSource` (which data, which simulator kind,
how many candidates and positions, how the held-out member is kept apart) into a
loaded :class:`~simulators.bundle.SimulatorBundle`, the synthetic world's true
simulator where there is one, and whether the embedded bundle was used:

* ``bundle_dir``: that bundle folder (``rerank-env simulator bundle``);
* ML-100K with at most the embedded bundle's candidates and positions, a simulator
  kind it has, no ``data_dir`` or ``pipeline`` and the default fit: the embedded bundle;
* otherwise the raw data is processed and a bundle of the chosen kind is fitted on
  first use and cached in the user cache (``$RERANK_ENV_CACHE/bundles``), one process
  building while the others wait on a file lock.

Loaded sources are kept per process (the last :data:`MAX_SOURCES`), frozen and in
evaluation mode, so many environments share one set of fitted ensembles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from simulators.base import ClickSimulator
from simulators.bundle import (
    BUNDLE_FORMAT_VERSION,
    DEFAULT_BUNDLE_DIR,
    BundleConfig,
    SimulatorBundle,
    build_bundle,
    load_bundle,
)
from simulators.checkpoint import CHECKPOINT_FORMAT_VERSION, CheckpointError
from simulators.data import PipelineConfig, load_rerank_data
from simulators.data.datasets import data_checksum
from simulators.data.errors import ConfigError
from simulators.data.paths import cache_dir
from simulators.data.pipeline import PIPELINE_VERSION, RerankData
from simulators.data.synthetic_config import SyntheticConfig

#: Loaded sources kept per process (the oldest is forgotten first).
MAX_SOURCES = 8


@dataclass(frozen=True)
class BundleSource:
    """What decides which bundle (and true simulator) a task is built from.

    Attributes:
        dataset: Dataset name (``simulators.data.datasets.DATASETS``).
        data_dir: Resolved folder of the raw files, or ``None``.
        bundle_dir: Resolved bundle folder to load, or ``None``.
        simulator: Simulator kind the bundle must hold.
        num_candidates: Candidates per request the bundle must offer (at least).
        slate_length: Positions the simulators must know (at least).
        pipeline: Data pipeline settings when raw data is processed.
        synthetic: The synthetic world's settings (``dataset="synthetic"``; default
            ``SyntheticConfig(slate_length=slate_length)``).
        device: Where the loaded simulators live.
        held_out: How the held-out member is kept apart (``BundleConfig.held_out``).
        weight_decay_per_epoch: ``BundleConfig.weight_decay_per_epoch`` of a fit.
    """

    dataset: str
    data_dir: str | None
    bundle_dir: str | None
    simulator: str
    num_candidates: int
    slate_length: int
    pipeline: PipelineConfig | None
    synthetic: SyntheticConfig | None
    device: str
    held_out: str
    weight_decay_per_epoch: float | None

    def __post_init__(self) -> None:
        # The synthetic world's logs (and the bundle's cache key) follow its config.
        if self.dataset == "synthetic" and self.synthetic is None:
            object.__setattr__(self, "synthetic", SyntheticConfig(slate_length=self.slate_length))


@dataclass(frozen=True)
class LoadedSource:
    """A loaded :class:`BundleSource`.

    Attributes:
        bundle: The bundle (its ensembles frozen, in evaluation mode, on the device).
        true_simulator: The synthetic world's true user model, else ``None``.
        embedded: Whether the embedded ML-100K bundle was used.
    """

    bundle: SimulatorBundle
    true_simulator: ClickSimulator | None
    embedded: bool


_LOADED: dict[BundleSource, LoadedSource] = {}


def clear_source_cache() -> None:
    """Forget the bundles and simulators this process has loaded."""
    _LOADED.clear()


def load_source(source: BundleSource, *, progress: bool = True) -> LoadedSource:
    """The bundle ``source`` names, loaded (or fitted and cached) once per process.

    Raises:
        ConfigError: The bundle lacks the simulator kind, candidates or positions
            asked for, or was built from another dataset.
        simulators.data.DataNotFoundError: Raw files needed for a fit are missing.
    """
    if source not in _LOADED:
        loaded = _load(source, progress)
        check_bundle_fits(
            loaded.bundle, source.simulator, source.num_candidates, source.slate_length
        )
        for model in (*loaded.bundle.ensembles.values(), loaded.true_simulator):
            if model is not None:  # shared and inference-only: frozen, in eval mode
                model.to(source.device).eval().requires_grad_(False)
        if len(_LOADED) >= MAX_SOURCES:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[source] = loaded
    return _LOADED[source]


def _load(source: BundleSource, progress: bool) -> LoadedSource:
    if source.bundle_dir is not None:
        bundle = load_bundle(source.bundle_dir)
        if bundle.manifest["dataset"] != source.dataset:
            raise ConfigError(
                f"bundle {source.bundle_dir} was built from {bundle.manifest['dataset']!r}, but "
                f"dataset={source.dataset!r}; pass dataset={bundle.manifest['dataset']!r}"
            )
        return LoadedSource(bundle, None, embedded=False)
    if _embedded_fits(source):
        return LoadedSource(load_bundle(), None, embedded=True)
    config = source.pipeline or PipelineConfig(
        num_candidates=max(source.num_candidates, 50), slate_length=source.slate_length
    )
    data = load_rerank_data(
        source.dataset, source.data_dir, config, progress=progress, synthetic=source.synthetic
    )
    bundle = cached_bundle(data, source, progress=progress)
    true_simulator = None
    if source.dataset == "synthetic":
        from simulators.data.synthetic_world import true_simulator_for  # noqa: PLC0415

        true_simulator = true_simulator_for(data, source.synthetic)
    return LoadedSource(bundle, true_simulator, embedded=False)


def _embedded_fits(source: BundleSource) -> bool:
    """Whether the embedded ML-100K bundle serves ``source`` (no raw data needed)."""
    if (
        source.dataset != "ml-100k"
        or source.data_dir is not None
        or source.pipeline is not None
        or source.weight_decay_per_epoch is not None
    ):
        return False
    manifest = json.loads((DEFAULT_BUNDLE_DIR / "manifest.json").read_text())
    return (
        manifest["bundle_config"].get("held_out", "seed") == source.held_out
        and source.slate_length <= manifest["pool"]["slate_length"]
        and source.num_candidates <= manifest["pool"]["num_candidates"]
        and source.simulator in manifest["simulators"]
    )


def cached_bundle(data: RerankData, source: BundleSource, *, progress: bool) -> SimulatorBundle:
    """The bundle of ``source.simulator`` fitted on ``data``, built once into the user cache.

    The cache key holds the format versions, the data's checksum (the synthetic
    world's key), the pipeline settings and the :class:`BundleConfig`; a damaged
    cached bundle is rebuilt.
    """
    if source.dataset == "synthetic":
        checksum = source.synthetic.key()
    else:
        checksum = data_checksum(source.dataset, source.data_dir)
    config = BundleConfig(
        kinds=(source.simulator,),
        held_out=source.held_out,
        weight_decay_per_epoch=source.weight_decay_per_epoch,
    )
    versions = [BUNDLE_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION, PIPELINE_VERSION]
    identity = [versions, checksum, data.config.to_json(), dataclasses.asdict(config)]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "bundles" / f"{source.dataset}-{source.simulator}-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One process builds; others wait for it and then load its bundle.
    with exclusive_lock(folder.with_name(folder.name + ".lock")):
        if (folder / "manifest.json").is_file():
            try:
                return load_bundle(folder)
            except CheckpointError:
                pass  # damaged: rebuild it below
        build_bundle(data, folder, config, data_checksum=checksum, progress=progress)
        return load_bundle(folder)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX; a no-op where fcntl is missing)."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_bundle_fits(
    bundle: SimulatorBundle, simulator: str, num_candidates: int, slate_length: int
) -> None:
    """Refuse a bundle without ``simulator``, ``num_candidates`` or ``slate_length`` positions.

    Raises:
        ConfigError: What the bundle lacks and how to get it.
    """
    pool = bundle.pool
    if simulator not in bundle.kinds:
        raise ConfigError(
            f"the bundle at {bundle.path} has no {simulator!r} simulator (it has "
            f"{bundle.kinds}); rebuild it with --kinds {simulator}"
        )
    if num_candidates > pool.num_candidates:
        raise ConfigError(
            f"num_candidates={num_candidates} but the bundle at {bundle.path} has "
            f"{pool.num_candidates} candidates per request; use N <= {pool.num_candidates} "
            "or a pipeline with more candidates"
        )
    if slate_length > pool.slate_length:
        raise ConfigError(
            f"slate_length={slate_length} but the simulators of {bundle.path} know "
            f"{pool.slate_length} positions; use L <= {pool.slate_length} or build from raw "
            f"data with PipelineConfig(slate_length={slate_length})"
        )
