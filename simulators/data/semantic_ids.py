"""Semantic IDs: each item as a short sequence of codes from a residual quantizer.

GloRank and GR2 generate items as semantic-ID (SID) token sequences instead of
candidate positions. A residual quantizer gives similar items shared code
prefixes: level 1 clusters the item vectors, level 2 clusters what level 1 left
unexplained (the residuals), and so on, so an item's code is coarse-to-fine.

This module is the tokenizer's core, on a given item matrix:

* :func:`fit_rq_kmeans`: residual K-means, one scikit-learn ``KMeans`` per level,
  **fitted on the rows of training items only** (every item is then encoded by
  its nearest centroids, so an item without training interactions still gets a
  code);
* :func:`resolve_collisions`: items that share a whole code are told apart by a
  random *unused* code on the last level (``"random-last"``, GR2's "random last
  level"), or by an extra level holding their index within the shared code
  (``"extra-level"``);
* :func:`semantic_id_report`: uniqueness, per-level code usage and perplexity,
  reconstruction error, and how often items of one genre share their first code.

Around the core:

* :func:`semantic_id_features`: the tokenizer's input, item content (genres, year,
  other side features) next to the learned item vector; an item without training
  interactions gets its vector part predicted from its content (a ridge
  regression fitted on the items that have interactions), so its code comes from
  content alone;
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from simulators._io import atomic_write
from simulators.data.errors import CacheError, ConfigError
from simulators.data.paths import cache_dir

#: Bumped whenever saved semantic IDs would be read differently or fitted differently.
SEMANTIC_ID_FORMAT_VERSION = 1
_METADATA_KEY = "__metadata__"

Method = Literal["rq-kmeans", "rq-vae"]
Collisions = Literal["random-last", "extra-level"]


@dataclass(frozen=True)
class SemanticIdConfig:
    """How semantic IDs are fitted.

    Attributes:
        method: ``"rq-kmeans"`` (residual K-means, scikit-learn) or ``"rq-vae"``
            (an autoencoder whose latent goes through ``vector-quantize-pytorch``'s
            ``ResidualVQ`` with EMA codebooks; ``pip install -e ".[rqvae]"``).
        levels: Code levels before collision handling (GR2 uses 4, GloRank 3-4).
        codebook_size: Codes per level.
        collisions: ``"random-last"`` (an unused last-level code for each item that
            shares a whole code with an earlier one) or ``"extra-level"`` (one more
            level: the item's index among those sharing its code).
        standardise: Scale every feature column to zero mean and unit variance
            (over the fitting rows) before quantizing, so no column dominates.
        n_init: K-means restarts per level (the best inertia is kept).
        latent_dim: RQ-VAE: width of the quantized latent.
        hidden_dim: RQ-VAE: width of the encoder's and decoder's hidden layer.
        epochs: RQ-VAE: passes over the fitting rows.
        batch_size: RQ-VAE: rows per step.
        learning_rate: RQ-VAE: Adam step size.
        decay: RQ-VAE: EMA decay of the codebooks.
        commitment: RQ-VAE: weight of the commitment loss (beta).
        dead_code_threshold: RQ-VAE: reset codes whose EMA usage falls below this
            (0, the default: never; GR2 found resets hurt uniqueness).
        seed: Seed of K-means, of the RQ-VAE's weights and batches, and of the
            random last-level codes.
    """

    method: Method = "rq-kmeans"
    levels: int = 3
    codebook_size: int = 64
    collisions: Collisions = "random-last"
    standardise: bool = True
    n_init: int = 4
    latent_dim: int = 32
    hidden_dim: int = 128
    epochs: int = 200
    batch_size: int = 256
    learning_rate: float = 1e-3
    decay: float = 0.95
    commitment: float = 0.25
    dead_code_threshold: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("rq-kmeans", "rq-vae"):
            raise ConfigError(f"method must be 'rq-kmeans' or 'rq-vae', got {self.method!r}")
        if self.collisions not in ("random-last", "extra-level"):
            raise ConfigError(
                f"collisions must be 'random-last' or 'extra-level', got {self.collisions!r}"
            )
        if not 1 <= self.levels <= 8:
            raise ConfigError(f"levels must be in [1, 8], got {self.levels}")
        if not 2 <= self.codebook_size <= 4096:
            raise ConfigError(f"codebook_size must be in [2, 4096], got {self.codebook_size}")
        for name in ("n_init", "latent_dim", "hidden_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.decay < 1:
            raise ConfigError(f"decay must be in (0, 1), got {self.decay}")


@dataclass
class SemanticIds:
    """Fitted semantic IDs.

    Attributes:
        codes: Code of every item, int ``[I, levels]`` (one more level with
            ``collisions="extra-level"``), after collision handling.
        raw_codes: The quantizer's codes before collision handling, ``[I, levels]``.
        codebooks: Codes of each level, ``[K_l, D]``: centroids in the standardised
            feature space (RQ-KMeans) or in the latent space (RQ-VAE).
        mean: Column means used to standardise, ``[D]`` (zeros if not standardised).
        scale: Column scales used to standardise, ``[D]`` (ones if not standardised).
        config: The :class:`SemanticIdConfig`.
        reconstruction: Each item as its raw code decodes it, standardised ``[I, D]``
            (``None`` when loaded from a file: the saved report summarises it).
    """

    codes: np.ndarray
    raw_codes: np.ndarray
    codebooks: list[np.ndarray]
    mean: np.ndarray
    scale: np.ndarray
    config: SemanticIdConfig
    reconstruction: np.ndarray | None

    @property
    def n_levels(self) -> int:
        """Levels of :attr:`codes` (with the extra level, if any)."""
        return self.codes.shape[1]

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Codes each level may hold.

        The codebook size, and for an extra disambiguation level the largest group
        of items sharing a code.
        """
        sizes = [self.config.codebook_size] * self.config.levels
        if self.n_levels > self.config.levels:
            sizes.append(int(self.codes[:, -1].max()) + 1)
        return tuple(sizes)

    @property
    def token_offsets(self) -> np.ndarray:
        """First token id of each level, int64 ``[levels]``."""
        return np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]]).astype(np.int64)

    @property
    def vocab_size(self) -> int:
        """Tokens over all levels: code ``c`` of level ``l`` is token ``offset[l] + c``."""
        return int(sum(self.level_sizes))

    @property
    def tokens(self) -> np.ndarray:
        """Every item's code as global token ids, int64 ``[I, levels]``.

        One id means one (level, code) pair in every request.
        """
        return self.codes + self.token_offsets


def fit_semantic_ids(
    features: np.ndarray, fit_rows: np.ndarray, config: SemanticIdConfig | None = None
) -> SemanticIds:
    """Semantic IDs of every item by ``config.method``, fitted on ``fit_rows`` only.

    Args:
        features: Item vectors, float ``[I, D]``.
        fit_rows: Items the quantizer learns from, int ``[M]`` or bool ``[I]``.
        config: Settings (default :class:`SemanticIdConfig`).
    """
    config = config or SemanticIdConfig()
    fit = fit_rq_vae if config.method == "rq-vae" else fit_rq_kmeans
    return fit(features, fit_rows, config)


def _checked_method(config: SemanticIdConfig, method: str) -> SemanticIdConfig:
    """``config``, refused if it names another method than the function fitting it."""
    if config.method != method:
        raise ConfigError(
            f"this fits {method!r} but the config says method={config.method!r}: call "
            "fit_semantic_ids(features, fit_rows, config), which follows the config"
        )
    return config


def _prepared(
    features: np.ndarray, fit_rows: np.ndarray, config: SemanticIdConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(standardised features, fitting rows, mean, scale)``, checked."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or not np.isfinite(features).all():
        raise ConfigError(
            f"features must be a finite float matrix [items, dims], got shape "
            f"{features.shape} with {int((~np.isfinite(features)).sum())} non-finite values"
        )
    rows = np.asarray(fit_rows)
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
    distinct = len(np.unique(features[rows], axis=0))
    if distinct < config.codebook_size:
        raise ConfigError(
            f"{distinct} distinct fitting items for codebook_size={config.codebook_size}: "
            "use a smaller codebook (or more features) so every code can be used"
        )
    if config.standardise:
        mean = features[rows].mean(axis=0)
        scale = features[rows].std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    else:
        mean, scale = np.zeros(features.shape[1]), np.ones(features.shape[1])
    return (features - mean) / scale, rows, mean, scale


def fit_rq_kmeans(
    features: np.ndarray, fit_rows: np.ndarray, config: SemanticIdConfig | None = None
) -> SemanticIds:
    """Residual K-means codes for every item, fitted on ``fit_rows`` only.

    Args:
        features: Item vectors, float ``[I, D]``.
        fit_rows: Items the quantizer learns from (e.g. items with training
            interactions), int ``[M]`` or bool ``[I]``; the others are only encoded.
        config: Settings (default :class:`SemanticIdConfig`).

    Raises:
        ConfigError: Non-finite features, or fewer distinct fitting rows than codes.
    """
    from sklearn.cluster import KMeans  # noqa: PLC0415  (heavy: only when fitting)

    config = _checked_method(config or SemanticIdConfig(), "rq-kmeans")
    standardised, rows, mean, scale = _prepared(features, fit_rows, config)
    residual = standardised
    codes = np.empty((len(features), config.levels), dtype=np.int64)
    codebooks = []
    for level in range(config.levels):
        # Later levels may have fewer distinct residuals than codes (e.g. items whose
        # first code already says everything): never ask K-means for more clusters.
        clusters = min(config.codebook_size, len(np.unique(residual[rows], axis=0)))
        kmeans = KMeans(clusters, n_init=config.n_init, random_state=config.seed + level)
        kmeans.fit(residual[rows])
        codes[:, level] = kmeans.predict(residual)
        codebooks.append(kmeans.cluster_centers_)
        residual = residual - kmeans.cluster_centers_[codes[:, level]]
    resolved = resolve_collisions(codes, config)
    reconstruction = standardised - residual  # the sum of each item's centroids
    return SemanticIds(resolved, codes, codebooks, mean, scale, config, reconstruction)


def fit_rq_vae(
    features: np.ndarray, fit_rows: np.ndarray, config: SemanticIdConfig | None = None
) -> SemanticIds:
    """RQ-VAE codes for every item, fitted on ``fit_rows`` only.

    An MLP encoder maps the standardised features to a ``latent_dim`` vector,
    ``vector_quantize_pytorch.ResidualVQ`` quantizes it with ``levels`` codebooks of
    ``codebook_size`` codes (EMA updates with ``decay``, K-means initialised, dead
    codes reset only if ``dead_code_threshold > 0``), an MLP decoder maps it back.
    Loss: reconstruction MSE plus ``commitment`` times the commitment loss (with EMA
    codebooks there is no codebook loss term).

    Raises:
        ConfigError: As :func:`fit_rq_kmeans`, or the ``rqvae`` extra is missing.
    """
    import torch  # noqa: PLC0415  (only this tokenizer needs torch)

    from simulators.base import isolated_torch_rng  # noqa: PLC0415

    try:
        from vector_quantize_pytorch import ResidualVQ  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "method='rq-vae' needs vector-quantize-pytorch: pip install -e \".[rqvae]\" "
            "(or use method='rq-kmeans')"
        ) from None
    config = _checked_method(config or SemanticIdConfig(method="rq-vae"), "rq-vae")
    standardised, rows, mean, scale = _prepared(features, fit_rows, config)
    dim = standardised.shape[1]
    with isolated_torch_rng(config.seed):
        encoder = torch.nn.Sequential(
            torch.nn.Linear(dim, config.hidden_dim), torch.nn.ReLU(),
            torch.nn.Linear(config.hidden_dim, config.latent_dim),
        )  # fmt: skip
        decoder = torch.nn.Sequential(
            torch.nn.Linear(config.latent_dim, config.hidden_dim), torch.nn.ReLU(),
            torch.nn.Linear(config.hidden_dim, dim),
        )  # fmt: skip
        quantizer = ResidualVQ(
            dim=config.latent_dim, num_quantizers=config.levels,
            codebook_size=config.codebook_size, decay=config.decay, kmeans_init=True,
            threshold_ema_dead_code=config.dead_code_threshold,
        )  # fmt: skip
        parameters = [*encoder.parameters(), *decoder.parameters()]
        optimiser = torch.optim.Adam(parameters, lr=config.learning_rate)
        data = torch.as_tensor(standardised, dtype=torch.float32)
        generator = torch.Generator().manual_seed(config.seed)
        for module in (encoder, decoder, quantizer):
            module.train()
        for _ in range(config.epochs):
            order = torch.as_tensor(rows)[torch.randperm(len(rows), generator=generator)]
            for start in range(0, len(order), config.batch_size):
                batch = data[order[start : start + config.batch_size]]
                quantized, _, commitment = quantizer(encoder(batch)[None])
                loss = torch.nn.functional.mse_loss(decoder(quantized[0]), batch)
                loss = loss + config.commitment * commitment.sum()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        for module in (encoder, decoder, quantizer):
            module.eval()
        with torch.no_grad():
            quantized, indices, _ = quantizer(encoder(data)[None])
            reconstruction = decoder(quantized[0]).double().numpy()
    codes = indices[0].numpy().astype(np.int64)
    codebooks = [book.detach().numpy() for book in quantizer.codebooks]
    resolved = resolve_collisions(codes, config)
    return SemanticIds(resolved, codes, codebooks, mean, scale, config, reconstruction)


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


def resolve_collisions(codes: np.ndarray, config: SemanticIdConfig) -> np.ndarray:
    """Codes made unique per item, as ``config.collisions`` says.

    ``"random-last"``: within each group of items sharing a whole code, the first
    (lowest index) keeps it and every other gets a random last-level code that no
    item with the same prefix uses. ``"extra-level"``: one more column, each item's
    index within its group (0 for items that were unique).

    Raises:
        ConfigError: ``"random-last"`` with more items under one prefix than the
            codebook has codes (use ``"extra-level"`` or a larger codebook).
    """
    codes = np.asarray(codes, dtype=np.int64)
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    rank = np.zeros(len(codes), dtype=np.int64)
    seen: dict[int, int] = {}
    for item, g in enumerate(group):
        rank[item] = seen.get(g, 0)
        seen[g] = rank[item] + 1
    if config.collisions == "extra-level":
        return np.concatenate([codes, rank[:, None]], axis=1)
    resolved = codes.copy()
    if (counts == 1).all():
        return resolved
    rng = np.random.default_rng(config.seed)
    prefixes, prefix_of = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    prefix_of = prefix_of.reshape(-1)
    for prefix in np.unique(prefix_of[rank > 0]):
        members = np.flatnonzero(prefix_of == prefix)
        used = set(codes[members, -1].tolist())
        free = np.array(sorted(set(range(config.codebook_size)) - used), dtype=np.int64)
        movers = members[rank[members] > 0]
        if len(movers) > len(free):
            raise ConfigError(
                f"{len(members)} items share the code prefix {prefixes[prefix].tolist()} but "
                f"the last level has {config.codebook_size} codes: use collisions="
                "'extra-level' or a larger codebook_size"
            )
        resolved[movers, -1] = rng.choice(free, size=len(movers), replace=False)
    return resolved


def semantic_id_report(
    ids: SemanticIds, features: np.ndarray, genres: np.ndarray | None = None
) -> dict[str, float | list[float]]:
    """How good the codes are.

    Args:
        ids: Fitted codes.
        features: The item vectors they were fitted on, ``[I, D]``.
        genres: Optional bool ``[I, G]`` genre flags.

    Returns:
        ``uniqueness`` (share of items whose final code no other item has) and
        ``raw_uniqueness`` (before collision handling); ``usage`` (share of each
        level's codes used) and ``perplexity`` (exp of the entropy of each level's
        code distribution; at most the codebook size) per level;
        ``reconstruction_error`` (mean squared error of the centroid sums over the
        total variance, standardised space: 0 is perfect, 1 no better than the
        mean); with ``genres``, ``genre_first_code`` (mean over genres of the
        chance that two items of the genre share their first code) and
        ``random_first_code`` (the same chance for two random items).
    """

    def unique_share(codes: np.ndarray) -> float:
        _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
        return float((counts[inverse.reshape(-1)] == 1).mean())

    if ids.reconstruction is None:
        raise ValueError(
            "these semantic IDs were loaded from a file, which keeps no reconstruction: "
            "read the report saved with them (load_semantic_ids(path)[1]['report'])"
        )
    standardised = (np.asarray(features, dtype=np.float64) - ids.mean) / ids.scale
    error = ((standardised - ids.reconstruction) ** 2).sum(axis=1).mean()
    total = ((standardised - standardised.mean(axis=0)) ** 2).sum(axis=1).mean()
    usage, perplexity = [], []
    for level in range(ids.n_levels):
        size = (
            len(ids.codebooks[level])
            if level < len(ids.codebooks)
            else int(ids.codes[:, level].max()) + 1
        )
        counts = np.bincount(ids.codes[:, level], minlength=size)
        probs = counts[counts > 0] / counts.sum()
        usage.append(float((counts > 0).mean()))
        perplexity.append(float(np.exp(-(probs * np.log(probs)).sum())))
    report: dict[str, float | list[float]] = {
        "uniqueness": unique_share(ids.codes),
        "raw_uniqueness": unique_share(ids.raw_codes),
        "usage": usage,
        "perplexity": perplexity,
        "reconstruction_error": float(error / total) if total > 0 else 0.0,
    }
    if genres is not None:
        first = ids.codes[:, 0]

        def same_first_code(items: np.ndarray) -> float:
            counts = np.bincount(first[items])
            pairs = len(items) * (len(items) - 1)
            return float((counts * (counts - 1)).sum() / pairs) if pairs else float("nan")

        genres = np.asarray(genres, dtype=bool)
        shares = [same_first_code(np.flatnonzero(genres[:, g])) for g in range(genres.shape[1])]
        report["genre_first_code"] = float(np.nanmean(shares))
        report["random_first_code"] = same_first_code(np.arange(len(first)))
    return report


__all__ = [
    "SEMANTIC_ID_FORMAT_VERSION", "SemanticIdConfig", "SemanticIds", "cached_semantic_ids",
    "fit_rq_kmeans", "fit_rq_vae", "fit_semantic_ids", "input_checksum",
    "items_with_interactions", "load_semantic_ids", "resolve_collisions", "save_semantic_ids",
    "semantic_id_features", "semantic_id_report",
]  # fmt: skip
