"""The semantic-ID tokenizer: residual quantizers fitted on a given item matrix.

A residual quantizer gives similar items shared code prefixes: level 1 clusters
the item vectors, level 2 clusters what level 1 left unexplained (the residuals),
and so on, so an item's code is coarse-to-fine.

* :func:`fit_semantic_ids` fits by ``config.method``: :func:`fit_rq_kmeans`
  (residual K-means, one scikit-learn ``KMeans`` per level) or :func:`fit_rq_vae`,
  **fitted on the rows of training items only** (every item is then encoded by
  its nearest centroids, so an item without training interactions still gets a
  code);
* :func:`resolve_collisions`: items that share a whole code are told apart by a
  random *unused* code on the last level (``"random-last"``, GR2's "random last
  level"), or by an extra level holding their index within the shared code
  (``"extra-level"``);
* :func:`semantic_id_report`: uniqueness, per-level code usage and perplexity,
  reconstruction error, and how often items of one genre share their first code.
"""

from __future__ import annotations

import numpy as np

from simulators.data.errors import ConfigError
from simulators.data.semantic_id_config import SemanticIdConfig, SemanticIds


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
            torch.nn.Linear(dim, config.hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(config.hidden_dim, config.latent_dim),
        )
        decoder = torch.nn.Sequential(
            torch.nn.Linear(config.latent_dim, config.hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(config.hidden_dim, dim),
        )
        quantizer = ResidualVQ(
            dim=config.latent_dim,
            num_quantizers=config.levels,
            codebook_size=config.codebook_size,
            decay=config.decay,
            kmeans_init=True,
            threshold_ema_dead_code=config.dead_code_threshold,
        )
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
