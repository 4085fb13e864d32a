"""GR2's settings: one frozen dataclass with its budgets as presets."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from agents.common.config import AgentConfig
from simulators.data.errors import ConfigError

Teacher = Literal["rejection", "targeted"]
FormatReward = Literal["conditional", "unconditional", "none"]
MID_TASKS = ("next-sid", "caption", "describe", "grammar")


@dataclasses.dataclass(frozen=True)
class GR2Config(AgentConfig):
    """Everything that defines a GR2 run: the student LM, its three stages, serving.

    Attributes:
        dim: Hidden size of the student (a ``transformers`` Llama built from a config).
        layers: Decoder layers.
        heads: Attention heads (``dim`` must be a multiple).
        intermediate: Width of the feed-forward layers.
        history_items: Most recent history items the prompt shows (in SIDs).
        cited_candidates: Candidates a teacher rationale explains (its top ones).
        year_buckets: Release-year words (quantiles of the training items).
        popularity_buckets: Popularity words (quantiles of training interactions).
        max_reasoning_tokens: L_max, reasoning tokens the decoder allows before it
            closes the segment itself (a format break). The teacher's longest
            rationale must fit in ``L_max - overlong_cache`` (checked on the task).
        overlong_cache: L_cache of DAPO's overlong shaping: the penalty ramps from 0
            to -1 over the last ``overlong_cache`` reasoning tokens before L_max.
        mid_steps: Mid-training steps (0: none, the ablation).
        mid_tasks: Mid-training tasks, mixed uniformly: ``"next-sid"`` (the next
            history item from the ones before), ``"caption"`` (item -> attributes),
            ``"describe"`` (attributes -> item), ``"grammar"`` (rationales of random
            candidate sets: the reasoning language).
        mid_batch_size: Sequences per mid-training step.
        mid_learning_rate: AdamW step size of mid-training.
        teacher: ``"rejection"`` (the teacher does not see the answer; a trace is
            kept only when its ranking puts the true item first) or ``"targeted"``
            (the answer is revealed to the teacher: the paper's ablation).
        teacher_temperature: Temperature of the teacher's first pick (Gumbel noise on
            the training simulator's log click probability at slot 1).
        teacher_beam_width: Beam width of the teacher's ranking after its first pick.
        rejection_attempts: Samples per request before the rejection sampler gives up.
        sft_epochs: Passes over the kept traces.
        sft_batch_size: Traces per SFT step.
        sft_learning_rate: AdamW step size of SFT.
        reasoning_weight: SFT loss weight of reasoning tokens.
        answer_weight: SFT loss weight of ranking tokens (the paper weights reasoning
            below the answer).
        dapo_iterations: DAPO iterations (0: SFT alone).
        prompts_per_batch: Prompts (requests) per DAPO iteration.
        group_size: G, samples per prompt.
        dapo_epochs: Passes over each iteration's samples.
        minibatch_size: Samples per DAPO gradient step.
        learning_rate: AdamW step size of DAPO.
        clip_low: DAPO's epsilon_low.
        clip_high: DAPO's clip-higher epsilon_high.
        format_reward: ``"conditional"`` (``+ alpha * R_fmt`` only when the true
            item moved up or was already first: GR2's fix), ``"unconditional"``
            (always: invites copying the input order) or ``"none"``.
        format_alpha: alpha, weight of the format reward.
        dynamic_sampling: Drop groups whose rewards are all equal and refill the batch.
        max_refill_rounds: Extra sampling rounds dynamic sampling may spend per batch.
        temperature: Sampling temperature of DAPO's rollouts.
        train_requests: GR2 training requests used (a random subset); ``None``: all.
        eval_every: Learning-curve point every this many DAPO iterations.
        eval_requests: Validation GR2 requests of the learning curve.
        seed: Initialisation, sampling and data-order seed.
    """

    dim: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 256
    history_items: int = 20
    cited_candidates: int = 3
    year_buckets: int = 4
    popularity_buckets: int = 3
    max_reasoning_tokens: int = 48
    overlong_cache: int = 8
    mid_steps: int = 1500
    mid_tasks: tuple[str, ...] = MID_TASKS
    mid_batch_size: int = 64
    mid_learning_rate: float = 1e-3
    teacher: Teacher = "rejection"
    teacher_temperature: float = 0.5
    teacher_beam_width: int = 4
    rejection_attempts: int = 8
    sft_epochs: int = 20
    sft_batch_size: int = 64
    sft_learning_rate: float = 1e-3
    reasoning_weight: float = 0.5
    answer_weight: float = 1.0
    dapo_iterations: int = 200
    prompts_per_batch: int = 16
    group_size: int = 8
    dapo_epochs: int = 1
    minibatch_size: int = 64
    learning_rate: float = 1e-4
    clip_low: float = 0.2
    clip_high: float = 0.28
    format_reward: FormatReward = "conditional"
    format_alpha: float = 0.2
    dynamic_sampling: bool = True
    max_refill_rounds: int = 3
    temperature: float = 1.0
    train_requests: int | None = None
    eval_every: int = 25
    eval_requests: int = 256
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {
        "mid_steps": 500,
        "sft_epochs": 20,
        "dapo_iterations": 100,
    }
    TINY: ClassVar[dict[str, Any]] = {
        "dim": 32,
        "layers": 2,
        "heads": 2,
        "intermediate": 64,
        "history_items": 8,
        "mid_steps": 20,
        "mid_batch_size": 16,
        "sft_epochs": 2,
        "sft_batch_size": 16,
        "dapo_iterations": 4,
        "prompts_per_batch": 4,
        "group_size": 4,
        "minibatch_size": 16,
        "train_requests": 64,
        "eval_every": 2,
        "eval_requests": 32,
    }

    #: A larger run for a CUDA GPU: an 8.5M-parameter student (width 256, 8 layers),
    #: 3x the mid-training, 5x the DAPO iterations, 4x the prompts per iteration and
    #: twice the group size. Not run here (no GPU was lent to measure it); on 2 CPU
    #: cores it would take days.
    LARGE: ClassVar[dict[str, Any]] = {
        "dim": 256,
        "layers": 8,
        "heads": 8,
        "intermediate": 1024,
        "history_items": 30,
        "mid_steps": 5000,
        "mid_batch_size": 128,
        "sft_epochs": 30,
        "dapo_iterations": 1000,
        "prompts_per_batch": 64,
        "group_size": 16,
        "minibatch_size": 256,
        "eval_every": 50,
    }

    @classmethod
    def large(cls, **overrides: Any) -> GR2Config:
        """:attr:`LARGE`, the preset for a CUDA GPU, with ``overrides``.

        Use it with a task on the GPU: ``GR2(GR2Config.large()).fit(task)`` where
        ``task = make_task(protocol="gr2", device="cuda")``.
        """
        return cls.from_dict({**cls.LARGE, **overrides})

    def validate(self) -> None:
        """Refuse out-of-range fields, naming the field, the value and what is valid."""
        self._choice("teacher", ("rejection", "targeted"))
        self._choice("format_reward", ("conditional", "unconditional", "none"))
        if self.dim % self.heads:
            raise ConfigError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        unknown = sorted(set(self.mid_tasks) - set(MID_TASKS))
        if unknown or not self.mid_tasks:
            raise ConfigError(
                f"mid_tasks must be a non-empty subset of {MID_TASKS}, got {self.mid_tasks!r}"
            )
        if self.overlong_cache >= self.max_reasoning_tokens:
            raise ConfigError(
                f"overlong_cache ({self.overlong_cache}) must be below max_reasoning_tokens "
                f"({self.max_reasoning_tokens})"
            )
        for name in ("clip_low", "clip_high"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be >= 2 (group-relative advantages), got {self.group_size}"
            )
        if not self.teacher_temperature > 0 or not self.temperature > 0:
            raise ConfigError(
                f"temperatures must be > 0, got teacher_temperature={self.teacher_temperature}"
                f", temperature={self.temperature}"
            )
        self._at_least(
            0,
            "mid_steps",
            "dapo_iterations",
            "reasoning_weight",
            "answer_weight",
            "format_alpha",
            "max_refill_rounds",
            "overlong_cache",
        )
        self._at_least(
            1,
            "dim",
            "layers",
            "heads",
            "intermediate",
            "history_items",
            "cited_candidates",
            "year_buckets",
            "popularity_buckets",
            "mid_batch_size",
            "teacher_beam_width",
            "rejection_attempts",
            "sft_epochs",
            "sft_batch_size",
            "prompts_per_batch",
            "dapo_epochs",
            "minibatch_size",
            "train_requests",
            "eval_every",
            "eval_requests",
        )

    @property
    def name(self) -> str:
        """The agent's name: ``gr2``, or its ablation (``-sft``, ``-targeted``, ...)."""
        name = "gr2"
        if self.mid_steps == 0:
            name += "-no-mid"
        if self.teacher == "targeted":
            name += "-targeted"
        if self.dapo_iterations == 0:
            return name + "-sft"
        if self.format_reward != "conditional":
            name += f"-{self.format_reward}"
        return name
