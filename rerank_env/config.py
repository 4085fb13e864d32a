"""What a reranking task is built from: :class:`TaskConfig` and :class:`ColdStartConfig`.

Every environment, :func:`~rerank_env.task.make_task`, ``rerank-env compare``,
``agents.train``, the SB3 wrappers and the benchmarks read one frozen, validated
:class:`TaskConfig`; the environments take its fields as keyword arguments
(``gym.make("SlateRerank-v0", num_candidates=20)``) or a built task (``task=``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from simulators.bundle import HELD_OUT_SPLITS
from simulators.bundle_store import BundleSource
from simulators.composed import AssumedComposition, CompositionSetting, composition_from
from simulators.data import PipelineConfig
from simulators.data.datasets import DATASETS
from simulators.data.errors import ConfigError
from simulators.data.paths import download_hint
from simulators.data.semantic_id_config import SemanticIdConfig
from simulators.data.synthetic_config import SyntheticConfig
from simulators.factory import MODEL_KINDS

#: What a request offers: the first N of the initial ranking, or the GR2 protocol's K.
PROTOCOLS = ("rerank", "gr2")
#: What the observations' vectors are: the upstream retriever's (default) or the
#: training simulator's own (a named ablation: they hand agents the reward model).
REPRESENTATIONS = ("retriever", "privileged")
#: Environment keyword arguments that shape episodes, not the task.
EPISODE_FIELDS = ("reward_mode", "click_mode", "split", "features", "render_mode")


@dataclass(frozen=True)
class ColdStartConfig:
    """Cold start: a seeded share of items that agents never learn on.

    The withheld items are removed from every request of ``splits`` (candidates,
    histories, logged slates; see :meth:`~simulators.request_pool.RequestPool.withholding`),
    from the semantic-ID tokenizer's fit and from the agents' feature table (their
    observed vectors are replaced by a ridge prediction from content, as for any item
    without training interactions). The simulators, fitted beforehand on every
    item, still score them, and test requests still hold them.

    Attributes:
        fraction: Share of the items withheld, in ``(0, 0.5]``.
        seed: Chooses the items and the candidates that replace them.
        splits: Splits whose requests never hold a withheld item (test must not
            be one: it is where cold start is measured).
    """

    fraction: float = 0.1
    seed: int = 0
    splits: tuple[str, ...] = ("train", "valid")

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not 0.0 < float(self.fraction) <= 0.5:
            raise ConfigError(
                f"ColdStartConfig.fraction must be in (0, 0.5], got {self.fraction!r}; "
                "it is the share of items withheld from training"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ConfigError(f"ColdStartConfig.seed must be an integer, got {self.seed!r}")
        splits = tuple(self.splits)
        if not splits or "test" in splits or not set(splits) <= {"train", "valid"}:
            raise ConfigError(
                f"ColdStartConfig.splits must be a non-empty subset of ('train', 'valid'), "
                f"got {self.splits!r}; test requests keep the withheld items"
            )
        object.__setattr__(self, "splits", splits)

    def withheld(self, n_items: int) -> np.ndarray:
        """Bool ``[n_items]``: the withheld items (``round(fraction * n_items)``, at least 1)."""
        count = max(1, round(self.fraction * n_items))
        chosen = np.random.default_rng(self.seed).choice(n_items, size=count, replace=False)
        mask = np.zeros(n_items, dtype=bool)
        mask[chosen] = True
        return mask


@dataclass(frozen=True)
class TaskConfig:
    """Every option of a reranking task: its data, simulators, size and protocol.

    Where the simulators come from (:mod:`simulators.bundle_store`): ``bundle=PATH``
    loads that bundle folder; ML-100K within the embedded bundle's size (at most 50
    candidates and 6 positions, a simulator kind it has, no ``data_dir`` or
    ``pipeline``, the default fit) uses the embedded bundle; otherwise the raw data is
    processed and a bundle with the chosen simulator is fitted on first use and
    cached (``$RERANK_ENV_CACHE/bundles``).

    Attributes:
        dataset: ``"ml-100k"``, ``"synthetic"``, or another MovieLens release
            (``"ml-1m"``, ``"ml-10m"``, ``"ml-20m"``, ``"ml-25m"``, ``"ml-32m"``,
            ``"ml-latest"``, ``"ml-latest-small"``; these need ``data_dir``).
        data_dir: Folder of the raw files (stored resolved: the working directory
            may change).
        bundle: A bundle folder to use instead (stored resolved).
        simulator: ``"transformer"`` (context-aware), ``"pbm"``, ``"dcm"``,
            ``"cascade"`` or ``"pointwise"``.
        num_candidates: N, candidates offered per request (the first N of the
            initial ranking).
        slate_length: L, items placed per episode.
        composition: How examination and list effects sit on top of the learned
            simulator: ``None`` (default) is the dataset's default, ``"fitted"`` in
            the synthetic world (its logs identify the effects) and an
            :class:`~simulators.composed.AssumedComposition` elsewhere (ML-100K's
            rating logs support almost no list effect, so the effects there are
            assumed). An :class:`~simulators.composed.AssumedComposition`
            (``"assumed"`` is one with the bundle's default strengths: the DCG
            examination curve and diminishing returns of strength 2), ``"fitted"``
            (both simulators' examination, redundancy strength and
            complementarity fitted on the training logs on top of each ensemble
            member, :meth:`~simulators.bundle.SimulatorBundle.fitted_composition`;
            the task's ``description`` records the values) or ``"none"`` (the
            learned simulator alone). A dict of ``AssumedComposition`` fields is
            read as one.
        held_out: How the held-out evaluation simulator (the judge) is kept apart
            from the training one: ``"sessions"`` (fitted on the other half of every
            user's sessions: the default, and the embedded bundle's), ``"seed"``
            (the same logs, another seed) or ``"users"`` (the other half of the
            users). ``None`` (default) is ``"sessions"``, or with ``bundle=...``
            whatever that bundle was built with.
        representations: The vectors the observations carry beside side features:
            ``"retriever"`` (default: the upstream retriever's own user and item
            vectors, what a deployed reranker has) or ``"privileged"`` (the training
            simulator's first member's learned vectors: an ablation that hands
            agents the reward model's parameters).
        weight_decay_per_epoch: Fit the simulators with AdamW's decoupled weight
            decay of this much per pass over the logs
            (``BundleConfig.weight_decay_per_epoch``) instead of the bundles' Adam
            L2 (``None``, default); not ``None`` fits a bundle.
        pipeline: Data pipeline settings for a non-embedded dataset (default:
            ``PipelineConfig(num_candidates=max(N, 50), slate_length=L)``).
        synthetic: The synthetic world (default ``SyntheticConfig(slate_length=L)``
            when ``dataset="synthetic"``).
        semantic_ids: Tokenizer settings of ``task.semantic_ids`` (default
            ``SemanticIdConfig()``: RQ-KMeans, 3 levels of 64 codes).
        cold_start: Withhold a seeded share of items from the training (and
            validation) requests, the tokenizer's fit and the agents' features;
            ``None`` (default) withholds nothing.
        protocol: ``"rerank"`` (default): each request offers the first N of the
            initial ranking. ``"gr2"``: the GR2 protocol
            (:meth:`~rerank_env.task.RerankTask.gr2_task` with ``slate_length``
            slots): each request offers the pre-ranker's K candidates (the
            pipeline's ``gr2_candidates``, 10), one of which is the user's true
            next item.
        device: Where simulators run (``"cpu"``, ``"cuda"``).

    Raises:
        ConfigError: An invalid value or combination, with what was expected and
            how to fix it.
    """

    dataset: str = "ml-100k"
    data_dir: str | None = None
    bundle: str | None = None
    simulator: str = "transformer"
    num_candidates: int = 50
    slate_length: int = 6
    composition: CompositionSetting | None = None
    held_out: str | None = None
    representations: str = "retriever"
    weight_decay_per_epoch: float | None = None
    pipeline: PipelineConfig | None = None
    synthetic: SyntheticConfig | None = None
    semantic_ids: SemanticIdConfig | None = None
    cold_start: ColdStartConfig | None = None
    protocol: str = "rerank"
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._check_sizes()
        self._check_sources()
        self._check_configs()
        if self.composition is not None:
            object.__setattr__(self, "composition", composition_from(self.composition))
        object.__setattr__(self, "device", str(self.device))
        for name in ("data_dir", "bundle"):  # resolved: the working directory may change
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(Path(value).resolve()))
        if self.dataset == "synthetic" and self.synthetic is None:
            object.__setattr__(self, "synthetic", SyntheticConfig(slate_length=self.slate_length))

    def _check_sizes(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.simulator not in MODEL_KINDS:
            raise ConfigError(f"simulator must be one of {MODEL_KINDS}, got {self.simulator!r}")
        for name in ("num_candidates", "slate_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_candidates < self.slate_length:
            raise ConfigError(
                f"num_candidates (N = {self.num_candidates}) must be >= slate_length (L = "
                f"{self.slate_length}): a list of L distinct items needs at least L candidates"
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"protocol must be one of {PROTOCOLS}, got {self.protocol!r} ('gr2': K "
                "pre-ranked candidates holding the true next item)"
            )
        if self.protocol == "gr2" and self.bundle is None:  # refuse before building anything
            check_gr2_slots(self.slate_length, (self.pipeline or PipelineConfig()).gr2_candidates)

    def _check_sources(self) -> None:
        if (
            self.dataset not in ("ml-100k", "synthetic")
            and self.data_dir is None
            and self.bundle is None
        ):
            raise ConfigError(
                f"dataset={self.dataset!r} needs data_dir=PATH, the folder holding its files. "
                f"{download_hint(self.dataset)}"
            )
        if self.data_dir is not None and not Path(self.data_dir).exists():
            raise ConfigError(
                f"data_dir {str(self.data_dir)!r} does not exist; pass the dataset folder"
            )
        if self.held_out is not None and self.held_out not in HELD_OUT_SPLITS:
            raise ConfigError(
                f"held_out must be one of {HELD_OUT_SPLITS}, got {self.held_out!r} ('sessions': "
                "the held-out simulator fitted on the other half of every user's sessions)"
            )
        if self.held_out is not None and self.bundle is not None:
            raise ConfigError(
                f"held_out={self.held_out!r} fits a bundle that way; bundle=... is already "
                "fitted (its manifest's bundle_config says how): drop one of them"
            )
        if self.representations not in REPRESENTATIONS:
            raise ConfigError(
                f"representations must be one of {REPRESENTATIONS}, got "
                f"{self.representations!r} ('retriever': the upstream retriever's vectors; "
                "'privileged': the training simulator's, an ablation)"
            )
        decay = self.weight_decay_per_epoch
        if decay is not None and (self.bundle is not None or not decay >= 0):
            raise ConfigError(
                f"weight_decay_per_epoch={decay!r} fits a bundle with that decay: it must be "
                ">= 0 and cannot go with bundle=... (already fitted)"
            )

    def _check_configs(self) -> None:
        expected = (
            ("pipeline", PipelineConfig, "simulators.data"),
            ("synthetic", SyntheticConfig, "simulators.data.synthetic_config"),
            ("semantic_ids", SemanticIdConfig, "simulators.data.semantic_ids"),
            ("cold_start", ColdStartConfig, "rerank_env"),
        )
        for name, kind, home in expected:
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(
                    f"{name} must be a {kind.__name__} ({home}) or None, got {value!r}"
                )
        if self.synthetic is not None and self.dataset != "synthetic":
            raise ConfigError(
                f"synthetic=... only applies to dataset='synthetic', not {self.dataset!r}"
            )
        if self.synthetic is not None and self.synthetic.slate_length != self.slate_length:
            raise ConfigError(
                f"slate_length={self.slate_length} but the synthetic world logs sessions of "
                f"{self.synthetic.slate_length}; pass "
                f"SyntheticConfig(slate_length={self.slate_length})"
            )

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The field names (the task keyword arguments every environment accepts)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> TaskConfig:
        """A copy with ``changes`` (validated again).

        Raises:
            ConfigError: An unknown field, naming the valid ones.
        """
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise ConfigError(
                f"unknown TaskConfig field(s) {unknown}; valid: {list(self.fields())}"
            )
        return dataclasses.replace(self, **changes)

    def resolved_composition(self) -> CompositionSetting:
        """The composition the task is built with: ``composition``, or the dataset's default.

        ``None`` stays ``None`` in the config (so that ``replace(dataset=...)`` picks
        the new dataset's default) and resolves here: ``"fitted"`` in the synthetic
        world, :class:`~simulators.composed.AssumedComposition` elsewhere.
        """
        if self.composition is not None:
            return self.composition
        return "fitted" if self.dataset == "synthetic" else AssumedComposition()

    def bundle_source(self) -> BundleSource:
        """What decides the bundle (and true simulator) this task is built from."""
        return BundleSource(
            dataset=self.dataset,
            data_dir=self.data_dir,
            bundle_dir=self.bundle,
            simulator=self.simulator,
            num_candidates=self.num_candidates,
            slate_length=self.slate_length,
            pipeline=self.pipeline,
            synthetic=self.synthetic,
            device=self.device,
            held_out=self.held_out or "sessions",
            weight_decay_per_epoch=self.weight_decay_per_epoch,
        )

    @classmethod
    def for_env(cls, env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> TaskConfig:
        """The config behind ``gym.make(env_id, **env_kwargs)``.

        The registered variant's fields and ``env_kwargs`` together; episode
        arguments (:data:`EPISODE_FIELDS`) are not part of the task and are skipped.

        Raises:
            ConfigError: ``env_id`` is not a rerank-env environment, or an unknown
                keyword argument (naming the valid ones).
        """
        try:
            spec = gym.spec(env_id)
        except gym.error.Error:
            spec = None
        if spec is None or not str(spec.entry_point).startswith("rerank_env."):
            from rerank_env import VARIANTS  # noqa: PLC0415  (the package registers them)

            raise ConfigError(f"unknown environment {env_id!r}; valid: {sorted(VARIANTS)}")
        kwargs = {**spec.kwargs, **(env_kwargs or {})}
        fields = {k: v for k, v in kwargs.items() if k not in EPISODE_FIELDS}
        unknown = sorted(set(fields) - set(cls.fields()))
        if unknown:
            raise ConfigError(
                f"unknown environment keyword argument(s) {unknown}; valid: "
                f"{sorted((*cls.fields(), *EPISODE_FIELDS))}"
            )
        return cls(**fields)


def check_gr2_slots(slate_length: int, k: int) -> None:
    """Refuse a GR2-protocol slate longer than its ``k`` candidates.

    Raises:
        ConfigError: ``slate_length > k``.
    """
    if slate_length > k:
        raise ConfigError(
            f"protocol='gr2' offers K = {k} candidates per request: slate_length must be "
            f"<= {k}, got {slate_length}"
        )
