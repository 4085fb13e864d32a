"""What a semantic ID is: its config, and the fitted codes with their token layout.

:class:`SemanticIdConfig` says how codes are fitted; :class:`SemanticIds` holds
the fitted codes, their codebooks and their token layout.

The tokenizer that fits them is :mod:`simulators.data.semantic_id_tokenizer`; their
input, files and cache are :mod:`simulators.data.semantic_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from simulators.data.errors import ConfigError

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
