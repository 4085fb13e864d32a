"""PRM: a Transformer over the initial list that rescores every candidate, from logs.

Personalized Re-ranking for Recommendation (Pei et al., RecSys 2019). Each
candidate's input is its features, the user's (PRM's personalised vector) and an
embedding of its rank in the initial list; self-attention over the whole candidate
list lets each score depend on the other candidates. Trained on the *logged*
positives of the training requests with PRM's list-wise loss (softmax cross-entropy
over the candidates, the positives as targets); it never sees a simulator. The
list is the top L by score.

``labels="simulator"`` (registered as ``prm-sim``) trains the same model on the
training simulator's click probabilities instead: each candidate's target is its
expected clicks alone in slot 1, normalised over the request's candidates (a
soft-label list-wise loss, ListNet's). It is the supervised reranker on the
objective the comparison tables rank by; ``prm`` is the one on the logs'.
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
from agents.common.scorers import SimulatorScorer, slot_one_values
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, minibatches, training_mode
from agents.metrics import log_metrics
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.data.errors import ConfigError
from simulators.progress import progress_bar

#: What PRM is trained on (:attr:`PRMConfig.labels`).
PRM_LABELS = ("logs", "simulator")


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
        labels: ``"logs"`` (the logged positives) or ``"simulator"`` (the training
            simulator's click probability of each candidate alone in slot 1).
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
    labels: str = "logs"
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {"epochs": 2}
    TINY: ClassVar[dict[str, Any]] = {"epochs": 2, "train_requests": 2000}

    def validate(self) -> None:
        """Refuse out-of-range fields."""
        self._at_least(
            1, "dim", "layers", "heads", "epochs", "batch_size", "patience", "train_requests"
        )
        if self.labels not in PRM_LABELS:
            raise ConfigError(
                f"PRMConfig.labels must be one of {PRM_LABELS}, got {self.labels!r} ('logs': "
                "logged positives; 'simulator': the training simulator's click probabilities)"
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
        if self.settings.labels == "simulator":
            self.name, self.curve = "prm-sim", ("epoch", "valid_reward")

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
        """Train on the training requests' labels; early stopping on the validation loss."""
        cfg = self.settings
        model = self.modules["model"].to(task.device)
        generator = np.random.default_rng(cfg.seed)
        train, valid = (self._scorable(task, split) for split in ("train", "valid"))
        if cfg.train_requests is not None and cfg.train_requests < len(train):
            subset = np.random.default_rng(cfg.seed + 2).permutation(len(train))
            train = np.sort(train[subset[: cfg.train_requests]])
        train_labels = self._labels(task, train)  # once: simulated labels cost a pass
        optimiser = torch.optim.Adam(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        best, best_state, waited = float("inf"), None, 0
        bar = progress_bar(cfg.epochs, "PRM", progress)
        for epoch in range(cfg.epochs):
            losses = []
            with training_mode(model), isolated_torch_rng(cfg.seed + epoch):  # dropout
                for rows in minibatches(train, cfg.batch_size, generator):
                    targets = torch.as_tensor(
                        train_labels[np.searchsorted(train, rows)], device=task.device
                    )
                    loss = self._loss(model(request_inputs(task, rows)), targets.float()).mean()
                    norm = gradient_step(optimiser, loss, list(model.parameters()))
                    losses.append(loss.item())
                    logger.log("model", loss=losses[-1], grad_norm=norm)
            valid_loss, valid_metric = self._validate(task, valid)
            logger.log(
                "model_valid",
                step=epoch + 1,
                epoch=epoch + 1,
                train_loss=float(np.mean(losses)),
                valid_loss=valid_loss,
                **{self.curve[1]: valid_metric},
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

    def _scorable(self, task: RerankTask, split: str) -> np.ndarray:
        """Requests of ``split`` it learns from.

        Those with a logged positive among the candidates (logged labels), or all
        (simulated labels).
        """
        requests = task.requests(split)
        if self.settings.labels == "simulator":
            return requests
        return requests[task.logged_positives(requests).any(axis=1)]

    def _labels(self, task: RerankTask, requests: np.ndarray) -> np.ndarray:
        """Targets ``[B, N]``: logged positives, or simulated clicks of each candidate alone."""
        if self.settings.labels == "logs":
            return task.logged_positives(requests)
        scorer = SimulatorScorer("train")
        return np.concatenate(
            [
                slot_one_values(task, requests[start : start + 1024], scorer)
                for start in range(0, len(requests), 1024)
            ]
        )

    @torch.no_grad()
    def _validate(self, task: RerankTask, requests: np.ndarray) -> tuple[float, float]:
        """Validation loss, and NDCG@L on the logs (or the training reward) of its lists."""
        model = self.modules["model"].eval()
        losses, metrics = [], []
        for start in range(0, len(requests), 1024):
            rows = requests[start : start + 1024]
            labels = self._labels(task, rows)
            logits = model(request_inputs(task, rows))
            labels_t = torch.as_tensor(labels, device=logits.device).float()
            losses.append(self._loss(logits, labels_t).cpu().numpy())
            lists = complete_by_scores(logits.cpu().numpy(), task.slate_length, None)
            if self.settings.labels == "simulator":
                metrics.append(task.expected_reward(rows, lists, "train").cpu().numpy())
            else:
                metrics.append(log_metrics(lists, labels)["ndcg"])
        return float(np.concatenate(losses).mean()), float(np.nanmean(np.concatenate(metrics)))

    @torch.no_grad()
    def scores(self, task: RerankTask, requests: np.ndarray) -> np.ndarray:
        """The model's logit of every candidate, ``[B, N]``."""
        self._require_built()
        model = self.modules["model"].to(task.device).eval()
        return model(request_inputs(task, requests)).cpu().numpy()
