"""GloRank's settings: one frozen dataclass with its budgets as presets."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from agents.common.config import AgentConfig
from simulators.data.errors import ConfigError

SftSource = Literal["beam", "logged", "none"]
Advantage = Literal["gae", "group-mean", "grpo"]


@dataclasses.dataclass(frozen=True)
class GloRankConfig(AgentConfig):
    """Everything that defines a GloRank run (or its local-index twin).

    Attributes:
        head: ``"global"`` (semantic-ID tokens, GloRank), ``"local"`` (a pointer
            over candidate positions: the paper's ablation, same everything else)
            or ``"index"`` (a ``Linear(d, N)`` over positions: output ``j`` is the
            ``j``-th candidate, the local-index layer of the paper's variance argument).
        dim: Model width.
        encoder_layers: Candidate-set encoder depth.
        decoder_layers: Decoder depth.
        heads: Attention heads.
        initial_order: Whether the encoder sees each candidate's initial rank.
        tied_output: Global head: score token ``v`` with its input embedding (weight
            tying); else a free output layer.
        detach_value: The value head reads the decoder's states without sending its
            gradient into them.
        sft_source: Stage 1's demonstrations: ``"beam"`` (beam search over the
            training simulator), ``"logged"`` (the logged positives first, then the
            initial order) or ``"none"`` (no stage 1: PPO from scratch).
        sft_requests: Training requests with a demonstration.
        sft_beam_width: Beam width of the ``"beam"`` demonstrations.
        sft_epochs: Passes over the demonstrations (30: with 8 the global head
            stopped at 2.25 validation reward, 2.29 with 30, quick budget).
        sft_batch_size: Demonstrations per step.
        sft_learning_rate: Adam step size of stage 1.
        ppo_iterations: Stage 2 iterations (0: SFT alone).
        batch_size: Requests per PPO iteration.
        group_size: Lists sampled per request (the group of the group baselines).
        ppo_epochs: Passes over each iteration's lists.
        minibatch_size: Lists per PPO gradient step.
        learning_rate: Adam step size of stage 2.
        clip_low: PPO's clip range below 1.
        clip_high: Above 1 (``None``: ``clip_low``; DAPO's clip-higher: 0.28).
        token_level: Average the surrogate over all tokens of the batch (DAPO)
            rather than per list.
        advantage: ``"grpo"`` (the list reward standardised within its request's
            group, GRPO / DAPO; the default), ``"group-mean"`` (minus the group's
            mean) or ``"gae"`` (the value head, GAE over the tokens with the list
            reward at the last). Chosen on validation requests: after the same
            SFT, 40 quick PPO iterations moved the global head from 2.287 to 2.362
            with ``"grpo"`` and to 2.275 with ``"gae"`` (docs/agents.md).
        gae_lambda: GAE's lambda.
        value_coef: Weight of the value loss (``"gae"`` only).
        entropy_coef: Weight of the entropy bonus.
        kl_coef: Weight of the KL penalty to the stage-1 policy (0: none).
        decode: Serving: ``"greedy"`` or ``"beam"``.
        beam_width: Serving beam width.
        train_requests: Training requests PPO draws from (a random subset, for tests
            and quick runs); ``None``: all.
        eval_every: Learning-curve point every this many PPO iterations.
        eval_requests: Validation requests of the learning curve.
        seed: Initialisation, sampling and request-order seed.
    """

    head: Literal["global", "local", "index"] = "global"
    dim: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 2
    heads: int = 4
    initial_order: bool = True
    tied_output: bool = True
    detach_value: bool = True
    sft_source: SftSource = "beam"
    sft_requests: int = 2000
    sft_beam_width: int = 8
    sft_epochs: int = 30
    sft_batch_size: int = 128
    sft_learning_rate: float = 1e-3
    ppo_iterations: int = 150
    batch_size: int = 64
    group_size: int = 8
    ppo_epochs: int = 2
    minibatch_size: int = 256
    learning_rate: float = 3e-4
    clip_low: float = 0.2
    clip_high: float | None = None
    token_level: bool = True
    advantage: Advantage = "grpo"
    gae_lambda: float = 0.95
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    kl_coef: float = 0.0
    decode: Literal["greedy", "beam"] = "greedy"
    beam_width: int = 4
    train_requests: int | None = None
    eval_every: int = 10
    eval_requests: int = 256
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {
        "sft_requests": 500,
        "sft_beam_width": 4,
        "ppo_iterations": 40,
    }
    TINY: ClassVar[dict[str, Any]] = {
        "sft_requests": 128,
        "sft_beam_width": 2,
        "sft_epochs": 4,
        "sft_batch_size": 64,
        "ppo_iterations": 6,
        "batch_size": 16,
        "group_size": 4,
        "ppo_epochs": 1,
        "minibatch_size": 64,
        "train_requests": 1000,
        "eval_every": 3,
        "eval_requests": 64,
    }

    def validate(self) -> None:
        """Refuse out-of-range fields, naming the field, the value and what is valid."""
        self._choice("head", ("global", "local", "index"))
        self._choice("sft_source", ("beam", "logged", "none"))
        self._choice("advantage", ("gae", "group-mean", "grpo"))
        self._choice("decode", ("greedy", "beam"))
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.sft_source == "none" and self.ppo_iterations == 0:
            raise ConfigError(
                "sft_source='none' with ppo_iterations=0 trains nothing: give stage 1 a "
                "source ('beam' or 'logged') or stage 2 iterations"
            )
        if self.advantage != "gae" and self.group_size < 2:
            raise ConfigError(
                f"advantage={self.advantage!r} needs group_size >= 2, got {self.group_size}"
            )
        for name in ("clip_low", "clip_high"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise ConfigError(f"{name} must be in (0, 1), got {value}")
        if not 0 <= self.gae_lambda <= 1:
            raise ConfigError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        self._at_least(0, "value_coef", "entropy_coef", "kl_coef", "ppo_iterations")
        self._at_least(
            1,
            "dim",
            "encoder_layers",
            "decoder_layers",
            "heads",
            "sft_requests",
            "sft_beam_width",
            "sft_epochs",
            "sft_batch_size",
            "batch_size",
            "group_size",
            "ppo_epochs",
            "minibatch_size",
            "beam_width",
            "train_requests",
            "eval_every",
            "eval_requests",
        )

    @property
    def name(self) -> str:
        """The agent's name.

        ``glorank``, with ``-local`` for the twin, ``-logged`` for SFT on the logged
        positives, ``-sft`` (stage 1 alone) or ``-scratch`` (stage 2 alone).
        """
        name = "glorank" + ("" if self.head == "global" else f"-{self.head}")
        name += "-logged" if self.sft_source == "logged" else ""
        if self.ppo_iterations == 0:
            return name + "-sft"
        return name + ("-scratch" if self.sft_source == "none" else "")
