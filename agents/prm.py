"""PRM: a Transformer over the initial list that rescores every candidate, from logs.

Personalized Re-ranking for Recommendation (Pei et al., RecSys 2019). Each
candidate's input is its features, the user's (PRM's personalised vector) and an
embedding of its rank in the initial list; self-attention over the whole candidate
list lets each score depend on the other candidates. Trained on the *logged*
positives of the training requests with PRM's list-wise loss (softmax cross-entropy
over the candidates, the positives as targets); it never sees a simulator. The
list is the top L by score.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from agents.base import ScoringAgent, TrainableAgent, complete_by_scores
from agents.common.config import AgentConfig
from agents.common.distributed import DataParallel
from agents.common.nn import CandidateSetEncoder, input_dims, request_inputs
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, minibatches, training_mode
from agents.metrics import log_metrics
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.progress import progress_bar


class PRMModel(nn.Module):
    """Candidate-set encoder with a scoring head: one logit per candidate."""

    def __init__(
        self, user_dim: int, item_dim: int, *, dim: int, layers: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.encoder = CandidateSetEncoder(
            user_dim,
            item_dim,
            dim=dim,
            layers=layers,
            heads=heads,
            initial_order=True,
            dropout=dropout,
        )
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def forward(self, inputs: Any) -> torch.Tensor:
        """Candidate logits ``[B, N]``."""
        encoded, _ = self.encoder(inputs)
        return self.head(encoded)[..., 0]


@dataclasses.dataclass(frozen=True)
class PRMConfig(AgentConfig):
    """PRM's settings.

    Attributes:
        dim: Transformer width.
        layers: Encoder layers.
        heads: Attention heads.
        dropout: Dropout in the encoder while training.
        epochs: Maximum epochs over the training requests.
        batch_size: Requests per step.
        learning_rate: Adam step size.
        weight_decay: Adam weight decay.
        patience: Stop after this many epochs without a better validation loss.
        train_requests: Train on this many training requests (a random subset of those
            with a logged positive, for tests and quick runs); ``None``: all.
        seed: Initialisation and shuffling seed.
    """

    dim: int = 64
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 3
    train_requests: int | None = None
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {"epochs": 2}
    TINY: ClassVar[dict[str, Any]] = {"epochs": 2, "train_requests": 2000}

    def validate(self) -> None:
        """Refuse out-of-range fields."""
        self._at_least(
            1, "dim", "layers", "heads", "epochs", "batch_size", "patience", "train_requests"
        )


class PRM(TrainableAgent, ScoringAgent):
    """Personalized re-ranking model (list-wise Transformer scorer trained on logs).

    Args:
        config: A :class:`PRMConfig` (default: its defaults).
        **overrides: Config fields to change, e.g. ``PRM(epochs=2)``.
    """

    name = "prm"
    curve = ("epoch", "valid_ndcg")
    config_class = PRMConfig

    def __init__(self, config: PRMConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.settings: PRMConfig = self._settings_from(config, overrides)

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        user_dim, item_dim = input_dims(task)
        return {"user_dim": user_dim, "item_dim": item_dim}

    def _build(self, task: RerankTask | None = None) -> None:
        with isolated_torch_rng(self.settings.seed):
            model = PRMModel(
                self.build_info["user_dim"],
                self.build_info["item_dim"],
                dim=self.settings.dim,
                layers=self.settings.layers,
                heads=self.settings.heads,
                dropout=self.settings.dropout,
            )
        self.modules = {"model": model}

    @staticmethod
    def _loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """Soft-max cross-entropy with the positives as (uniform) targets, per request."""
        targets = positives / positives.sum(dim=1, keepdim=True)
        return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Train on the logged positives of the training requests; early stopping on valid."""
        cfg = self.settings
        model = self.modules["model"].to(task.device)
        generator = np.random.default_rng(cfg.seed)
        train, valid = (self._scorable(task, split) for split in ("train", "valid"))
        if cfg.train_requests is not None and cfg.train_requests < len(train):
            subset = np.random.default_rng(cfg.seed + 2).permutation(len(train))
            train = np.sort(train[subset[: cfg.train_requests]])
        optimiser = torch.optim.Adam(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        best, best_state, waited = float("inf"), None, 0
        bar = progress_bar(cfg.epochs, "PRM", progress)
        for epoch in range(cfg.epochs):
            losses = []
            with training_mode(model), isolated_torch_rng(cfg.seed + epoch):  # dropout
                for rows in minibatches(train, cfg.batch_size, generator):
                    positives = torch.as_tensor(task.logged_positives(rows), device=task.device)
                    loss = self._loss(model(request_inputs(task, rows)), positives.float()).mean()
                    norm = gradient_step(optimiser, loss, list(model.parameters()))
                    losses.append(loss.item())
                    logger.log("model", loss=losses[-1], grad_norm=norm)
            valid_loss, valid_ndcg = self._validate(task, valid)
            logger.log(
                "model_valid",
                step=epoch + 1,
                epoch=epoch + 1,
                train_loss=float(np.mean(losses)),
                valid_loss=valid_loss,
                valid_ndcg=valid_ndcg,
            )
            bar.update()
            bar.set_postfix(valid_loss=f"{valid_loss:.4f}")
            if valid_loss < best - 1e-4:
                best, waited = valid_loss, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)

    @staticmethod
    def _scorable(task: RerankTask, split: str) -> np.ndarray:
        """Requests of ``split`` whose candidates hold a logged positive."""
        requests = task.requests(split)
        return requests[task.logged_positives(requests).any(axis=1)]

    @torch.no_grad()
    def _validate(self, task: RerankTask, requests: np.ndarray) -> tuple[float, float]:
        model = self.modules["model"].eval()
        losses, ndcgs = [], []
        for start in range(0, len(requests), 1024):
            rows = requests[start : start + 1024]
            positives = task.logged_positives(rows)
            logits = model(request_inputs(task, rows))
            positives_t = torch.as_tensor(positives, device=logits.device).float()
            losses.append(self._loss(logits, positives_t).cpu().numpy())
            lists = complete_by_scores(logits.cpu().numpy(), task.slate_length, None)
            ndcgs.append(log_metrics(lists, positives)["ndcg"])
        return float(np.concatenate(losses).mean()), float(np.nanmean(np.concatenate(ndcgs)))

    @torch.no_grad()
    def scores(self, task: RerankTask, requests: np.ndarray) -> np.ndarray:
        """The model's logit of every candidate, ``[B, N]``."""
        self._require_built()
        model = self.modules["model"].to(task.device).eval()
        return model(request_inputs(task, requests)).cpu().numpy()
