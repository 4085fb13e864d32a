"""The pipeline's choices: :class:`PipelineConfig`, validated and canonically serialised.

Every choice that turns ratings into reranking data (thresholds, k-core, slates,
split, retriever, candidates, injection, GR2 protocol, seed); its canonical JSON
is part of the processed data's cache key (:mod:`simulators.data.cache`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Literal

import numpy as np

from simulators.data.errors import ConfigError


@dataclass(frozen=True)
class PipelineConfig:
    """Every choice that turns ratings into reranking data.

    Attributes:
        k_core: Minimum ratings per user and per item (applied until stable).
        click_threshold: A rating at or above it is a click (positive): whole or
            half stars, 0.5-5 (ML-100K and ML-1M have whole stars 1-5 only).
        like_threshold: A rating at or above it is a like.
        slate_length: L, items per logged slate.
        num_candidates: N, candidates per request.
        split: ``"user"`` (time-ordered split per user) or ``"global"`` (global
            time cut-offs).
        valid_fraction: Share of each user's slates (or of all slates, by time, for
            ``split="global"``) that are validation.
        test_fraction: Same for test.
        retriever: ``"mf"`` (implicit ALS), ``"itemknn"`` or ``"pop"``.
        mf_factors: ALS latent dimension.
        mf_regularization: ALS L2 weight.
        mf_alpha: ALS confidence of observed interactions.
        mf_iterations: ALS sweeps.
        knn_neighbors: Neighbours kept per item for ``"itemknn"``.
        inject: Which logged items are forced into the candidates. ``"none"``
            (default): pure retrieval; logged positives count only where the
            retriever found them. ``"positives"`` / ``"slate"`` inject missed logged
            positives / all logged items: every metric against logged positives is
            then defined for every request, but it opens a label leak (an injected
            item is one the retriever ranked low, so "low retriever score" or "less
            popular" predicts "positive"; docs/data.md gives the measured size).
        inject_position: Where injected items go: ``"random"`` (a uniformly random
            slot; the lowest-scored retrieved items that are not required make room)
            or ``"score"`` (their retriever rank, which is almost always the bottom).
        gr2_candidates: K, candidates per GR2-protocol request.
        gr2_mode: ``"filter"`` keeps only requests whose retriever top K already
            holds the true next item (the K candidates are exactly the pre-ranker's
            list, so its order carries real signal); ``"inject"`` keeps every request
            with a positive and injects a missing true item per ``inject_position``
            (many more requests, but with ``"random"`` the initial order is then
            uninformative for most of them).
        seed: Seed of the retriever and of injection slots.
    """

    k_core: int = 5
    click_threshold: float = 4
    like_threshold: float = 5
    slate_length: int = 6
    num_candidates: int = 50
    split: Literal["user", "global"] = "user"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    retriever: Literal["mf", "itemknn", "pop"] = "mf"
    mf_factors: int = 64
    mf_regularization: float = 50.0
    mf_alpha: float = 10.0
    mf_iterations: int = 10
    knn_neighbors: int = 100
    inject: Literal["none", "positives", "slate"] = "none"
    inject_position: Literal["random", "score"] = "random"
    gr2_candidates: int = 10
    gr2_mode: Literal["filter", "inject"] = "filter"
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"PipelineConfig: {message}")

        hints = typing.get_type_hints(PipelineConfig)
        for item in dataclasses.fields(self):
            value, kind = getattr(self, item.name), hints[item.name]
            if typing.get_origin(kind) is typing.Literal:
                options = typing.get_args(kind)
                need(value in options, f"{item.name} must be one of {options}, got {value!r}")
            elif kind is int:
                need(
                    isinstance(value, (int, np.integer)) and not isinstance(value, bool),
                    f"{item.name} must be an integer, got {value!r}",
                )
            elif kind is float:
                need(
                    isinstance(value, (int, float, np.number)) and not isinstance(value, bool),
                    f"{item.name} must be a number, got {value!r}",
                )
        for name in ("k_core", "slate_length", "mf_factors", "mf_iterations", "knn_neighbors"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        need(
            0.5 <= self.click_threshold <= 5 and float(2 * self.click_threshold).is_integer(),
            f"click_threshold must be a rating 0.5-5 in half stars, got {self.click_threshold}",
        )
        need(
            self.click_threshold <= self.like_threshold <= 5
            and float(2 * self.like_threshold).is_integer(),
            f"like_threshold must be a rating in half stars from click_threshold "
            f"({self.click_threshold}) to 5, got {self.like_threshold}",
        )
        need(
            self.num_candidates >= self.slate_length,
            f"num_candidates ({self.num_candidates}) must be >= slate_length "
            f"({self.slate_length}): a list of L items is chosen among N candidates",
        )
        need(
            self.valid_fraction > 0
            and self.test_fraction > 0
            and self.valid_fraction + self.test_fraction < 1,
            "valid_fraction and test_fraction must be > 0 and sum to < 1, got "
            f"{self.valid_fraction} and {self.test_fraction}",
        )
        need(
            self.mf_regularization > 0,
            f"mf_regularization must be > 0, got {self.mf_regularization}",
        )
        need(self.mf_alpha >= 0, f"mf_alpha must be >= 0, got {self.mf_alpha}")
        need(
            2 <= self.gr2_candidates <= self.num_candidates,
            f"gr2_candidates must be in [2, num_candidates], got {self.gr2_candidates}",
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), used in cache keys and metadata."""
        fields = dataclasses.asdict(self)
        for name in ("click_threshold", "like_threshold"):
            # 4 and 4.0 are one threshold and one cache key (whole stars as before).
            if float(fields[name]).is_integer():
                fields[name] = int(fields[name])
        return json.dumps(fields, sort_keys=True)
