"""Seq2Slate: a pointer network trained with REINFORCE against the env reward.

Seq2Slate (Bello et al., 2018) decodes a list one slot at a time with a pointer
network over the candidates. Here it is trained on-policy against the task's
*training* simulator, the reward ``SlateRerank-v0`` pays: each iteration samples
``group_size`` lists per training request (sampling without replacement), scores them
in one batched call, and takes a policy-gradient step with the mean reward of the
same request's lists as the baseline.

``reward="sparse"`` credits every slot with the list reward (the plain list-level
signal); ``reward="dense"`` credits slot ``t`` with its reward-to-go, the sum of
the dense per-slot rewards of ``SlateRerankDense-v0`` from ``t`` on, with a
per-slot baseline. The two differ only in credit assignment, which is what the
suite lets one study.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from agents.common.config import AgentConfig
from agents.common.distributed import DataParallel
from agents.common.losses import Credit, advantages, reinforce_loss
from agents.common.nn import request_inputs
from agents.common.pointer_agent import PointerAgent
from agents.common.sampling import torch_generator
from agents.common.scorers import SimulatorScorer
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, training_mode
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.data.errors import ConfigError
from simulators.progress import progress_bar

__all__ = ["Seq2Slate", "Seq2SlateConfig"]


@dataclasses.dataclass(frozen=True)
class Seq2SlateConfig(AgentConfig):
    """Seq2Slate's settings.

    Attributes:
        dim: Width.
        encoder_layers: Candidate-set encoder layers.
        decoder_layers: Pointer decoder layers.
        heads: Attention heads.
        iterations: Policy-gradient steps.
        batch_size: Training requests per step.
        group_size: Lists sampled per request (the baseline is their mean reward).
        learning_rate: Adam step size.
        entropy_coef: Weight of an entropy bonus on the sampled steps.
        reward: ``"sparse"`` (list reward on every slot) or ``"dense"`` (reward-to-go).
        eval_every: Record the greedy reward on validation requests every this many
            iterations (the learning curve).
        eval_requests: Validation requests in that curve.
        seed: Initialisation, request sampling and list sampling seed.
    """

    dim: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 1
    heads: int = 4
    iterations: int = 300
    batch_size: int = 64
    group_size: int = 8
    learning_rate: float = 1e-3
    entropy_coef: float = 0.0
    reward: Credit = "sparse"
    eval_every: int = 25
    eval_requests: int = 256
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {"iterations": 60}
    TINY: ClassVar[dict[str, Any]] = {
        "iterations": 40,
        "batch_size": 32,
        "eval_every": 20,
        "eval_requests": 128,
    }

    def validate(self) -> None:
        """Refuse out-of-range fields."""
        if self.reward not in ("sparse", "dense"):
            raise ConfigError(f"reward must be 'sparse' or 'dense', got {self.reward!r}")
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be >= 2 (the baseline is their mean), got {self.group_size}"
            )
        self._at_least(1, "iterations", "batch_size", "eval_every", "eval_requests")


class Seq2Slate(PointerAgent):
    """Pointer-network reranker trained by REINFORCE on the training simulator.

    Args:
        config: A :class:`Seq2SlateConfig` (default: its defaults).
        **overrides: Config fields to change, e.g. ``Seq2Slate(reward="dense")``.
    """

    config_class = Seq2SlateConfig
    curve = ("simulator_calls", "valid_reward")

    def __init__(self, config: Seq2SlateConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.settings: Seq2SlateConfig = self._settings_from(config, overrides)
        self.name = "seq2slate" if self.settings.reward == "sparse" else "seq2slate-dense"

    def _build(self, task: RerankTask | None = None) -> None:
        cfg = self.settings
        with isolated_torch_rng(cfg.seed):
            policy = self._pointer_policy(
                dim=cfg.dim,
                encoder_layers=cfg.encoder_layers,
                decoder_layers=cfg.decoder_layers,
                heads=cfg.heads,
            )
        self.modules = {"policy": policy}

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """REINFORCE on the training requests against the training simulator."""
        cfg = self.settings
        policy = self.modules["policy"].to(task.device)
        request_rng = np.random.default_rng(cfg.seed)
        list_rng = torch_generator(cfg.seed, task.device)
        optimiser = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        reward = SimulatorScorer("train")
        curve_requests = task.requests("valid")[: cfg.eval_requests]
        length = task.slate_length
        logger.log(
            "curve", **self.curve_point(task, curve_requests, iteration=0, simulator_calls=0)
        )
        bar = progress_bar(cfg.iterations, "Seq2Slate", progress)
        for iteration in range(1, cfg.iterations + 1):
            rows = task.sample_requests("train", cfg.batch_size, request_rng)
            inputs = request_inputs(task, rows)
            with torch.no_grad():
                slots, _ = policy.generate(
                    inputs, length, greedy=False, generator=list_rng, repeats=cfg.group_size
                )
                values = reward.prefix_values(task, np.repeat(rows, cfg.group_size), slots)
            advantage = advantages(values, cfg.group_size, cfg.reward)
            with training_mode(policy):
                log_probs, entropy = policy.step_log_probs_and_entropy(
                    inputs, slots, repeats=cfg.group_size
                )
                loss = reinforce_loss(log_probs, advantage)
                if cfg.entropy_coef:
                    loss = loss - cfg.entropy_coef * entropy.mean()
                norm = gradient_step(optimiser, loss, list(policy.parameters()))
            sampled_reward = values[:, -1].mean().item()
            logger.log(
                "policy",
                loss=loss.item(),
                entropy=entropy.mean().item(),
                grad_norm=norm,
                reward=sampled_reward,
                simulator_calls=reward.calls,
            )
            bar.update()
            bar.set_postfix(reward=f"{sampled_reward:.3f}")
            if iteration % cfg.eval_every == 0 or iteration == cfg.iterations:
                point = self.curve_point(
                    task, curve_requests, iteration=iteration, simulator_calls=reward.calls
                )
                point["sampled_reward"] = sampled_reward
                logger.log("curve", **point)
        bar.close()
