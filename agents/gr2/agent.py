"""GR2, the agent: mid-training, teacher traces, reasoning SFT, DAPO; top to bottom.

Trains on a GR2-protocol task (``task.gr2_task()``, or ``make_task(protocol="gr2")``):
each request offers the pre-ranker's K candidates, one of which is the user's true
next item ``x*``. The student reads the user's history and the candidates in
semantic IDs, writes a rationale, then ranks all K.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from agents.base import TrainableAgent, UnsupportedTaskError, complete_by_scores
from agents.common.distributed import DataParallel
from agents.common.losses import group_relative_advantages
from agents.common.ppo import PolicyEvaluation, ppo_update
from agents.common.scorers import SimulatorScorer
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, minibatches, training_mode
from agents.gr2 import language as lang
from agents.gr2.config import GR2Config
from agents.gr2.constraint import replay_masks
from agents.gr2.language import GR2Vocabulary, ItemFacts
from agents.gr2.model import build_student, generate, pad, token_log_probs
from agents.gr2.rewards import (
    format_reward,
    informative_groups,
    order_diagnostics,
    overlong_penalty,
    rank_reward,
)
from agents.gr2.teacher import TeacherRankings, slot_one_values, teach
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.data.errors import ConfigError
from simulators.data.semantic_ids import codes_checksum
from simulators.metrics import ndcg_at_k, recall_at_k, target_ranks
from simulators.progress import progress_bar

#: Share of items held out of the captioning tasks to measure what mid-training taught.
CAPTION_HOLDOUT = 0.1
#: The training stages in order (and the pool draw), each seeded by its index here.
STAGES = ("pool", "mid", "sft", "dapo")
#: Settings :meth:`GR2.branch` keeps: the student's architecture, its prompt, its seed
#: and its training requests (the branches share them).
BRANCH_FIXED = (
    "dim",
    "layers",
    "heads",
    "intermediate",
    "history_items",
    "year_buckets",
    "popularity_buckets",
    "max_reasoning_tokens",
    "cited_candidates",
    "seed",
    "train_requests",
)
#: Requests decoded per ``generate`` call when serving.
SERVE_BATCH = 256


class _Stage(NamedTuple):
    """What a training stage starts with (:meth:`GR2._start_stage`)."""

    logger: TrainingLogger
    rng: np.random.Generator  # the stage's own, seeded by (seed, stage)
    facts: ItemFacts
    pool: np.ndarray  # the training requests used
    slot_one: np.ndarray  # the training simulator's slot-1 value of their candidates
    valid: np.ndarray  # the learning curve's validation requests
    clock: float  # perf_counter() at the start of the stage's own work
    owns_logger: bool  # the stage opened its logger (closes it at its end); not in fit


class GR2(TrainableAgent):
    """A small LM that reasons over semantic IDs, then ranks the K candidates.

    Args:
        config: A :class:`GR2Config` (default: its defaults).
        **overrides: Config fields to change, e.g. ``GR2(format_reward="unconditional")``.

    Attributes:
        settings: The frozen :class:`GR2Config`.
        reward: The training simulator as a list scorer (the teacher's planner).
        teacher_stats: Acceptance of the last fit's teacher (``None`` before).
        mid_report: What mid-training taught, before and after (``None`` before).
        stage_seconds: Wall time of the stages run (``mid``, ``sft``: teacher and SFT,
            ``dapo``).
        stages_done: The stages run since :meth:`setup`, in order.
    """

    config_class = GR2Config
    curve = ("dapo_iteration", "valid_recall@1")

    def __init__(self, config: GR2Config | None = None, **overrides: Any) -> None:
        super().__init__()
        self.settings: GR2Config = self._settings_from(config, overrides)
        self.name = self.settings.name
        self.reward = SimulatorScorer("train")
        self.teacher_stats: dict[str, float] | None = None
        self.mid_report: dict[str, float] | None = None
        self.stage_seconds: dict[str, float] = {}
        self.stages_done: list[str] = []
        self._shared: dict[str, Any] = {}

    # ------------------------------------------------------------------ building

    def check_task(self, task: RerankTask) -> None:
        """Refuse a task that is not a GR2-protocol task, or not the one trained on."""
        if task.description.get("protocol") != "gr2":
            raise UnsupportedTaskError(
                f"{self.name!r} ranks the GR2 protocol's K candidates (one is the true next "
                "item): give it task.gr2_task() or make_task(protocol='gr2') "
                "(SlateRerankGR2-v0), not this task"
            )
        if not self.build_info:
            return
        if codes_checksum(task.tokenizer.tokens) != self.build_info["semantic_ids"]:
            raise UnsupportedTaskError(
                f"{self.name!r} was trained on other semantic IDs than this task's: its "
                "tokens would name other items. Use the task it was trained on"
            )
        if task.num_candidates != self.build_info["candidates"]:
            raise UnsupportedTaskError(
                f"{self.name!r} was trained on K = {self.build_info['candidates']} candidates; "
                f"this task offers {task.num_candidates}"
            )

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        cfg = self.settings
        vocab = lang.vocabulary_for(task, cfg.year_buckets, cfg.popularity_buckets)
        longest = lang.longest_rationale(vocab, cfg.cited_candidates)
        if longest > cfg.max_reasoning_tokens - cfg.overlong_cache:
            raise UnsupportedTaskError(
                f"the teacher's longest rationale on this task is {longest} tokens "
                f"({vocab.levels} semantic-ID levels, {cfg.cited_candidates} cited candidates); "
                f"it must fit in max_reasoning_tokens - overlong_cache = "
                f"{cfg.max_reasoning_tokens - cfg.overlong_cache}: raise max_reasoning_tokens"
            )
        prompt = 4 + (cfg.history_items + task.num_candidates) * vocab.levels
        return {
            "n_genres": vocab.n_genres,
            "candidates": vocab.candidates,
            "sid_sizes": list(vocab.sid_sizes),
            "semantic_ids": codes_checksum(task.tokenizer.tokens),
            "max_length": prompt + cfg.max_reasoning_tokens + 3 + vocab.candidates * vocab.levels,
        }

    @property
    def vocab(self) -> GR2Vocabulary:
        """The student's vocabulary."""
        self._require_built()
        info, cfg = self.build_info, self.settings
        return GR2Vocabulary(
            info["n_genres"],
            cfg.year_buckets,
            cfg.popularity_buckets,
            info["candidates"],
            tuple(info["sid_sizes"]),
        )

    def _build(self, task: RerankTask | None = None) -> None:
        cfg = self.settings
        with isolated_torch_rng(cfg.seed):
            student = build_student(
                self.vocab,
                dim=cfg.dim,
                layers=cfg.layers,
                heads=cfg.heads,
                intermediate=cfg.intermediate,
                max_length=self.build_info["max_length"] + 8,
            )
        self.modules = {"student": student}

    def parameter_count(self) -> int:
        """Parameters of the student."""
        self._require_built()
        return sum(p.numel() for p in self.modules["student"].parameters())

    # ------------------------------------------------------------------ training

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Mid-training, teacher traces and reasoning SFT, then DAPO (each optional by config).

        ``fit`` is the same as :meth:`setup`, :meth:`mid_train`, :meth:`supervise` and
        :meth:`reinforce` in turn: each stage draws from its own seeded generator, so
        a study may branch between stages (:meth:`branch`) and get the runs it would
        get from separate fits.
        """
        self.mid_train(task, progress=progress, logger=logger)
        self.supervise(task, progress=progress, logger=logger)
        self.reinforce(task, progress=progress, logger=logger)

    def setup(self, task: RerankTask) -> GR2:
        """Build the untrained student for ``task``; no stage done yet."""
        super().setup(task)
        self.stages_done = []
        self.stage_seconds = {}
        self.teacher_stats = self.mid_report = None
        self._shared = {}
        return self

    def branch(self, **overrides: Any) -> GR2:
        """A copy of this agent, its stages so far and its student, with other settings.

        For studies that share stages: e.g. after :meth:`supervise`,
        ``agent.branch(format_reward="unconditional").reinforce(task)`` is the DAPO
        ablation of the same SFT student (what a fit with those settings would give,
        since each stage seeds itself). Only settings that leave the student's
        architecture alone may change.

        Raises:
            ConfigError: ``overrides`` change a setting of :data:`BRANCH_FIXED` (the
                architecture, the prompt, the seed, the training requests).
        """
        self._require_built()
        changed = sorted(set(overrides) & set(BRANCH_FIXED))
        if changed:
            raise ConfigError(
                f"branch() keeps the student and its seed; it cannot change {changed}: "
                "build a new GR2 with those settings and fit it"
            )
        twin = GR2(dataclasses.replace(self.settings, **overrides))
        twin.build_info = copy.deepcopy(self.build_info)
        twin.modules = {"student": copy.deepcopy(self.modules["student"])}
        twin.history = list(self.history)
        twin.stages_done = list(self.stages_done)
        twin.stage_seconds = dict(self.stage_seconds)
        twin.teacher_stats = None if self.teacher_stats is None else dict(self.teacher_stats)
        twin.mid_report = None if self.mid_report is None else dict(self.mid_report)
        twin._shared = self._shared  # the pool and slot-1 values: read only
        twin.fitted = self.fitted
        return twin

    def _stage_rng(self, stage: str) -> np.random.Generator:
        """The generator of one stage: seeded by the agent's seed and the stage alone."""
        return np.random.default_rng([self.settings.seed, STAGES.index(stage)])

    def _start_stage(
        self, task: RerankTask, stage: str, logger: TrainingLogger | None = None
    ) -> _Stage:
        """Refuse a stage already run; the stage's logger, generator, data and clock.

        ``logger``: the one ``fit`` opened (default: the stage opens and closes its own).
        """
        self._require_built()
        self.check_task(task)
        if stage in self.stages_done:
            raise RuntimeError(
                f"{self.name!r} has already run its {stage!r} stage; branch() an agent "
                "before it to run the stage with other settings"
            )
        self.reward = SimulatorScorer("train")
        self.modules["student"].to(task.device)
        pool, slot_one = self._training_pool(task)
        return _Stage(
            logger=self.training_logger() if logger is None else logger,
            rng=self._stage_rng(stage),
            facts=ItemFacts.from_task(task, self.vocab),
            pool=pool,
            slot_one=slot_one,
            valid=task.requests("valid")[: self.settings.eval_requests],
            clock=time.perf_counter(),
            owns_logger=logger is None,
        )

    def _training_pool(self, task: RerankTask) -> tuple[np.ndarray, np.ndarray]:
        """The training requests used and their slot-1 values (computed once per agent).

        The training simulator's value of each candidate in slot 1: the grammar
        corpus's rationales and the teacher's first pick both start from it.
        """
        if "pool" not in self._shared:
            cfg = self.settings
            pool = task.requests("train")
            if cfg.train_requests is not None and cfg.train_requests < len(pool):
                rng = self._stage_rng("pool")
                pool = np.sort(rng.choice(pool, cfg.train_requests, replace=False))
            self._shared["pool"] = pool
            self._shared["slot_one"] = slot_one_values(task, pool, self.reward)
        return self._shared["pool"], self._shared["slot_one"]

    def mid_train(
        self, task: RerankTask, *, progress: bool = False, logger: TrainingLogger | None = None
    ) -> GR2:
        """Stage 0: what semantic IDs mean (next SID, captioning, the reasoning grammar).

        Measured before and after on held-out items and validation requests
        (``mid_report``). ``logger``: ``fit``'s (default: the stage opens its own).
        """
        cfg, student = self.settings, self.modules["student"]
        stage = self._start_stage(task, "mid", logger)
        logger, rng, facts, valid = stage.logger, stage.rng, stage.facts, stage.valid
        captioned, held_out = self._caption_split(task, rng)
        before = self._mid_training_report(task, facts, valid, held_out)
        if cfg.mid_steps:
            corpus = self._mid_training_corpus(task, facts, stage.pool, stage.slot_one, captioned)
            optimiser = torch.optim.AdamW(student.parameters(), lr=cfg.mid_learning_rate)
            bar = progress_bar(cfg.mid_steps, "GR2 mid-training", progress)
            for step in range(1, cfg.mid_steps + 1):
                kind = cfg.mid_tasks[step % len(cfg.mid_tasks)]
                sequences, starts = corpus[kind]
                rows = rng.integers(0, len(sequences), cfg.mid_batch_size)
                with training_mode(student):
                    loss, accuracy = self._lm_loss(task, [sequences[r] for r in rows], starts[rows])
                    norm = gradient_step(optimiser, loss, list(student.parameters()))
                logger.log(
                    "mid",
                    task=cfg.mid_tasks.index(kind),
                    loss=loss.item(),
                    token_accuracy=accuracy,
                    grad_norm=norm,
                )
                bar.update()
            bar.close()
        after = self._mid_training_report(task, facts, valid, held_out)
        self.mid_report = {
            **{f"{k}_before": v for k, v in before.items()},
            **{f"{k}_after": v for k, v in after.items()},
        }
        logger.log("mid_report", **self.mid_report)
        return self._end_stage("mid", stage)

    def supervise(
        self, task: RerankTask, *, progress: bool = False, logger: TrainingLogger | None = None
    ) -> GR2:
        """Stage 1: teacher traces (rejection-sampled or targeted), then SFT on them.

        ``logger``: ``fit``'s (default: the stage opens its own).
        """
        cfg = self.settings
        stage = self._start_stage(task, "sft", logger)
        logger, rng, pool, valid = stage.logger, stage.rng, stage.pool, stage.valid
        kept = teach(
            task,
            pool,
            task.pool.gr2_target_pos[pool],
            self.reward,
            rng,
            mode=cfg.teacher,
            temperature=cfg.teacher_temperature,
            attempts=cfg.rejection_attempts,
            beam_width=cfg.teacher_beam_width,
            values=stage.slot_one,
        )
        self.teacher_stats = {
            "offered": kept.offered,
            "kept": len(kept.requests),
            "acceptance_rate": kept.acceptance_rate,
            "mean_attempts": float(kept.attempts.mean()),
        }
        logger.log("teacher", **self.teacher_stats)
        logger.log("curve", sft_done=0, **self._curve_point(task, valid, 0))
        if len(kept.requests):
            self._sft(task, stage.facts, kept, rng, logger, progress)
        logger.log("curve", sft_done=1, **self._curve_point(task, valid, 0))
        return self._end_stage("sft", stage)

    def reinforce(
        self, task: RerankTask, *, progress: bool = False, logger: TrainingLogger | None = None
    ) -> GR2:
        """Stage 2: DAPO on the verifiable rank reward (+ format reward), no KL.

        DAPO's update is PPO's (:func:`~agents.common.ppo.ppo_update`) with clip-higher,
        token-level normalisation and no critic. ``logger``: ``fit``'s (default: the
        stage opens its own).
        """
        cfg, student = self.settings, self.modules["student"]
        stage = self._start_stage(task, "dapo", logger)
        logger, rng, facts, valid = stage.logger, stage.rng, stage.facts, stage.valid
        optimiser = torch.optim.AdamW(student.parameters(), lr=cfg.learning_rate)
        bar = progress_bar(cfg.dapo_iterations, "GR2 DAPO", progress)
        for iteration in range(1, cfg.dapo_iterations + 1):
            batch = self._rollouts(task, facts, stage.pool, rng)
            written, rewards = batch["written"], batch["rewards"]
            advantage = group_relative_advantages(torch.as_tensor(rewards)).reshape(-1)
            pairs = zip(batch["prompts"], written, strict=True)
            sequences = [np.concatenate([prompt, tokens]) for prompt, tokens in pairs]
            with torch.no_grad():
                old = self._sequence_log_probs(task, sequences, batch["starts"], batch["sids"])[0]
            evaluate = self._sequence_evaluator(task, sequences, batch["starts"], batch["sids"])
            stats = ppo_update(
                evaluate,
                old,
                advantage,
                optimiser=optimiser,
                parameters=list(student.parameters()),
                modules=[student],
                rng=rng,
                epochs=cfg.dapo_epochs,
                minibatch_size=cfg.minibatch_size,
                clip_low=cfg.clip_low,
                clip_high=cfg.clip_high,
                token_level=True,
            )
            logger.log(
                "dapo",
                iteration=iteration,
                loss=stats["loss"],
                entropy=stats["entropy"],
                clip_fraction=stats["clip_fraction"],
                approx_kl=stats["approx_kl"],
                grad_norm=stats["grad_norm"],
                reward=float(rewards.mean()),
                rank_reward=batch["rank_reward"],
                format_reward=batch["format_reward"],
                overlong=batch["overlong"],
                kept_groups=batch["kept_groups"],
                sampled_groups=batch["sampled_groups"],
                **batch["diagnostics"],
            )
            bar.update()
            bar.set_postfix(reward=f"{rewards.mean():.3f}")
            if iteration % cfg.eval_every == 0 or iteration == cfg.dapo_iterations:
                logger.log("curve", sft_done=1, **self._curve_point(task, valid, iteration))
        bar.close()
        return self._end_stage("dapo", stage)

    def _sequence_evaluator(
        self, task: RerankTask, sequences: list[np.ndarray], starts: np.ndarray, sids: torch.Tensor
    ) -> Callable[[np.ndarray], PolicyEvaluation]:
        """PPO's view of the student on some of the sampled sequences (their written tokens)."""

        def evaluate(rows: np.ndarray) -> PolicyEvaluation:
            log_probs, entropy, mask = self._sequence_log_probs(
                task, [sequences[r] for r in rows], starts[rows], sids[rows]
            )
            return PolicyEvaluation(log_probs, entropy, mask=mask)

        return evaluate

    def _end_stage(self, name: str, stage: _Stage) -> GR2:
        self.stage_seconds[name] = time.perf_counter() - stage.clock
        self.stages_done.append(name)
        if name == STAGES[-1]:
            stage.logger.log("timing", **{f"{k}_s": v for k, v in self.stage_seconds.items()})
        if stage.owns_logger:
            stage.logger.close()
        self.modules["student"].eval()
        self.fitted = True
        return self

    def _sft(
        self,
        task: RerankTask,
        facts: ItemFacts,
        kept: TeacherRankings,
        rng: np.random.Generator,
        logger: Any,
        progress: bool,
    ) -> None:
        """Stage 1: weighted token cross-entropy on the teacher's traces."""
        cfg, vocab = self.settings, self.vocab
        student = self.modules["student"]
        histories = lang.recent_history(task, kept.requests, cfg.history_items)
        candidates = task.candidates_np[kept.requests]
        sequences, starts, weights = [], [], []
        for history, cands, ranking in zip(histories, candidates, kept.rankings, strict=True):
            prompt = lang.prompt(vocab, facts, history, cands)
            reasoning = lang.rationale(vocab, facts, history, cands, ranking, cfg.cited_candidates)
            answer = lang.answer(vocab, facts, cands, ranking)
            sequences.append(np.concatenate([prompt, reasoning, answer]))
            starts.append(len(prompt))
            weights.append(
                np.concatenate(
                    [
                        np.full(len(reasoning), cfg.reasoning_weight),
                        np.full(len(answer), cfg.answer_weight),
                    ]
                )
            )
        starts = np.array(starts)
        sids = torch.as_tensor(facts.sid_tokens[candidates], device=task.device)
        optimiser = torch.optim.AdamW(student.parameters(), lr=cfg.sft_learning_rate)
        steps = cfg.sft_epochs * -(-len(sequences) // cfg.sft_batch_size)
        bar = progress_bar(steps, "GR2 SFT", progress)
        for epoch in range(1, cfg.sft_epochs + 1):
            for rows in minibatches(np.arange(len(sequences)), cfg.sft_batch_size, rng):
                with training_mode(student):
                    log_probs, _, mask = self._sequence_log_probs(
                        task, [sequences[r] for r in rows], starts[rows], sids[rows]
                    )
                    weight = _aligned(
                        [weights[r] for r in rows], starts[rows], mask.shape, task.device
                    )
                    loss = -(log_probs * weight).sum() / weight.sum().clamp(min=1e-9)
                    norm = gradient_step(optimiser, loss, list(student.parameters()))
                logger.log("sft", epoch=epoch, loss=loss.item(), grad_norm=norm)
                bar.update()
        bar.close()

    def _rollouts(
        self,
        task: RerankTask,
        facts: ItemFacts,
        pool: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        """One DAPO batch: G samples per prompt, rewards, dynamic sampling."""
        cfg, vocab = self.settings, self.vocab
        student = self.modules["student"].eval()
        group, wanted = cfg.group_size, cfg.prompts_per_batch
        targets = task.pool.gr2_target_pos
        kept: list[dict[str, Any]] = []
        sampled = 0
        for round_ in range(1 + (cfg.max_refill_rounds if cfg.dynamic_sampling else 0)):
            need = wanted - sum(len(part["requests"]) for part in kept)
            if need <= 0:
                break
            requests = pool[rng.integers(0, len(pool), need)]
            sampled += need
            rows = np.repeat(requests, group)
            prompts, sids = self._prompts(task, facts, rows)
            seed = int(rng.integers(2**31))
            with isolated_torch_rng(seed):
                written, state = generate(
                    student,
                    vocab,
                    prompts,
                    sids,
                    cfg.max_reasoning_tokens,
                    sample=True,
                    temperature=cfg.temperature,
                )
            rankings = state.ranking.cpu().numpy()
            written = written.cpu().numpy()
            formed = np.array(
                [
                    lang.well_formed(vocab, _reasoning(vocab, w), s)
                    for w, s in zip(written, sids.cpu().numpy(), strict=True)
                ]
            )
            pre = targets[rows] + 1
            post = (rankings == targets[rows][:, None]).argmax(axis=1) + 1
            r_rank = rank_reward(pre, post, task.num_candidates)
            r_format = format_reward(r_rank, pre, formed, cfg.format_alpha, cfg.format_reward)
            lengths = state.reasoning_length.cpu().numpy()
            r_long = overlong_penalty(lengths, cfg.max_reasoning_tokens, cfg.overlong_cache)
            rewards = (r_rank + r_format + r_long).reshape(need, group)
            keep = informative_groups(rewards) if cfg.dynamic_sampling else np.ones(need, bool)
            if round_ == cfg.max_refill_rounds and cfg.dynamic_sampling and not kept:
                keep[:] = True  # nothing informative at all: train on what there is
            if not keep.any():
                continue
            keep_rows = np.repeat(keep, group)
            kept.append(
                {
                    "requests": requests[keep],
                    "rows": rows[keep_rows],
                    "prompts": [prompts[r] for r in np.flatnonzero(keep_rows)],
                    "written": [_trimmed(vocab, written[r]) for r in np.flatnonzero(keep_rows)],
                    "sids": sids[torch.as_tensor(keep_rows, device=sids.device)],
                    "rewards": rewards[keep],
                    "rankings": rankings[keep_rows],
                    "formed": formed[keep_rows],
                    "r_rank": r_rank[keep_rows],
                    "r_format": r_format[keep_rows],
                    "r_long": r_long[keep_rows],
                }
            )
        joined = {key: [x for part in kept for x in part[key]] for key in ("prompts", "written")}
        rows = np.concatenate([part["rows"] for part in kept])
        rankings = np.concatenate([part["rankings"] for part in kept])
        formed = np.concatenate([part["formed"] for part in kept])
        return {
            **joined,
            "starts": np.array([len(p) for p in joined["prompts"]]),
            "sids": torch.cat([part["sids"] for part in kept]),
            "rewards": np.concatenate([part["rewards"] for part in kept]),
            "rank_reward": float(np.concatenate([part["r_rank"] for part in kept]).mean()),
            "format_reward": float(np.concatenate([part["r_format"] for part in kept]).mean()),
            "overlong": float(np.concatenate([part["r_long"] for part in kept]).mean()),
            "kept_groups": sum(len(part["requests"]) for part in kept),
            "sampled_groups": sampled,
            "diagnostics": order_diagnostics(rankings, targets[rows], formed),
        }

    # ------------------------------------------------------------------ pieces

    def _prompts(
        self, task: RerankTask, facts: ItemFacts, requests: np.ndarray
    ) -> tuple[list[np.ndarray], torch.Tensor]:
        """Prompts of ``requests`` and their candidates' codes ``[B, K, levels]``."""
        cfg, vocab = self.settings, self.vocab
        histories = lang.recent_history(task, requests, cfg.history_items)
        candidates = task.candidates_np[requests]
        pairs = zip(histories, candidates, strict=True)
        prompts = [lang.prompt(vocab, facts, history, cands) for history, cands in pairs]
        return prompts, torch.as_tensor(facts.sid_tokens[candidates], device=task.device)

    def _sequence_log_probs(
        self, task: RerankTask, sequences: list[np.ndarray], starts: np.ndarray, sids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Constrained log-probs and entropies of the written tokens, and their mask.

        Each sequence is a prompt (``starts[i]`` tokens) and what was written after
        it. Returns ``[B, T - 1]`` tensors (entry ``t``: token ``t + 1``); the mask
        marks written tokens that were a choice (more than one token allowed).
        """
        vocab = self.vocab
        pad_id = vocab.id("<pad>")
        ids, attention = pad(sequences, pad_id, task.device)
        batch, width = ids.shape
        written = torch.full(
            (batch, width - int(starts.min())), pad_id, dtype=torch.long, device=task.device
        )
        for row, (sequence, start) in enumerate(zip(sequences, starts, strict=True)):
            written[row, : len(sequence) - start] = torch.as_tensor(sequence[start:])
        masks, _ = replay_masks(vocab, sids, written, self.settings.max_reasoning_tokens)
        full = torch.ones(batch, width - 1, vocab.size, dtype=torch.bool, device=task.device)
        choice = torch.zeros(batch, width - 1, dtype=torch.bool, device=task.device)
        for row, (sequence, start) in enumerate(zip(sequences, starts, strict=True)):
            length = len(sequence) - start
            full[row, start - 1 : start - 1 + length] = masks[row, :length]
            choice[row, start - 1 : start - 1 + length] = masks[row, :length].sum(dim=1) > 1
        start_t = torch.as_tensor(starts, device=task.device)
        log_probs, entropy = token_log_probs(self.modules["student"], ids, attention, full, start_t)
        return log_probs, entropy, choice

    def _lm_loss(
        self, task: RerankTask, sequences: list[np.ndarray], starts: np.ndarray
    ) -> tuple[torch.Tensor, float]:
        """Cross-entropy of every token from ``starts`` on (no constraint), and accuracy."""
        ids, attention = pad(sequences, self.vocab.id("<pad>"), task.device)
        student = self.modules["student"]
        start = torch.as_tensor(starts, device=task.device)
        log_probs, _ = token_log_probs(student, ids, attention, None, start)
        steps = torch.arange(ids.shape[1] - 1, device=task.device)
        scored = (steps[None, :] + 1 >= start[:, None]) & (attention[:, 1:] > 0)
        loss = -(log_probs * scored).sum() / scored.sum()
        with torch.no_grad():
            accuracy = (log_probs > np.log(0.5)) & scored
        return loss, float(accuracy.sum() / scored.sum())

    def _caption_split(
        self, task: RerankTask, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items the captioning tasks train on, and the held-out ones they are scored on."""
        items = np.flatnonzero(task.pool.trained_items() & ~task.withheld_items)
        held = rng.random(len(items)) < CAPTION_HOLDOUT
        return items[~held], items[held]

    def _mid_training_corpus(
        self,
        task: RerankTask,
        facts: ItemFacts,
        pool: np.ndarray,
        slot_one: np.ndarray,
        captioned: np.ndarray,
    ) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
        """Sequences (and the index of their first scored token) of each mid-training task.

        ``slot_one`` is :func:`~agents.gr2.teacher.slot_one_values` of ``pool``.
        """
        cfg, vocab = self.settings, self.vocab
        corpus: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
        if "next-sid" in cfg.mid_tasks:
            histories = lang.recent_history(task, pool, cfg.history_items + 1)
            sequences = [
                np.concatenate(
                    [
                        vocab.ids(["<bos>", "<next>", "<hist>"]),
                        facts.sid_tokens[h].reshape(-1),
                        vocab.ids(["<eos>"]),
                    ]
                )
                for h in histories
                if len(h) >= 2
            ]
            # Scored from the second item on: each next code given the ones before.
            corpus["next-sid"] = (sequences, np.full(len(sequences), 3 + vocab.levels))
        if "caption" in cfg.mid_tasks or "describe" in cfg.mid_tasks:
            captions, descriptions = [], []
            for item in captioned:
                attributes = _attribute_tokens(vocab, facts, item)
                code = facts.sid_tokens[item]
                captions.append(
                    np.concatenate(
                        [
                            vocab.ids(["<bos>", "<caption>"]),
                            code,
                            vocab.ids(["<attr>"]),
                            attributes,
                            vocab.ids(["<eos>"]),
                        ]
                    )
                )
                descriptions.append(
                    np.concatenate(
                        [
                            vocab.ids(["<bos>", "<describe>"]),
                            attributes,
                            vocab.ids(["<attr>"]),
                            code,
                            vocab.ids(["<eos>"]),
                        ]
                    )
                )
            corpus["caption"] = (captions, np.full(len(captions), 3 + vocab.levels))
            corpus["describe"] = (
                descriptions,
                np.array([len(d) - vocab.levels - 1 for d in descriptions]),
            )
        if "grammar" in cfg.mid_tasks:
            # Rationales of the simulator's own top candidates, no answer, no x*.
            order = np.argsort(-slot_one, axis=1, kind="stable")
            histories = lang.recent_history(task, pool, cfg.history_items)
            candidates = task.candidates_np[pool]
            sequences, starts = [], []
            for history, cands, ranking in zip(histories, candidates, order, strict=True):
                prompt = lang.prompt(vocab, facts, history, cands)
                reasoning = lang.rationale(
                    vocab, facts, history, cands, ranking, cfg.cited_candidates
                )
                sequences.append(np.concatenate([prompt, reasoning]))
                starts.append(len(prompt))
            corpus["grammar"] = (sequences, np.array(starts))
        return corpus

    def _mid_training_report(
        self, task: RerankTask, facts: ItemFacts, requests: np.ndarray, held_out: np.ndarray
    ) -> dict[str, float]:
        """Held-out next-SID recall@1 among the K candidates, and captioning accuracy."""
        cfg, vocab = self.settings, self.vocab
        student = self.modules["student"].eval()
        device = task.device
        report: dict[str, float] = {}
        # Next-SID: which candidate's code does the model find likeliest after the history?
        histories = lang.recent_history(task, requests, cfg.history_items)
        candidates = task.candidates_np[requests]
        k = task.num_candidates
        sequences, starts = [], []
        for history, cands in zip(histories, candidates, strict=True):
            head = np.concatenate(
                [vocab.ids(["<bos>", "<next>", "<hist>"]), facts.sid_tokens[history].reshape(-1)]
            )
            for item in cands:
                sequences.append(np.concatenate([head, facts.sid_tokens[item]]))
                starts.append(len(head))
        with torch.no_grad():
            log_probs, _ = token_log_probs(
                student,
                *pad(sequences, vocab.id("<pad>"), device),
                None,
                torch.as_tensor(np.array(starts), device=device),
            )
        scores = log_probs.sum(dim=1).reshape(len(requests), k).cpu().numpy()
        targets = task.pool.gr2_target_pos[requests]
        report["next_sid_recall@1"] = float((scores.argmax(axis=1) == targets).mean())
        # Captioning held-out items: the likeliest genre / year / popularity word.
        prompts = [
            np.concatenate(
                [vocab.ids(["<bos>", "<caption>"]), facts.sid_tokens[item], vocab.ids(["<attr>"])]
            )
            for item in held_out
        ]
        if prompts:
            ids, attention = pad(prompts, vocab.id("<pad>"), device)
            with torch.no_grad():
                logits = student(input_ids=ids, attention_mask=attention).logits[:, -1]
            for kind, truth in (
                ("genre", None),
                ("year", facts.year_bucket[held_out]),
                ("pop", facts.popularity_bucket[held_out]),
            ):
                lo, hi = vocab.word_range(kind)
                guess = logits[:, lo:hi].argmax(dim=1).cpu().numpy()
                if kind == "genre":
                    genres = facts.genres[held_out]
                    none = ~genres.any(axis=1)
                    hit = np.where(
                        guess == hi - lo - 1,
                        none,
                        genres[np.arange(len(guess)), np.minimum(guess, genres.shape[1] - 1)],
                    )
                    report["caption_genre_accuracy"] = float(hit.mean())
                else:
                    report[f"caption_{kind}_accuracy"] = float((guess == truth).mean())
        return report

    def _curve_point(self, task: RerankTask, requests: np.ndarray, iteration: int) -> dict:
        """Greedy recall@1/5 and NDCG@5 on validation requests, and the copy diagnostics."""
        rankings = self._rankings(task, requests)
        rank = target_ranks(rankings, task.pool.gr2_target_pos[requests])
        return {
            "dapo_iteration": iteration,
            "valid_recall@1": float(recall_at_k(rank, 1).mean()),
            "valid_recall@5": float(recall_at_k(rank, 5).mean()),
            "valid_ndcg@5": float(ndcg_at_k(rank, 5).mean()),
            "valid_copy_share": float(
                (rankings == np.arange(rankings.shape[1])).all(axis=1).mean()
            ),
        }

    # ------------------------------------------------------------------ serving

    def _rankings(self, task: RerankTask, requests: np.ndarray) -> np.ndarray:
        """Greedy constrained rankings of all K candidates, positions ``[B, K]``."""
        return self.outputs(task, requests)["rankings"]

    def outputs(self, task: RerankTask, requests: np.ndarray) -> dict[str, Any]:
        """The student's greedy outputs for ``requests``, batched.

        Returns:
            ``rankings`` (positions ``[B, K]``), ``written`` (the tokens after
            ``<think>``, one array per request, up to ``<eos>``), ``well_formed``
            (bool ``[B]``: the rationale follows the grammar) and
            ``reasoning_length`` (``[B]``).
        """
        self._require_built()
        self.check_task(task)
        requests = np.asarray(requests, dtype=np.int64)
        vocab = self.vocab
        facts = ItemFacts.from_task(task, vocab)
        student = self.modules["student"].to(task.device).eval()
        rankings, written, formed, lengths = [], [], [], []
        for start in range(0, len(requests), SERVE_BATCH):
            prompts, sids = self._prompts(task, facts, requests[start : start + SERVE_BATCH])
            tokens, state = generate(
                student, vocab, prompts, sids, self.settings.max_reasoning_tokens
            )
            rankings.append(state.ranking.cpu().numpy())
            lengths.append(state.reasoning_length.cpu().numpy())
            for row, codes in zip(tokens.cpu().numpy(), sids.cpu().numpy(), strict=True):
                written.append(_trimmed(vocab, row))
                formed.append(lang.well_formed(vocab, _reasoning(vocab, row), codes))
        k = task.num_candidates
        return {
            "rankings": np.concatenate(rankings) if rankings else np.zeros((0, k), np.int64),
            "written": written,
            "well_formed": np.array(formed, dtype=bool),
            "reasoning_length": np.concatenate(lengths) if lengths else np.zeros(0, np.int64),
        }

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Greedy constrained decoding: the first L of the student's ranking of all K.

        With ``prefixes``, the given items come first and the student's order fills
        the rest (it does not condition its reasoning on them).
        """
        self._require_built()
        self.check_task(task)
        requests = np.asarray(requests, dtype=np.int64)
        rankings = self._rankings(task, requests)
        k = task.num_candidates
        scores = np.empty(rankings.shape, dtype=np.float64)
        np.put_along_axis(scores, rankings, np.arange(k, 0, -1, dtype=np.float64), axis=1)
        return complete_by_scores(scores, task.slate_length, prefixes)

    def explain(self, task: RerankTask, requests: np.ndarray) -> list[str]:
        """The student's greedy output for ``requests`` as readable text (rationale, ranking)."""
        return [self.vocab.describe(w) for w in self.outputs(task, requests)["written"]]


def _attribute_tokens(vocab: GR2Vocabulary, facts: ItemFacts, item: int) -> np.ndarray:
    """``genre.. year_b pop_b`` of an item (``genre_none`` when it has no genre)."""
    genres = np.flatnonzero(facts.genres[item])
    names = [f"genre_{g}" for g in genres] or ["genre_none"]
    names += [f"year_{facts.year_bucket[item]}", f"pop_{facts.popularity_bucket[item]}"]
    return vocab.ids(names)


def _trimmed(vocab: GR2Vocabulary, written: np.ndarray) -> np.ndarray:
    """Written tokens up to and including ``<eos>`` (no padding)."""
    ends = np.flatnonzero(written == vocab.id("<eos>"))
    return written[: ends[0] + 1] if len(ends) else written


def _reasoning(vocab: GR2Vocabulary, written: np.ndarray) -> np.ndarray:
    """The reasoning segment of written tokens, up to and including ``</think>``."""
    ends = np.flatnonzero(written == vocab.id("</think>"))
    return written[: ends[0] + 1] if len(ends) else written


def _aligned(
    weights: list[np.ndarray], starts: np.ndarray, shape: torch.Size, device: Any
) -> torch.Tensor:
    """Per-token weights of written tokens placed like :func:`token_log_probs`' entries."""
    out = torch.zeros(shape, device=device)
    for row, (weight, start) in enumerate(zip(weights, starts, strict=True)):
        out[row, start - 1 : start - 1 + len(weight)] = torch.as_tensor(weight, dtype=out.dtype)
    return out
