"""A synthetic world whose true user model is known.

Users and items have latent factors; items belong to categories. The *true* click
model (:class:`TrueClickModel`) is top-down and has every effect a reranker should
exploit:

* examination: ``exam_k = (1 / log2(k + 2)) ** position_bias``;
* taste: ``<u, v_i>`` plus an item bias (popularity);
* satiation: ``-satiation * (items of the same category above k)``;
* complementarity: ``+complementarity * C[c_i, c_j]`` summed over items above, for a
  fixed random set of complementary category pairs.

``P(click_k) = exam_k * sigmoid(bias + taste - satiation + complementarity)``.

A logging policy (softmax over a noisy taste estimate, shown in that order) writes
sessions as MovieLens-1M files (click = rating 5, skip = rating 2; one session = L
consecutive ratings), so simulators are learned from these logs by the same
pipeline as real data, while the true model scores any list exactly: the
sim-to-real error becomes measurable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from simulators._io import atomic_write
from simulators.base import PAD, ClickSimulator, SlateBatch
from simulators.data.movielens import ML1M_AGE_CODES, ML1M_GENRES
from simulators.data.synthetic_config import SyntheticConfig


class SyntheticWorld:
    """The latent parameters of a world, drawn from ``config.seed``."""

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config or SyntheticConfig()
        c = self.config
        rng = np.random.default_rng(c.seed)
        self.user_factors = rng.normal(0, 1 / np.sqrt(c.dim), (c.n_users, c.dim))
        self.item_category = rng.integers(0, c.n_categories, c.n_items)
        category_centres = rng.normal(0, 1, (c.n_categories, c.dim))
        self.item_factors = category_centres[self.item_category] + rng.normal(
            0, 0.5, (c.n_items, c.dim)
        )
        self.item_bias = rng.normal(0, 0.5, c.n_items)
        pairs = rng.random((c.n_categories, c.n_categories)) < 0.15
        pairs = np.triu(pairs, 1)
        self.complements = (pairs | pairs.T).astype(np.float32)
        # Observable user attributes loosely tied to tastes (written as demographics).
        self.user_gender = (self.user_factors[:, 0] > 0).astype(int)
        self.user_age = np.array(ML1M_AGE_CODES)[
            np.clip(((self.user_factors[:, 1] + 1) * 3.5).astype(int), 0, 6)
        ]
        self.user_occupation = rng.integers(0, 21, c.n_users)

    def true_model(self) -> TrueClickModel:
        """The true click model over world indices (users ``0..U-1``, items ``0..I-1``)."""
        return TrueClickModel(self)

    def write_logs(self, folder: str | Path) -> Path:
        """Write the logging policy's sessions as ML-1M files into ``folder``.

        Returns:
            The folder (``ratings.dat``, ``movies.dat``, ``users.dat``).
        """
        c = self.config
        folder = Path(folder)
        rng = np.random.default_rng(c.seed + 1)
        truth = self.true_model()
        popularity = np.exp(self.item_bias)
        popularity /= popularity.sum()
        lines = []
        users = np.repeat(np.arange(c.n_users), c.sessions_per_user)
        shown = np.empty((len(users), c.slate_length), dtype=np.int64)
        row = 0
        for user in range(c.n_users):
            # Like a rating log, a user meets each item at most once.
            unseen = np.ones(c.n_items, dtype=bool)
            for _ in range(c.sessions_per_user):
                weights = popularity * unseen
                pool = rng.choice(
                    c.n_items, size=c.pool_size, replace=False, p=weights / weights.sum()
                )
                estimate = (
                    self.user_factors[user] @ self.item_factors[pool].T + self.item_bias[pool]
                )
                estimate = estimate + rng.normal(0, c.policy_noise, c.pool_size)
                # Gumbel-top-k: L items without replacement from the softmax, in that order.
                gumbel = -np.log(-np.log(rng.random(c.pool_size)))
                order = np.argsort(-(estimate / c.policy_temperature + gumbel))[: c.slate_length]
                shown[row] = pool[order]
                unseen[shown[row]] = False
                row += 1
        batch = SlateBatch(
            torch.as_tensor(users),
            torch.as_tensor(shown),
            torch.empty(len(users), 0, dtype=torch.long),
        )
        with torch.no_grad():
            probs = truth.click_probs(batch).numpy()
        clicks = rng.random(probs.shape) < probs
        session = np.tile(np.arange(c.sessions_per_user), c.n_users)
        for row in range(len(users)):
            start = 978_300_000 + 3600 * int(session[row])
            for k in range(c.slate_length):
                rating = 5 if clicks[row, k] else 2
                lines.append(f"{users[row] + 1}::{shown[row, k] + 1}::{rating}::{start + k}\n")
        movies = "".join(
            f"{i + 1}::Item {i + 1} (2000)::{ML1M_GENRES[self.item_category[i]]}\n"
            for i in range(c.n_items)
        )
        users_text = "".join(
            f"{u + 1}::{'FM'[self.user_gender[u]]}::{self.user_age[u]}::"
            f"{self.user_occupation[u]}::00000\n"
            for u in range(c.n_users)
        )
        for name, text in (
            ("movies.dat", movies),
            ("users.dat", users_text),
            ("ratings.dat", "".join(lines)),
        ):
            atomic_write(folder / name, lambda out, text=text: out.write(text.encode("latin-1")))
        return folder


class TrueClickModel(ClickSimulator):
    """The world's true, top-down click model (see the module docstring).

    Args:
        world: The world whose parameters it uses.
        user_index: Optional map from the caller's user indices to world users
            (e.g. ``RerankData`` indices after k-core); default identity.
        item_index: Same for items.
    """

    def __init__(
        self,
        world: SyntheticWorld,
        user_index: np.ndarray | None = None,
        item_index: np.ndarray | None = None,
    ) -> None:
        c = world.config
        users = np.arange(c.n_users) if user_index is None else np.asarray(user_index)
        items = np.arange(c.n_items) if item_index is None else np.asarray(item_index)
        super().__init__(len(users), len(items))
        self.config = c
        as_tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        self.register_buffer("user_factors", as_tensor(world.user_factors[users]))
        self.register_buffer("item_factors", as_tensor(world.item_factors[items]))
        self.register_buffer("item_bias", as_tensor(world.item_bias[items]))
        self.register_buffer(
            "item_category", torch.as_tensor(world.item_category[items], dtype=torch.long)
        )
        self.register_buffer("complements", as_tensor(world.complements))

    def position_click_probs(self, batch: SlateBatch) -> torch.Tensor:
        """Examination times the sigmoid of taste, satiation and complementarity."""
        c = self.config
        items = batch.items.clamp(min=0)
        present = (batch.items != PAD).float()
        taste = (self.user_factors[batch.users][:, None, :] * self.item_factors[items]).sum(-1)
        category = self.item_category[items]
        same = (category[:, :, None] == category[:, None, :]).float()
        pair = self.complements[category[:, :, None], category[:, None, :]]
        above = torch.tril(torch.ones_like(same[0]), diagonal=-1) * present[:, None, :]
        satiation = (same * above).sum(-1)
        complement = (pair * above).sum(-1)
        k = torch.arange(batch.items.shape[1], dtype=torch.float32, device=items.device)
        exam = (1.0 / torch.log2(k + 2.0)) ** c.position_bias
        logit = (
            c.base_logit
            + self.item_bias[items]
            + taste
            - c.satiation * satiation
            + c.complementarity * complement
        )
        return exam * torch.sigmoid(logit)


def true_simulator_for(data, synthetic: SyntheticConfig | None = None) -> TrueClickModel:
    """The true click model over a processed synthetic dataset's user and item indices.

    Args:
        data: ``load_rerank_data("synthetic", synthetic=...)`` output (a
            :class:`~simulators.data.pipeline.RerankData`).
        synthetic: The same world config that built ``data`` (default config).
    """
    if data.name != "synthetic":
        raise ValueError(f"true_simulator_for needs synthetic data, got {data.name!r}")
    world = SyntheticWorld(synthetic)
    # Raw ids in the written logs are world indices + 1.
    return TrueClickModel(world, user_index=data.user_ids - 1, item_index=data.item_ids - 1)
