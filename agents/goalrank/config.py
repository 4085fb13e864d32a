"""GoalRank's settings: one frozen dataclass with its budgets as presets."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from agents.common.config import AgentConfig
from simulators.data.errors import ConfigError

RewardModelKind = Literal["learned", "simulator"]

#: Generator presets: ``(dim, encoder_layers, decoder_layers, heads)``, named by their
#: approximate parameter count on ML-100K features.
SIZE_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "0.1M": (64, 2, 1, 4),
    "0.6M": (128, 2, 2, 4),
    "2M": (192, 3, 3, 4),
    "10M": (384, 4, 4, 8),
}


@dataclasses.dataclass(frozen=True)
class GoalRankConfig(AgentConfig):
    """Everything that defines a GoalRank run except its auxiliary policies.

    Attributes:
        reward_model: ``"learned"`` (click model fitted on the logs) or
            ``"simulator"`` (the task's training simulator).
        reward_model_epochs: Maximum epochs of the learned reward model.
        reward_model_composition: Fit the learned reward model inside a
            composition (examination, redundancy, complementarity) learned jointly
            with it from the logs (:mod:`agents.common.reward_model`).
        train_requests: Training requests whose logged slates fit the learned reward
            model (a random subset, for tests and quick runs); ``None``: all.
        group_size: G, lists per request per step.
        policy_share: Share of each group sampled from the current policy (at least
            one list); the rest comes from the auxiliary policies.
        auxiliary_temperature: Plackett-Luce temperature of their perturbations.
        temperature: tau of the reference policy. The default 0.1 was chosen on
            validation requests of ``SlateRerank-v0`` (docs/benchmarks.md): 1.0 spreads
            the reference over the whole group and learns markedly less.
        size: Generator preset (:data:`SIZE_PRESETS`).
        iterations: Training steps.
        batch_size: Requests per step.
        learning_rate: Adam step size.
        eval_every: Learning-curve point every this many steps.
        eval_requests: Validation requests of the learning curve.
        seed: Initialisation, sampling and request-order seed.
    """

    reward_model: RewardModelKind = "learned"
    reward_model_epochs: int = 20
    reward_model_composition: bool = False
    train_requests: int | None = None
    group_size: int = 16
    policy_share: float = 0.5
    auxiliary_temperature: float = 1.0
    temperature: float = 0.1
    size: str = "0.1M"
    iterations: int = 300
    batch_size: int = 64
    learning_rate: float = 1e-3
    eval_every: int = 25
    eval_requests: int = 256
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {"reward_model_epochs": 5, "iterations": 60}
    TINY: ClassVar[dict[str, Any]] = {
        "reward_model_epochs": 2,
        "train_requests": 2000,
        "iterations": 40,
        "batch_size": 32,
        "eval_every": 20,
        "eval_requests": 128,
    }

    def validate(self) -> None:
        """Refuse out-of-range fields, naming the field, the value and what is valid."""
        if self.reward_model not in ("learned", "simulator"):
            raise ConfigError(
                f"reward_model must be 'learned' or 'simulator', got {self.reward_model!r}"
            )
        if self.reward_model_composition and self.reward_model != "learned":
            raise ConfigError(
                "reward_model_composition=True composes the learned reward model; with "
                f"reward_model={self.reward_model!r} there is none: set "
                "reward_model='learned' or drop it"
            )
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be >= 2 (a reference policy needs a group), got {self.group_size}"
            )
        if not 0 < self.policy_share <= 1:
            raise ConfigError(f"policy_share must be in (0, 1], got {self.policy_share}")
        if self.size not in SIZE_PRESETS:
            raise ConfigError(f"unknown size {self.size!r}; presets: {sorted(SIZE_PRESETS)}")
        if self.temperature <= 0 or self.auxiliary_temperature <= 0:
            raise ConfigError(
                f"temperatures must be > 0, got temperature={self.temperature}, "
                f"auxiliary_temperature={self.auxiliary_temperature}"
            )
        self._at_least(
            1,
            "reward_model_epochs",
            "iterations",
            "batch_size",
            "eval_every",
            "eval_requests",
            "train_requests",
        )

    @property
    def policy_lists(self) -> int:
        """Lists of each group sampled from the policy (at least one)."""
        return max(1, round(self.group_size * self.policy_share))

    @property
    def name(self) -> str:
        """``goalrank`` and its variant suffixes.

        ``-sim`` for the simulator reward, ``-composed`` for a composed learned one,
        ``-<size>`` if not 0.1M.
        """
        name = "goalrank" + ("-sim" if self.reward_model == "simulator" else "")
        name += "-composed" if self.reward_model_composition else ""
        return name if self.size == "0.1M" else f"{name}-{self.size}"
