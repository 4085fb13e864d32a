"""DeGRe, the agent: its training loop, top to bottom, and serving.

:meth:`DeGRe.fit` runs the three stages of :mod:`agents.degre`: fit the lookahead
evaluator (unless the training simulator is the evaluator), then, in ``rounds``,
mine lists with beam search under the evaluator and distil them into the pointer
generator with dense labels (or, in the sparse ablation, train the same generator
by REINFORCE on the evaluator's list value at the same number of evaluator calls).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from agents.base import UnsupportedTaskError, empty_prefixes
from agents.common.distributed import DataParallel
from agents.common.losses import advantages, reinforce_loss
from agents.common.nn import request_inputs
from agents.common.pointer import PointerPolicy
from agents.common.pointer_agent import PointerAgent
from agents.common.sampling import torch_generator
from agents.common.scorers import ListScorer, SimulatorScorer
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, minibatches, training_mode
from agents.degre.config import DeGReConfig
from agents.degre.evaluator import LookaheadEvaluator, LookaheadScorer, fit_evaluator
from agents.degre.generator import dense_loss, list_weights
from agents.degre.mining import MinedLists, mine, mining_calls_per_request
from rerank_env.task import RerankTask
from simulators.base import PAD, isolated_torch_rng
from simulators.progress import progress_bar
from simulators.search import beam_search_slots


class DeGRe(PointerAgent):
    """Dense-supervised generative reranker (lookahead evaluator -> greedy generator).

    Args:
        config: A :class:`DeGReConfig` (default: its defaults); e.g.
            ``DeGRe(DeGReConfig.quick(seed=1))``.
        **overrides: Config fields to change, e.g. ``DeGRe(beam_width=4)``.

    Attributes:
        settings: The frozen :class:`DeGReConfig` (its fields also read as attributes).
        scorer: What values lists in training: the evaluator, or the training simulator.
        evaluator_calls: Sequences (prefixes or lists) the evaluator scored in ``fit``.
        simulator_calls: Lists or prefixes the training simulator scored in ``fit``.
    """

    config_class = DeGReConfig
    curve = ("evaluator_calls", "valid_reward")

    def __init__(self, config: DeGReConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.settings: DeGReConfig = self._settings_from(config, overrides)
        self.name = self.settings.name
        self.scorer: ListScorer = SimulatorScorer("train")
        self._data_simulator_calls = 0  # the evaluator's training data

    @property
    def evaluator_calls(self) -> int:
        """Sequences the evaluator (learned or the simulator) valued during ``fit``."""
        return self.scorer.calls

    @property
    def simulator_calls(self) -> int:
        """Lists or prefixes the training simulator valued during ``fit``."""
        searched = self.scorer.calls if self.scorer.queries_simulator else 0
        return self._data_simulator_calls + searched

    @property
    def can_sample(self) -> bool:  # type: ignore[override]
        """Whether :meth:`sample` works: only with a generator."""
        return self.settings.decode == "generator"

    def _build(self, task: RerankTask | None = None) -> None:
        cfg, info = self.settings, self.build_info
        self.modules = {}
        with isolated_torch_rng(cfg.seed):
            if cfg.evaluator == "learned":
                self.modules["evaluator"] = LookaheadEvaluator(
                    info["user_dim"],
                    info["item_dim"],
                    max_length=info["max_length"],
                    dim=cfg.evaluator_dim,
                    layers=cfg.evaluator_layers,
                    heads=cfg.heads,
                )
            if cfg.decode == "generator":
                self.modules["policy"] = self._pointer_policy(
                    dim=cfg.dim,
                    encoder_layers=cfg.encoder_layers,
                    decoder_layers=cfg.decoder_layers,
                    heads=cfg.heads,
                )
        self.scorer = (
            LookaheadScorer(self.modules["evaluator"])
            if cfg.evaluator == "learned"
            else SimulatorScorer("train")
        )
        self._data_simulator_calls = 0

    def check_task(self, task: RerankTask) -> None:
        """Refuse tasks with fewer distinct lists than ``keep_lists``."""
        if self.settings.keep_lists > math.perm(task.num_candidates, task.slate_length):
            raise UnsupportedTaskError(
                f"keep_lists={self.settings.keep_lists} exceeds the P(N, L) lists of this task"
            )

    # ------------------------------------------------------------------ training

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Fit the evaluator, then mine and distil (or REINFORCE, or nothing to distil).

        torchrun: the evaluator and the mining run in full on every rank; the
        generator's gradient pass is shared out (:mod:`agents.common.distributed`).
        """
        cfg = self.settings
        # Stage 1: the lookahead evaluator, on simulator-scored lists.
        if cfg.evaluator == "learned":
            self._data_simulator_calls += fit_evaluator(
                self.modules["evaluator"], task, cfg, logger, progress
            )
        if cfg.decode == "generator":
            curve_requests = task.requests("valid")[: cfg.eval_requests]
            logger.log("curve", **self._curve_point(task, curve_requests))
            # Stages 2 and 3: mine and distil (or the sparse ablation).
            if cfg.supervision == "dense":
                self._fit_dense(task, curve_requests, logger, progress, parallel)
            else:
                self._fit_sparse(task, curve_requests, logger, progress)

    def _fit_dense(
        self,
        task: RerankTask,
        curve_requests: np.ndarray,
        logger: TrainingLogger,
        progress: bool,
        parallel: DataParallel,
    ) -> None:
        """Rounds of mining; after each, ``epochs`` of dense supervision on all lists so far."""
        cfg = self.settings
        policy = self.modules["policy"].to(task.device)
        rng = np.random.default_rng(cfg.seed + 1)
        optimiser = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        step_logits = parallel.wrap(policy, "step_logits")
        train = task.requests("train")
        chosen = rng.permutation(train)[: min(cfg.mining_requests, len(train))]
        mined: list[MinedLists] = []
        bar = progress_bar(cfg.rounds, "DeGRe rounds", progress)
        for chunk in np.array_split(chosen, min(cfg.rounds, len(chosen))):
            mined.append(self.mine(task, chunk, progress))
            data = MinedLists.concatenate(mined)
            weights = list_weights(data.values, cfg.list_weight)
            for _ in range(cfg.epochs):
                for batch in minibatches(np.arange(len(data)), cfg.batch_size, rng):
                    loss, entropy = dense_loss(
                        task,
                        policy,
                        data,
                        weights,
                        batch,
                        soft_weight=cfg.soft_weight,
                        temperature=cfg.temperature,
                        parallel=parallel,
                        step_logits=step_logits,
                    )
                    with training_mode(policy):
                        norm = gradient_step(optimiser, loss, list(policy.parameters()))
                    rows = torch.as_tensor(batch, device=task.device)
                    logger.log(
                        "generator",
                        loss=parallel.mean(loss.item()),
                        entropy=parallel.mean(entropy.item()),
                        grad_norm=norm,
                        reward=data.values[rows].mean().item(),
                        evaluator_calls=self.evaluator_calls,
                        simulator_calls=self.simulator_calls,
                    )
            point = self._curve_point(task, curve_requests)
            point["mined_lists"] = len(data)
            point["mined_value"] = data.values.mean().item()
            logger.log("curve", **point)
            bar.update()
            bar.set_postfix(valid_reward=f"{point['valid_reward']:.3f}")
        bar.close()

    def _fit_sparse(
        self, task: RerankTask, curve_requests: np.ndarray, logger: TrainingLogger, progress: bool
    ) -> None:
        """REINFORCE on the evaluator's list value, per-request mean baseline."""
        cfg = self.settings
        policy = self.modules["policy"].to(task.device)
        request_rng = np.random.default_rng(cfg.seed + 1)
        list_rng = torch_generator(cfg.seed, task.device)
        optimiser = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
        iterations, length = self.sparse_iterations_for(task), task.slate_length
        every = max(1, math.ceil(iterations / (4 * cfg.rounds)))  # a finer curve than dense
        bar = progress_bar(iterations, "DeGRe sparse", progress)
        for iteration in range(1, iterations + 1):
            rows = task.sample_requests("train", cfg.sparse_batch, request_rng)
            inputs = request_inputs(task, rows)
            with torch.no_grad():
                slots, _ = policy.generate(
                    inputs, length, greedy=False, generator=list_rng, repeats=cfg.sparse_samples
                )
                values = self.scorer.prefix_values(task, np.repeat(rows, cfg.sparse_samples), slots)
            advantage = advantages(values, cfg.sparse_samples, "sparse")
            with training_mode(policy):
                log_probs, entropy = policy.step_log_probs_and_entropy(
                    inputs, slots, repeats=cfg.sparse_samples
                )
                loss = reinforce_loss(log_probs, advantage)
                norm = gradient_step(optimiser, loss, list(policy.parameters()))
            logger.log(
                "generator",
                loss=loss.item(),
                entropy=entropy.mean().item(),
                grad_norm=norm,
                reward=values[:, -1].mean().item(),
                evaluator_calls=self.evaluator_calls,
                simulator_calls=self.simulator_calls,
            )
            bar.update()
            if iteration % every == 0 or iteration == iterations:
                logger.log("curve", **self._curve_point(task, curve_requests))
        bar.close()

    def sparse_iterations_for(self, task: RerankTask) -> int:
        """REINFORCE steps of the sparse ablation: the dense run's evaluator calls."""
        cfg = self.settings
        if cfg.sparse_iterations is not None:
            return cfg.sparse_iterations
        mined = min(cfg.mining_requests, len(task.requests("train")))
        calls = mined * mining_calls_per_request(
            task.num_candidates, task.slate_length, cfg.beam_width
        )
        return max(1, math.ceil(calls / (cfg.sparse_batch * cfg.sparse_samples)))

    def _curve_point(self, task: RerankTask, requests: np.ndarray) -> dict[str, float]:
        return self.curve_point(
            task,
            requests,
            evaluator_calls=self.evaluator_calls,
            simulator_calls=self.simulator_calls,
        )

    def mine(self, task: RerankTask, requests: np.ndarray, progress: bool = False) -> MinedLists:
        """Beam-search each request's best lists under the evaluator, with step values."""
        self._require_built()
        cfg = self.settings
        return mine(
            task,
            self.scorer,
            requests,
            beam_width=cfg.beam_width,
            keep=cfg.keep_lists,
            batch_size=cfg.mining_batch,
            progress=progress,
        )

    def dense_loss(
        self,
        task: RerankTask,
        policy: PointerPolicy,
        data: MinedLists,
        weights: torch.Tensor,
        batch: np.ndarray,
    ) -> torch.Tensor:
        """Value-weighted ``sum_t CE(hard_t) + lambda * KL(soft_t || p_t)`` of ``batch``."""
        cfg = self.settings
        return dense_loss(
            task,
            policy,
            data,
            weights,
            batch,
            soft_weight=cfg.soft_weight,
            temperature=cfg.temperature,
        )[0]

    # ------------------------------------------------------------------ serving

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """One greedy pass of the generator (or the evaluator's beam search)."""
        self._require_built()
        requests = np.asarray(requests, dtype=np.int64)
        if self.settings.decode == "generator":
            return super().rank(task, requests, prefixes)
        return self._beam_rank(task, requests, prefixes)

    @torch.no_grad()
    def _beam_rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None
    ) -> np.ndarray:
        length = task.slate_length
        prefixes = empty_prefixes(len(requests), length) if prefixes is None else prefixes
        counts = (prefixes != PAD).sum(axis=1)
        lists = np.empty((len(requests), length), dtype=np.int64)
        calls = self.scorer.calls  # serving is not training
        for count in np.unique(counts):  # one search per prefix length
            group = np.flatnonzero(counts == count)
            if count == length:
                lists[group] = prefixes[group]
                continue
            slots, _ = beam_search_slots(
                self.scorer.prefix_scorer(task, requests[group]),
                len(group),
                task.num_candidates,
                length,
                self.settings.beam_width,
                torch.as_tensor(prefixes[group, :count], device=task.device),
                device=task.device,
            )
            lists[group] = slots[:, 0].cpu().numpy()
        self.scorer.calls = calls
        return lists
