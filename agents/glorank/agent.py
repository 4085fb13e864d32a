"""GloRank, the agent: demonstrations, stage 1 (SFT), stage 2 (PPO); top to bottom."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from agents.base import TrainableAgent, UnsupportedTaskError, empty_prefixes
from agents.common.distributed import DataParallel
from agents.common.losses import (
    generalized_advantages,
    group_baseline,
    group_relative_advantages,
)
from agents.common.nn import input_dims, request_inputs
from agents.common.ppo import PolicyEvaluation, ppo_update
from agents.common.sampling import request_gumbel, torch_generator
from agents.common.scorers import SimulatorScorer
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, minibatches, training_mode
from agents.glorank.config import GloRankConfig
from agents.glorank.model import GloRankPolicy, candidate_tokens
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.data.semantic_ids import codes_checksum
from simulators.progress import progress_bar
from simulators.search import beam_search_slots


class GloRank(TrainableAgent):
    """A reranker that writes its list as semantic-ID tokens (or, ``head="local"``, positions).

    Args:
        config: A :class:`GloRankConfig` (default: its defaults).
        **overrides: Config fields to change, e.g. ``GloRank(head="local")``.

    Attributes:
        settings: The frozen :class:`GloRankConfig` (its fields also read as attributes).
        reward: The training simulator as a list scorer (counts the lists it values).
    """

    config_class = GloRankConfig
    curve = ("reward_calls", "valid_reward")

    def __init__(self, config: GloRankConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.settings: GloRankConfig = self._settings_from(config, overrides)
        self.name = self.settings.name
        self.reward = SimulatorScorer("train")
        self._checked_tasks: weakref.WeakSet[RerankTask] = weakref.WeakSet()

    @property
    def reward_calls(self) -> int:
        """Lists and prefixes the training simulator valued during ``fit``."""
        return self.reward.calls

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        user_dim, item_dim = input_dims(task)
        tokenizer = task.tokenizer
        return {
            "user_dim": user_dim,
            "item_dim": item_dim,
            "max_length": task.slate_length,
            "num_candidates": task.num_candidates,
            "vocab_size": tokenizer.vocab_size,
            "levels": tokenizer.n_levels,
            "semantic_ids": codes_checksum(tokenizer.tokens),
        }

    def _build(self, task: RerankTask | None = None) -> None:
        cfg, info = self.settings, self.build_info
        with isolated_torch_rng(cfg.seed):
            policy = GloRankPolicy(
                info["user_dim"],
                info["item_dim"],
                info["vocab_size"],
                info["levels"],
                head=cfg.head,
                dim=cfg.dim,
                encoder_layers=cfg.encoder_layers,
                decoder_layers=cfg.decoder_layers,
                heads=cfg.heads,
                max_length=info["max_length"],
                initial_order=cfg.initial_order,
                tied_output=cfg.tied_output,
                detach_value=cfg.detach_value,
                max_candidates=info.get("num_candidates", 256),
            )
        self.modules = {"policy": policy}

    def check_task(self, task: RerankTask) -> None:
        """Refuse a task whose semantic IDs differ from those the agent was trained on."""
        if not self.build_info or task in self._checked_tasks:
            return
        if codes_checksum(task.tokenizer.tokens) != self.build_info["semantic_ids"]:
            raise UnsupportedTaskError(
                f"{self.name!r} was trained on other semantic IDs than this task's: its "
                "output tokens would name other items. Use the task (and semantic_ids "
                "config) it was trained on, or train it on this one"
            )
        if task.slate_length > self.build_info["max_length"]:
            raise UnsupportedTaskError(
                f"{self.name!r} was built for lists of at most {self.build_info['max_length']} "
                f"items; this task places L = {task.slate_length}"
            )
        positions = self.build_info.get("num_candidates", task.num_candidates)
        if self.settings.head == "index" and task.num_candidates > positions:
            raise UnsupportedTaskError(
                f"{self.name!r} has an index head over {positions} "
                f"candidate positions; this task offers N = {task.num_candidates}"
            )
        self._checked_tasks.add(task)

    def parameter_count(self) -> int:
        """Parameters of the policy."""
        self._require_built()
        return sum(p.numel() for p in self.modules["policy"].parameters())

    # ------------------------------------------------------------------ training

    def _setup(self, task: RerankTask, *, progress: bool = False) -> None:
        self.setup(task)
        self._checked_tasks.add(task)

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Stage 1 (SFT on demonstrations), then stage 2 (PPO on the list reward).

        torchrun: decoding, rewards and old values run in full on every rank; each
        minibatch's gradient pass is shared out (:mod:`agents.common.distributed`),
        each share's means weighted so the ranks' average is the minibatch's mean.
        """
        cfg = self.settings
        policy = self.modules["policy"].to(task.device)
        evaluate = parallel.wrap(policy, "evaluate", find_unused=True)
        rng = np.random.default_rng(cfg.seed)
        list_rng = torch_generator(cfg.seed, task.device)
        self.reward = SimulatorScorer("train")
        curve_requests = task.requests("valid")[: cfg.eval_requests]
        logger.log("curve", **self._curve_point(task, curve_requests, 0, 0))

        if cfg.sft_source != "none":
            self._supervise(task, evaluate, rng, logger, parallel, progress)
            logger.log("curve", **self._curve_point(task, curve_requests, 1, 0))
        reference = copy.deepcopy(policy).eval() if cfg.kl_coef > 0 else None

        self._reinforce(
            task, evaluate, reference, rng, list_rng, logger, parallel, progress, curve_requests
        )

    def _supervise(
        self,
        task: RerankTask,
        evaluate: Any,
        rng: np.random.Generator,
        logger: TrainingLogger,
        parallel: DataParallel,
        progress: bool,
    ) -> None:
        """Stage 1: token-level cross-entropy on the demonstration lists."""
        cfg = self.settings
        policy = self.modules["policy"]
        rows, demonstrations = self.demonstrations(task, rng, progress)
        optimiser = torch.optim.Adam(policy.parameters(), lr=cfg.sft_learning_rate)
        steps = cfg.sft_epochs * -(-len(rows) // cfg.sft_batch_size)
        bar = progress_bar(steps, "GloRank SFT", progress)
        for epoch in range(1, cfg.sft_epochs + 1):
            for whole in minibatches(np.arange(len(rows)), cfg.sft_batch_size, rng):
                batch = whole[parallel.shard(len(whole), even=False)]
                weight = parallel.share_weight(len(batch), len(whole))
                with training_mode(policy):
                    log_probs, entropy, _, correct = evaluate(
                        request_inputs(task, rows[batch]),
                        candidate_tokens(task, rows[batch]),
                        demonstrations[batch],
                    )
                    loss = -log_probs.mean() * weight
                    norm = gradient_step(optimiser, loss, list(policy.parameters()))
                loss_value = parallel.mean(loss.item())
                logger.log(
                    "sft",
                    epoch=epoch,
                    loss=loss_value,
                    entropy=parallel.mean(entropy.mean().item() * weight),
                    token_accuracy=parallel.mean(correct.float().mean().item() * weight),
                    grad_norm=norm,
                )
                bar.update()
                bar.set_postfix(loss=f"{loss_value:.3f}")
        bar.close()

    def _reinforce(
        self,
        task: RerankTask,
        evaluate: Any,
        reference: torch.nn.Module | None,
        rng: np.random.Generator,
        list_rng: torch.Generator,
        logger: TrainingLogger,
        parallel: DataParallel,
        progress: bool,
        curve_requests: np.ndarray,
    ) -> None:
        """Stage 2: PPO on the list reward, token log-probabilities under the trie mask."""
        cfg = self.settings
        policy = self.modules["policy"]
        sft_done = int(cfg.sft_source != "none")
        pool = task.requests("train")
        if cfg.train_requests is not None and cfg.train_requests < len(pool):
            pool = np.sort(rng.choice(pool, cfg.train_requests, replace=False))
        optimiser = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        length, group = task.slate_length, cfg.group_size
        bar = progress_bar(cfg.ppo_iterations, "GloRank PPO", progress)
        for iteration in range(1, cfg.ppo_iterations + 1):
            rows = pool[rng.integers(0, len(pool), cfg.batch_size)]
            list_rows = np.repeat(rows, group)
            policy.eval()
            lists, old_log_probs = policy.decode(
                request_inputs(task, rows),
                candidate_tokens(task, rows),
                length,
                mode="sample",
                generator=list_rng,
                repeats=group,
            )
            rewards = self.reward.group_values(task, rows, lists.reshape(len(rows), group, -1))
            with torch.no_grad():
                inputs, tokens = (
                    request_inputs(task, list_rows),
                    candidate_tokens(task, list_rows),
                )
                _, _, old_values, _ = policy.evaluate(inputs, tokens, lists)
                reference_log_probs = (
                    reference.evaluate(inputs, tokens, lists)[0] if reference is not None else None
                )
            advantage, returns = self.advantages(rewards, old_values)
            stats = ppo_update(
                _list_evaluator(evaluate, task, list_rows, lists),
                old_log_probs,
                advantage,
                optimiser=optimiser,
                parameters=list(policy.parameters()),
                modules=[policy],
                rng=rng,
                epochs=cfg.ppo_epochs,
                minibatch_size=cfg.minibatch_size,
                clip_low=cfg.clip_low,
                clip_high=cfg.clip_high,
                token_level=cfg.token_level,
                entropy_coef=cfg.entropy_coef,
                returns=returns if cfg.advantage == "gae" else None,
                value_coef=cfg.value_coef,
                reference_log_probs=reference_log_probs,
                kl_coef=cfg.kl_coef,
                parallel=parallel,
            )
            logger.log(
                "ppo",
                iteration=iteration,
                loss=stats["loss"],
                value_loss=stats["value_loss"],
                entropy=stats["entropy"],
                kl_to_sft=stats["kl"],
                approx_kl=stats["approx_kl"],
                clip_fraction=stats["clip_fraction"],
                grad_norm=stats["grad_norm"],
                reward=rewards.mean().item(),
                reward_calls=self.reward_calls,
            )
            bar.update()
            bar.set_postfix(reward=f"{rewards.mean().item():.3f}")
            if iteration % cfg.eval_every == 0 or iteration == cfg.ppo_iterations:
                logger.log("curve", **self._curve_point(task, curve_requests, sft_done, iteration))
        bar.close()

    def demonstrations(
        self, task: RerankTask, rng: np.random.Generator, progress: bool = False
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Stage 1's ``(requests [D], lists [D, L])`` by ``sft_source``.

        ``"beam"``: beam search of width ``sft_beam_width`` over the training
        simulator (its prefix evaluations count as reward calls); ``"logged"``: the
        request's logged positives first, then the other candidates in the initial
        order.
        """
        cfg = self.settings
        pool = task.requests("train")
        rows = np.sort(rng.choice(pool, min(cfg.sft_requests, len(pool)), replace=False))
        length, n = task.slate_length, task.num_candidates
        if cfg.sft_source == "logged":
            positive = task.logged_positives(rows)
            scores = positive * n + (n - np.arange(n))  # positives, then initial order
            lists = np.argsort(-scores, axis=1, kind="stable")[:, :length]
            return rows, torch.as_tensor(lists, device=task.device)
        parts = []
        chunk = 256
        bar = progress_bar(-(-len(rows) // chunk), "GloRank demonstrations", progress)
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            slots, _ = beam_search_slots(
                self.reward.prefix_scorer(task, part),
                len(part),
                n,
                length,
                cfg.sft_beam_width,
                device=task.device,
            )
            parts.append(slots[:, 0])
            bar.update()
        bar.close()
        return rows, torch.cat(parts)

    def advantages(
        self, rewards: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(advantages [M, S], value targets [M, S])`` of the sampled lists.

        Args:
            rewards: List rewards ``[B, G]``.
            values: The critic's values before each token ``[M, S]``, ``M = B * G``.
        """
        cfg = self.settings
        flat = rewards.reshape(-1).to(values.dtype)
        if cfg.advantage == "gae":
            step_rewards = torch.zeros_like(values)
            step_rewards[:, -1] = flat  # the list reward arrives with the last token
            advantage, returns = generalized_advantages(step_rewards, values, lam=cfg.gae_lambda)
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
            return advantage, returns
        if cfg.advantage == "group-mean":
            advantage = group_baseline(flat, cfg.group_size, "mean")
        else:
            advantage = group_relative_advantages(rewards).reshape(-1)
        return advantage[:, None].expand_as(values), flat[:, None].expand_as(values)

    # ------------------------------------------------------------------ serving

    def _curve_point(
        self, task: RerankTask, requests: np.ndarray, sft_done: int, iteration: int
    ) -> dict[str, Any]:
        """A learning-curve point: greedy reward on validation requests.

        Under the training simulator, with ``sft_done`` (stage 1 finished) and the
        PPO ``iteration``.
        """
        lists = self.rank(task, requests)
        reward = task.expected_reward(requests, lists, "train").mean().item()
        return {
            "sft_done": sft_done,
            "iteration": iteration,
            "reward_calls": self.reward_calls,
            "valid_reward": reward,
        }

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Trie-constrained greedy (or beam, ``decode="beam"``) decoding, batched."""
        self._require_built()
        self.check_task(task)
        cfg = self.settings
        policy = self.modules["policy"].to(task.device).eval()
        prefixes = (
            empty_prefixes(len(requests), task.slate_length) if prefixes is None else prefixes
        )
        lists, _ = policy.decode(
            request_inputs(task, requests),
            candidate_tokens(task, requests),
            task.slate_length,
            mode=cfg.decode,
            beam_width=cfg.beam_width,
            prefix=torch.as_tensor(np.asarray(prefixes), device=task.device),
        )
        return lists.cpu().numpy()

    def sample(
        self,
        task: RerankTask,
        requests: np.ndarray,
        count: int,
        seed: int,
        prefixes: np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """``count`` lists per request sampled from the policy, ``[B, count, L]``.

        Gumbel-max with per-request noise: a request's lists depend only on
        ``(seed, request)``.
        """
        self._require_built()
        self.check_task(task)
        policy = self.modules["policy"].to(task.device).eval()
        length, n = task.slate_length, task.num_candidates
        steps = length * policy.steps_per_item
        actions = policy.action_count(n)
        prefixes = empty_prefixes(len(requests), length) if prefixes is None else prefixes
        noise = request_gumbel(seed, requests, (count, steps, actions))
        repeated = np.repeat(np.asarray(prefixes), count, axis=0)
        lists, _ = policy.decode(
            request_inputs(task, requests),
            candidate_tokens(task, requests),
            length,
            mode="sample",
            temperature=temperature,
            repeats=count,
            prefix=torch.as_tensor(repeated, device=task.device),
            gumbel=torch.as_tensor(noise, dtype=torch.float32, device=task.device).reshape(
                len(requests) * count, steps, actions
            ),
        )
        return lists.cpu().numpy().reshape(len(requests), count, length)


def _list_evaluator(
    evaluate: Callable[..., tuple[torch.Tensor, ...]],
    task: RerankTask,
    list_rows: np.ndarray,
    lists: torch.Tensor,
) -> Callable[[np.ndarray], PolicyEvaluation]:
    """PPO's view of the policy on some of the sampled lists (their token steps)."""

    def evaluate_rows(batch: np.ndarray) -> PolicyEvaluation:
        log_probs, entropy, values, _ = evaluate(
            request_inputs(task, list_rows[batch]),
            candidate_tokens(task, list_rows[batch]),
            lists[batch],
        )
        return PolicyEvaluation(log_probs, entropy, values=values)

    return evaluate_rows
