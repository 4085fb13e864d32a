"""GoalRank, the agent: reward model, groups, reference policy, generator; top to bottom."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.base import Agent, TrainableAgent, can_sample
from agents.baselines import InitialOrder, PointwiseGreedy
from agents.common.distributed import DataParallel
from agents.common.losses import group_loss, reference_policy
from agents.common.nn import request_inputs
from agents.common.pointer_agent import PointerAgent
from agents.common.reward_model import build_reward_model, fit_reward_model, reward_model_spec
from agents.common.sampling import torch_generator
from agents.common.scorers import ClickModelScorer, ListScorer, SimulatorScorer
from agents.common.specs import agent_from_spec, agent_spec
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, training_mode
from agents.goalrank.config import SIZE_PRESETS, GoalRankConfig
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.progress import progress_bar


class GoalRank(PointerAgent):
    """Generator trained on group-relative reference policies of a reward model.

    Args:
        config: A :class:`GoalRankConfig` (default: its defaults).
        auxiliary: Auxiliary policies (agents that can ``sample``, or their specs);
            untrained ones are trained by :meth:`fit`. Default: InitialOrder and
            PointwiseGreedy (seeded like the config).
        **overrides: Config fields to change, e.g. ``GoalRank(reward_model="simulator")``.

    Attributes:
        settings: The frozen :class:`GoalRankConfig` (its fields also read as attributes).
        reward: The reward model as a :class:`~agents.common.scorers.ListScorer`.
    """

    config_class = GoalRankConfig
    curve = ("reward_calls", "valid_reward")

    def __init__(
        self,
        config: GoalRankConfig | None = None,
        auxiliary: Sequence[Agent | dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.settings: GoalRankConfig = self._settings_from(config, overrides)
        cfg = self.settings
        if auxiliary is None:
            auxiliary = [InitialOrder(), PointwiseGreedy(seed=cfg.seed)]
        self.auxiliary = [agent_from_spec(a) if isinstance(a, dict) else a for a in auxiliary]
        for agent in self.auxiliary:
            if not can_sample(agent):
                raise TypeError(
                    f"auxiliary policy {agent.name!r} cannot sample lists (no sample(...) "
                    "method); use a ScoringAgent (InitialOrder, PointwiseGreedy, PRM) or a "
                    "pointer-network agent"
                )
        if cfg.policy_lists < cfg.group_size and not self.auxiliary:
            raise ValueError("policy_share < 1 needs at least one auxiliary policy")
        self.name = cfg.name
        self.reward: ListScorer = SimulatorScorer("train")

    @property
    def policy_lists(self) -> int:
        """Lists of each group sampled from the policy (the config's)."""
        return self.settings.policy_lists

    @property
    def reward_calls(self) -> int:
        """Lists the reward model valued during ``fit``."""
        return self.reward.calls

    def config(self) -> dict[str, Any]:
        """Config fields; auxiliary policies as specs."""
        return {**self.settings.to_dict(), "auxiliary": [agent_spec(a) for a in self.auxiliary]}

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        info = super()._build_info(task)
        if self.settings.reward_model == "learned":
            info["reward_model_spec"] = reward_model_spec(task, self.settings.seed)
        return info

    def _build(self, task: RerankTask | None = None) -> None:
        cfg = self.settings
        dim, encoder_layers, decoder_layers, heads = SIZE_PRESETS[cfg.size]
        with isolated_torch_rng(cfg.seed):
            policy = self._pointer_policy(
                dim=dim, encoder_layers=encoder_layers, decoder_layers=decoder_layers, heads=heads
            )
        self.modules = {"policy": policy}
        self.reward = SimulatorScorer("train")
        if cfg.reward_model == "learned":
            self.modules["reward_model"] = build_reward_model(
                self.build_info["reward_model_spec"],
                task,
                cfg.seed,
                composition=cfg.reward_model_composition,
            )
            self.reward = ClickModelScorer(self.modules["reward_model"])

    def parameter_count(self) -> int:
        """Parameters of the generator (the model that serves)."""
        self._require_built()
        return sum(p.numel() for p in self.modules["policy"].parameters())

    # ------------------------------------------------------------------ training

    def _setup(self, task: RerankTask, *, progress: bool = False) -> None:
        """Fit the untrained auxiliary policies, then build the generator."""
        for agent in self.auxiliary:
            if isinstance(agent, TrainableAgent) and not agent.fitted:
                agent.fit(task, progress=progress)
        self.setup(task)

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Fit the reward model, then the generator.

        torchrun: every rank samples and scores the whole batch, the gradient pass is
        shared out (:mod:`agents.common.distributed`).
        """
        cfg = self.settings
        # Stage 1: the reward model (learned from the logs), unless it is the simulator.
        if cfg.reward_model == "learned":
            valid_nll = fit_reward_model(
                self.modules["reward_model"],
                task,
                epochs=cfg.reward_model_epochs,
                seed=cfg.seed,
                progress=progress,
                train_requests=cfg.train_requests,
            )
            for epoch, nll in enumerate(valid_nll, start=1):
                logger.log(
                    "reward_model",
                    step=epoch,
                    reward_model_epoch=epoch,
                    reward_model_valid_nll=nll,
                )
        # Stage 2: the generator on group-relative reference policies.
        policy = self.modules["policy"].to(task.device)
        request_rng = np.random.default_rng(cfg.seed)
        list_rng = torch_generator(cfg.seed, task.device)
        optimiser = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        step_log_probs = parallel.wrap(policy, "step_log_probs_and_entropy")
        curve_requests = task.requests("valid")[: cfg.eval_requests]
        logger.log("curve", **self._curve_point(task, curve_requests, 0))
        bar = progress_bar(cfg.iterations, "GoalRank", progress)
        for iteration in range(1, cfg.iterations + 1):
            rows = task.sample_requests("train", cfg.batch_size, request_rng)
            group = self.group(task, rows, list_rng, iteration)
            rewards = self.rewards(task, rows, group)
            reference = reference_policy(rewards, cfg.temperature)
            part = parallel.shard(len(rows))  # all of them in one process
            with training_mode(policy):
                log_probs, entropy = step_log_probs(
                    request_inputs(task, rows[part]),
                    torch.as_tensor(group[part], device=task.device).reshape(-1, task.slate_length),
                    repeats=cfg.group_size,
                )
                loss = group_loss(
                    log_probs.sum(dim=1).reshape(len(rows[part]), -1), reference[part]
                )
                norm = gradient_step(optimiser, loss, list(policy.parameters()))
            logger.log(
                "generator",
                loss=parallel.mean(loss.item()),
                entropy=parallel.mean(entropy.mean().item()),
                grad_norm=norm,
                reward=rewards.mean().item(),
                reward_calls=self.reward_calls,
                simulator_calls=self.reward_calls if self.reward.queries_simulator else 0,
            )
            bar.update()
            bar.set_postfix(group_reward=f"{rewards.mean().item():.3f}")
            if iteration % cfg.eval_every == 0 or iteration == cfg.iterations:
                point = self._curve_point(task, curve_requests, iteration)
                point["group_reward"] = rewards.mean().item()
                logger.log("curve", **point)
        bar.close()

    @torch.no_grad()
    def group(
        self,
        task: RerankTask,
        requests: np.ndarray,
        generator: torch.Generator,
        iteration: int = 0,
    ) -> np.ndarray:
        """Each request's group: policy samples, then auxiliary lists, ``[B, G, L]``.

        Each auxiliary policy contributes its greedy list and Plackett-Luce samples
        (``iteration`` varies their seed); the auxiliary lists are shared out as
        evenly as possible.
        """
        cfg = self.settings
        policy = self.modules["policy"].to(task.device).eval()
        length = task.slate_length
        sampled, _ = policy.generate(
            request_inputs(task, requests),
            length,
            greedy=False,
            generator=generator,
            repeats=self.policy_lists,
        )
        parts = [sampled.cpu().numpy().reshape(len(requests), self.policy_lists, length)]
        remaining = cfg.group_size - self.policy_lists
        shares = np.diff(np.linspace(0, remaining, len(self.auxiliary) + 1).round().astype(int))
        for index, (agent, count) in enumerate(zip(self.auxiliary, shares, strict=True)):
            if count == 0:
                continue
            parts.append(agent.rank(task, requests)[:, None])
            if count > 1:
                seed = (cfg.seed * 1_000_003 + iteration) * 97 + index
                parts.append(
                    agent.sample(
                        task,
                        requests,
                        int(count) - 1,
                        seed,
                        temperature=cfg.auxiliary_temperature,
                    )
                )
        return np.concatenate(parts, axis=1)

    def rewards(self, task: RerankTask, requests: np.ndarray, lists: np.ndarray) -> torch.Tensor:
        """The reward model's value of each list ``[B, G, L]``, in one call, ``[B, G]``."""
        return self.reward.group_values(task, requests, lists)

    def _curve_point(self, task: RerankTask, requests: np.ndarray, iteration: int) -> dict:
        return self.curve_point(task, requests, iteration=iteration, reward_calls=self.reward_calls)
