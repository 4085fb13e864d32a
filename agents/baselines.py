"""Reference rerankers: initial order, random, pointwise greedy, beam search, oracle.

And a probe of the observations, :class:`VectorDotProduct`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, ClassVar

import numpy as np
import torch

from agents.base import (
    Agent,
    ScoringAgent,
    TrainableAgent,
    UnsupportedTaskError,
    complete_by_scores,
    empty_prefixes,
)
from agents.common.config import AgentConfig
from agents.common.distributed import DataParallel
from agents.common.telemetry import TrainingLogger
from rerank_env.task import RerankTask
from simulators.base import PAD
from simulators.click_models import Attractiveness, PointwiseModel
from simulators.search import beam_search
from simulators.training import fit_simulator


class InitialOrder(ScoringAgent):
    """The upstream ranker's order: the first ``L`` candidates (what reranking must beat)."""

    name = "initial-order"

    def scores(self, task: RerankTask, requests: np.ndarray) -> np.ndarray:
        """The upstream ranker's scores (its order)."""
        return np.asarray(task.scores_np[np.asarray(requests)], dtype=np.float64)


class VectorDotProduct(ScoringAgent):
    """A probe of the observations: rank by the dot product of their user and item vectors.

    No training. It reads the vectors the observations carry after the side
    features (``task.user_table[:, Du:]`` and ``task.item_table[:, Di:]``). With the
    default ``representations="retriever"`` these are the upstream retriever's
    factors, so it is close to the initial order; with ``"privileged"`` (the
    training simulator's own vectors, whose dot product is its attractiveness
    logit) it nearly matches a trained pointwise click model: the observations
    then hand agents the reward model.
    """

    name = "vector-dot"

    def check_task(self, task: RerankTask) -> None:
        """Refuse a task whose observations carry no (or unequal) user and item vectors."""
        users, items = _observed_vector_sizes(task)
        if users != items or users == 0:
            raise UnsupportedTaskError(
                f"vector-dot needs user and item vectors of one size after the side features; "
                f"this task's observations carry {users} and {items} (a retriever without "
                "vectors, such as 'pop' or 'itemknn', gives none)"
            )

    def scores(self, task: RerankTask, requests: np.ndarray) -> np.ndarray:
        """``<user vector, item vector>`` of every candidate, ``[B, N]``."""
        self.check_task(task)
        requests = np.asarray(requests, dtype=np.int64)
        user_side, item_side = task.pool.user_features.shape[1], task.pool.item_features.shape[1]
        users = task.user_table[task.pool.request_user[requests], user_side:]
        items = task.item_table[task.candidates_np[requests], item_side:]
        return np.einsum("bd,bnd->bn", users.astype(np.float64), items.astype(np.float64))


def _observed_vector_sizes(task: RerankTask) -> tuple[int, int]:
    """Columns of the user and item tables after the side features."""
    return (
        task.user_table.shape[1] - task.pool.user_features.shape[1],
        task.item_table.shape[1] - task.pool.item_features.shape[1],
    )


class RandomAgent(Agent):
    """Uniformly random lists, from its own seeded generator.

    Args:
        seed: Seed of the agent's generator.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.generator = np.random.default_rng(seed)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"seed": self.seed}

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Complete each prefix with unused candidates in random order."""
        scores = self.generator.random((len(requests), task.num_candidates))
        return complete_by_scores(scores, task.slate_length, prefixes)


@dataclasses.dataclass(frozen=True)
class PointwiseGreedyConfig(AgentConfig):
    """PointwiseGreedy's settings.

    Attributes:
        dim: Embedding size.
        epochs: Maximum training epochs.
        seed: Initialisation and shuffling seed.
    """

    dim: int = 32
    epochs: int = 20
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {"epochs": 5}
    TINY: ClassVar[dict[str, Any]] = {"epochs": 3}

    def validate(self) -> None:
        """Refuse out-of-range fields."""
        self._at_least(1, "dim", "epochs")


class PointwiseGreedy(TrainableAgent, ScoringAgent):
    """Sort candidates by a pointwise click model learned from the logged slates.

    The model (matrix factorisation with side features, position-blind) is fitted
    by :meth:`fit` on the task's *training* logged slates, with early stopping on
    the validation slates; it never sees a simulator.

    Args:
        config: A :class:`PointwiseGreedyConfig` (default: its defaults).
        **overrides: Config fields to change, e.g. ``PointwiseGreedy(epochs=5, seed=1)``.
    """

    name = "pointwise-greedy"
    curve = ("epoch", "valid_nll")
    config_class = PointwiseGreedyConfig

    def __init__(self, config: PointwiseGreedyConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.settings: PointwiseGreedyConfig = self._settings_from(config, overrides)

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        pool = task.pool
        return {
            "user_features": list(pool.user_features.shape),
            "item_features": list(pool.item_features.shape),
            "max_positions": pool.slate_length,
        }

    def _build(self, task: RerankTask | None = None) -> None:
        info = self.build_info
        if task is None:  # loading: the checkpoint restores the feature buffers
            users = np.zeros(info["user_features"], np.float32)
            items = np.zeros(info["item_features"], np.float32)
        else:
            users, items = task.pool.user_features, task.pool.item_features
        attractiveness = Attractiveness(
            torch.as_tensor(users),
            torch.as_tensor(items),
            dim=self.settings.dim,
            seed=self.settings.seed,
        )
        self.modules = {
            "model": PointwiseModel(attractiveness, max_positions=info["max_positions"])
        }

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Fit the pointwise model on the task's training logs."""
        cfg = self.settings
        report = fit_simulator(
            self.modules["model"], task.pool, epochs=cfg.epochs, seed=cfg.seed, progress=progress
        )
        for epoch, (train, valid) in enumerate(
            zip(report.train_nll, report.valid_nll, strict=True), start=1
        ):
            logger.log("model", step=epoch, epoch=epoch, train_nll=train, valid_nll=valid)

    @torch.no_grad()
    def scores(self, task: RerankTask, requests: np.ndarray) -> np.ndarray:
        """Click logits of every candidate, ``[B, N]``."""
        self._require_built()
        rows = torch.tensor(np.asarray(requests), dtype=torch.long, device=task.device)
        model = self.modules["model"].to(task.device).eval()
        return model.attractiveness(task.users[rows], task.candidates[rows]).cpu().numpy()


class BeamSearchAgent(Agent):
    """Beam search against one of the task's simulators (a strong reference).

    Args:
        width: Beam width.
        simulator: ``"train"`` (the reward agents train on), ``"eval"`` or ``"true"``.
    """

    def __init__(self, width: int = 8, simulator: str = "train") -> None:
        self.width, self.simulator = width, simulator
        self.name = f"beam-{width}"

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"width": self.width, "simulator": self.simulator}

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """The best list found by beam search, completing each prefix."""
        requests = np.asarray(requests, dtype=np.int64)
        length = task.slate_length
        prefixes = empty_prefixes(len(requests), length) if prefixes is None else prefixes
        counts = (prefixes != PAD).sum(axis=1)
        lists = np.empty((len(requests), length), dtype=np.int64)
        model = task.simulators[self.simulator]
        for count in np.unique(counts):  # one search per prefix length
            group = np.flatnonzero(counts == count)
            rows = torch.as_tensor(requests[group], device=task.device)
            prefix = torch.as_tensor(prefixes[group, :count], device=task.device)
            slots, _ = beam_search(
                model,
                task.users[rows],
                task.histories[rows],
                task.candidates[rows],
                length,
                width=self.width,
                prefix=prefix,
                return_slots=True,
            )
            lists[group] = slots.cpu().numpy()
        return lists


class OracleAgent(Agent):
    """The best list by exhaustive enumeration, where ``P(N, L)`` is small.

    Args:
        simulator: Simulator role to maximise.
        max_lists: Refuse tasks with more lists than this per request.
        chunk: Lists scored per simulator call.
    """

    name = "oracle"

    def __init__(
        self, simulator: str = "train", max_lists: int = 200_000, chunk: int = 65_536
    ) -> None:
        self.simulator, self.max_lists, self.chunk = simulator, max_lists, chunk

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"simulator": self.simulator, "max_lists": self.max_lists, "chunk": self.chunk}

    def check_task(self, task: RerankTask) -> None:
        """Refuse tasks with more than ``max_lists`` lists per request."""
        n, length = task.num_candidates, task.slate_length
        total = math.perm(n, length)
        if total > self.max_lists:
            raise UnsupportedTaskError(
                f"the oracle would score P({n}, {length}) = {total:,} lists per request "
                f"(max_lists={self.max_lists:,}); use a smaller N or L, e.g. "
                "num_candidates=10, slate_length=4"
            )

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Enumerate every completion of each prefix and keep the best."""
        self.check_task(task)
        n, length = task.num_candidates, task.slate_length
        requests = np.asarray(requests, dtype=np.int64)
        prefixes = empty_prefixes(len(requests), length) if prefixes is None else prefixes
        lists = np.empty((len(requests), length), dtype=np.int64)
        for row, request in enumerate(requests):
            filled = prefixes[row][prefixes[row] != PAD]
            rest = [c for c in range(n) if c not in set(filled.tolist())]
            tails = np.array(list(itertools.permutations(rest, length - len(filled))))
            options = np.concatenate(
                [np.broadcast_to(filled, (len(tails), len(filled))), tails.reshape(len(tails), -1)],
                axis=1,
            ).astype(np.int64)
            values = np.concatenate(
                [
                    task.expected_reward(np.full(len(part), request), part, self.simulator)
                    .cpu()
                    .numpy()
                    for part in np.array_split(options, max(1, -(-len(options) // self.chunk)))
                ]
            )
            lists[row] = options[int(np.argmax(values))]
        return lists
