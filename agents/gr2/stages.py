"""GR2's training stages: mid-training, teacher traces and reasoning SFT, DAPO.

Each stage is a function of a :class:`StageContext` (the task, the config, the
student, the stage's own generator and logger; :class:`~agents.gr2.agent.GR2` makes
one per stage):

* :func:`mid_train` (stage 0): the language tasks of :mod:`agents.gr2.corpus`,
  reported before and after.
* :func:`supervise` (stage 1): the teacher's traces (:func:`~agents.gr2.teacher.teach`,
  rejection-sampled or targeted), then weighted token cross-entropy on them under the
  decoding constraint (:func:`sft`).
* :func:`reinforce` (stage 2): DAPO on the verifiable rank reward (+ format reward),
  no KL: G samples per prompt (:func:`rollouts`, as :class:`Rollouts`), group-relative
  advantages, the shared :func:`~agents.common.ppo.ppo_update` with clip-higher and
  token-level normalisation.

:func:`curve_point` measures the student's greedy outputs
(:func:`~agents.gr2.model.greedy_outputs`) on validation requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.common.losses import group_relative_advantages
from agents.common.ppo import PolicyEvaluation, ppo_update
from agents.common.scorers import ListScorer, slot_one_values
from agents.common.telemetry import TrainingLogger
from agents.common.training import gradient_step, minibatches, training_mode
from agents.gr2 import language as lang
from agents.gr2.config import GR2Config
from agents.gr2.corpus import caption_split, mid_training_corpus, mid_training_report
from agents.gr2.language import GR2Vocabulary, ItemFacts
from agents.gr2.model import (
    generate,
    greedy_outputs,
    pad,
    prompts,
    sequence_log_probs,
    token_log_probs,
)
from agents.gr2.rewards import (
    format_reward,
    informative_groups,
    order_diagnostics,
    overlong_penalty,
    rank_reward,
)
from agents.gr2.teacher import TeacherRankings, teach
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.metrics import ndcg_at_k, recall_at_k, target_ranks
from simulators.progress import progress_bar

#: The training stages in order (and the pool draw), each seeded by its index here.
STAGES = ("pool", "mid", "sft", "dapo")


@dataclass(frozen=True)
class StageContext:
    """What a training stage works with.

    Attributes:
        task: The GR2-protocol task.
        settings: The agent's config.
        student: The student, on the task's device.
        vocab: The student's vocabulary.
        facts: The task's item facts in that vocabulary.
        pool: The training requests used ``[P]``.
        slot_one: The training simulator's slot-1 value of their candidates ``[P, K]``.
        valid: The learning curve's validation requests.
        rng: The stage's own generator (:func:`stage_rng`).
        logger: Where the stage logs its rows.
        progress: Show progress bars.
    """

    task: RerankTask
    settings: GR2Config
    student: torch.nn.Module
    vocab: GR2Vocabulary
    facts: ItemFacts
    pool: np.ndarray
    slot_one: np.ndarray
    valid: np.ndarray
    rng: np.random.Generator
    logger: TrainingLogger
    progress: bool

    @classmethod
    def start(
        cls,
        task: RerankTask,
        settings: GR2Config,
        student: torch.nn.Module,
        vocab: GR2Vocabulary,
        pool: tuple[np.ndarray, np.ndarray],
        stage: str,
        logger: TrainingLogger,
        progress: bool,
    ) -> StageContext:
        """The context of ``stage`` (of :data:`STAGES`; its generator is :func:`stage_rng`'s).

        ``pool``: :func:`training_pool`'s requests and slot-1 values; the item facts and
        the validation requests are the task's.
        """
        return cls(
            task=task,
            settings=settings,
            student=student,
            vocab=vocab,
            facts=ItemFacts.from_task(task, vocab),
            pool=pool[0],
            slot_one=pool[1],
            valid=task.requests("valid")[: settings.eval_requests],
            rng=stage_rng(settings.seed, stage),
            logger=logger,
            progress=progress,
        )


@dataclass(frozen=True)
class Rollouts:
    """Sampled outputs of a DAPO batch: ``n`` groups of ``G`` samples, group-major.

    ``M = n * G`` rows; row ``i`` is a sample for request ``rows[i]``. The rewards
    are per row; a group's samples are rows ``g * G .. (g + 1) * G - 1``.

    Attributes:
        requests: The request of each group ``[n]``.
        prompts: Each sample's prompt tokens (``M`` arrays).
        written: Each sample's tokens after the prompt, up to ``<eos>`` (``M`` arrays).
        sids: Each sample's candidates' codes ``[M, K, levels]`` (a tensor).
        rankings: Each sample's ranking, candidate positions ``[M, K]``.
        well_formed: Whether each sample's rationale follows the grammar ``[M]``.
        rank_reward: ``R_rank`` of each sample ``[M]``.
        format_reward: The format reward of each sample ``[M]``.
        overlong: The overlong penalty of each sample ``[M]``.
    """

    requests: np.ndarray
    prompts: list[np.ndarray]
    written: list[np.ndarray]
    sids: torch.Tensor
    rankings: np.ndarray
    well_formed: np.ndarray
    rank_reward: np.ndarray
    format_reward: np.ndarray
    overlong: np.ndarray

    @property
    def group_size(self) -> int:
        """G, samples per group."""
        return len(self.prompts) // len(self.requests)

    @property
    def rows(self) -> np.ndarray:
        """The request of each sample ``[M]``."""
        return np.repeat(self.requests, self.group_size)

    @property
    def rewards(self) -> np.ndarray:
        """Each sample's reward, by group ``[n, G]``: rank + format + overlong."""
        total = self.rank_reward + self.format_reward + self.overlong
        return total.reshape(len(self.requests), -1)

    @property
    def starts(self) -> np.ndarray:
        """Each sample's prompt length ``[M]`` (the index of its first written token)."""
        return np.array([len(p) for p in self.prompts])

    def sequences(self) -> list[np.ndarray]:
        """Each sample's prompt and written tokens, as one sequence."""
        pairs = zip(self.prompts, self.written, strict=True)
        return [np.concatenate([prompt, tokens]) for prompt, tokens in pairs]

    def select(self, keep: np.ndarray) -> Rollouts:
        """The groups ``keep`` (bool ``[n]``) marks."""
        samples = np.repeat(keep, self.group_size)
        kept = np.flatnonzero(samples)
        return Rollouts(
            requests=self.requests[keep],
            prompts=[self.prompts[r] for r in kept],
            written=[self.written[r] for r in kept],
            sids=self.sids[torch.as_tensor(samples, device=self.sids.device)],
            rankings=self.rankings[samples],
            well_formed=self.well_formed[samples],
            rank_reward=self.rank_reward[samples],
            format_reward=self.format_reward[samples],
            overlong=self.overlong[samples],
        )

    @staticmethod
    def concatenate(parts: list[Rollouts]) -> Rollouts:
        """All ``parts`` as one batch, in order."""
        return Rollouts(
            requests=np.concatenate([p.requests for p in parts]),
            prompts=[x for p in parts for x in p.prompts],
            written=[x for p in parts for x in p.written],
            sids=torch.cat([p.sids for p in parts]),
            rankings=np.concatenate([p.rankings for p in parts]),
            well_formed=np.concatenate([p.well_formed for p in parts]),
            rank_reward=np.concatenate([p.rank_reward for p in parts]),
            format_reward=np.concatenate([p.format_reward for p in parts]),
            overlong=np.concatenate([p.overlong for p in parts]),
        )


# ------------------------------------------------------------------ the stages' data


def stage_rng(seed: int, stage: str) -> np.random.Generator:
    """The generator of one stage of :data:`STAGES`: seeded by the seed and the stage alone."""
    return np.random.default_rng([seed, STAGES.index(stage)])


def training_pool(
    task: RerankTask, settings: GR2Config, reward: ListScorer
) -> tuple[np.ndarray, np.ndarray]:
    """The training requests used and their candidates' slot-1 values.

    ``settings.train_requests`` of the task's training requests (all by default),
    drawn by the ``"pool"`` generator; the training simulator's (``reward``'s) value
    of each candidate in slot 1: the grammar corpus's rationales and the teacher's
    first pick both start from it.
    """
    pool = task.requests("train")
    if settings.train_requests is not None and settings.train_requests < len(pool):
        rng = stage_rng(settings.seed, "pool")
        pool = np.sort(rng.choice(pool, settings.train_requests, replace=False))
    return pool, slot_one_values(task, pool, reward)


# ------------------------------------------------------------------ stage 0: mid-training


def mid_train(ctx: StageContext) -> dict[str, float]:
    """Stage 0: what semantic IDs mean (next SID, captioning, the reasoning grammar).

    The tasks of ``mid_tasks`` in turn, ``mid_steps`` steps of ``mid_batch_size``
    sequences each; measured before and after on held-out items and validation
    requests (:func:`~agents.gr2.corpus.mid_training_report`).

    Returns:
        The report: each measure with ``_before`` and ``_after`` (also logged as the
        ``mid_report`` row).
    """
    cfg, student, task, rng = ctx.settings, ctx.student, ctx.task, ctx.rng
    captioned, held_out = caption_split(task, rng)
    before = mid_training_report(
        student, task, ctx.vocab, ctx.facts, ctx.valid, held_out, history_items=cfg.history_items
    )
    if cfg.mid_steps:
        corpus = mid_training_corpus(
            task, cfg, ctx.vocab, ctx.facts, ctx.pool, ctx.slot_one, captioned
        )
        optimiser = torch.optim.AdamW(student.parameters(), lr=cfg.mid_learning_rate)
        bar = progress_bar(cfg.mid_steps, "GR2 mid-training", ctx.progress)
        for step in range(1, cfg.mid_steps + 1):
            kind = cfg.mid_tasks[step % len(cfg.mid_tasks)]
            sequences, starts = corpus[kind]
            rows = rng.integers(0, len(sequences), cfg.mid_batch_size)
            with training_mode(student):
                loss, accuracy = lm_loss(
                    student, ctx.vocab, [sequences[r] for r in rows], starts[rows], task.device
                )
                norm = gradient_step(optimiser, loss, list(student.parameters()))
            ctx.logger.log(
                "mid",
                task=cfg.mid_tasks.index(kind),
                loss=loss.item(),
                token_accuracy=accuracy,
                grad_norm=norm,
            )
            bar.update()
        bar.close()
    after = mid_training_report(
        student, task, ctx.vocab, ctx.facts, ctx.valid, held_out, history_items=cfg.history_items
    )
    report = {
        **{f"{k}_before": v for k, v in before.items()},
        **{f"{k}_after": v for k, v in after.items()},
    }
    ctx.logger.log("mid_report", **report)
    return report


def lm_loss(
    student: torch.nn.Module,
    vocab: GR2Vocabulary,
    sequences: list[np.ndarray],
    starts: np.ndarray,
    device: torch.device | str,
) -> tuple[torch.Tensor, float]:
    """Cross-entropy of every token from ``starts`` on (no constraint), and accuracy.

    The accuracy is the share of those tokens given a probability above 1/2.
    """
    ids, attention = pad(sequences, vocab.id("<pad>"), device)
    start = torch.as_tensor(starts, device=device)
    log_probs, _ = token_log_probs(student, ids, attention, None, start)
    steps = torch.arange(ids.shape[1] - 1, device=device)
    scored = (steps[None, :] + 1 >= start[:, None]) & (attention[:, 1:] > 0)
    loss = -(log_probs * scored).sum() / scored.sum()
    with torch.no_grad():
        accuracy = (log_probs > np.log(0.5)) & scored
    return loss, float(accuracy.sum() / scored.sum())


# ------------------------------------------------------------------ stage 1: teacher + SFT


def supervise(ctx: StageContext, reward: ListScorer) -> dict[str, float]:
    """Stage 1: teacher traces (rejection-sampled or targeted), then SFT on them.

    Args:
        ctx: The stage's context.
        reward: The training simulator as a list scorer (the teacher's planner).

    Returns:
        The teacher's acceptance: ``offered``, ``kept``, ``acceptance_rate``,
        ``mean_attempts`` (also logged as the ``teacher`` row).
    """
    cfg, task, pool = ctx.settings, ctx.task, ctx.pool
    kept = teach(
        task,
        pool,
        task.pool.gr2_target_pos[pool],
        reward,
        ctx.rng,
        mode=cfg.teacher,
        temperature=cfg.teacher_temperature,
        attempts=cfg.rejection_attempts,
        beam_width=cfg.teacher_beam_width,
        values=ctx.slot_one,
    )
    stats = {
        "offered": kept.offered,
        "kept": len(kept.requests),
        "acceptance_rate": kept.acceptance_rate,
        "mean_attempts": float(kept.attempts.mean()),
    }
    ctx.logger.log("teacher", **stats)
    ctx.logger.log("curve", sft_done=0, **curve_point(ctx, 0))
    if len(kept.requests):
        sft(ctx, kept)
    ctx.logger.log("curve", sft_done=1, **curve_point(ctx, 0))
    return stats


def sft(ctx: StageContext, kept: TeacherRankings) -> None:
    """Weighted token cross-entropy on the teacher's traces, under the decoding constraint.

    Reasoning tokens weigh ``reasoning_weight``, ranking tokens ``answer_weight``;
    ``sft_epochs`` passes of ``sft_batch_size`` traces.
    """
    cfg, student, task = ctx.settings, ctx.student, ctx.task
    sequences, starts, weights, sids = _traces(ctx, kept)
    evaluate = _sequence_evaluator(ctx, sequences, starts, sids)
    optimiser = torch.optim.AdamW(student.parameters(), lr=cfg.sft_learning_rate)
    steps = cfg.sft_epochs * -(-len(sequences) // cfg.sft_batch_size)
    bar = progress_bar(steps, "GR2 SFT", ctx.progress)
    for epoch in range(1, cfg.sft_epochs + 1):
        for rows in minibatches(np.arange(len(sequences)), cfg.sft_batch_size, ctx.rng):
            with training_mode(student):
                log_probs = evaluate(rows).log_probs
                weight = _aligned(
                    [weights[r] for r in rows], starts[rows], log_probs.shape, task.device
                )
                loss = -(log_probs * weight).sum() / weight.sum().clamp(min=1e-9)
                norm = gradient_step(optimiser, loss, list(student.parameters()))
            ctx.logger.log("sft", epoch=epoch, loss=loss.item(), grad_norm=norm)
            bar.update()
    bar.close()


def _traces(
    ctx: StageContext, kept: TeacherRankings
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], torch.Tensor]:
    """The teacher's traces: sequences, prompt lengths, written tokens' weights, codes."""
    cfg, vocab, facts, task = ctx.settings, ctx.vocab, ctx.facts, ctx.task
    texts, sids = prompts(task, vocab, facts, kept.requests, cfg.history_items)
    histories = lang.recent_history(task, kept.requests, cfg.history_items)
    candidates = task.candidates_np[kept.requests]
    sequences, starts, weights = [], [], []
    rows = zip(texts, histories, candidates, kept.rankings, strict=True)
    for prompt, history, cands, ranking in rows:
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
    return sequences, np.array(starts), weights, sids


# ------------------------------------------------------------------ stage 2: DAPO


def reinforce(ctx: StageContext) -> None:
    """Stage 2: DAPO on the verifiable rank reward (+ format reward), no KL.

    DAPO's update is PPO's (:func:`~agents.common.ppo.ppo_update`) with clip-higher,
    token-level normalisation and no critic; ``dapo_iterations`` batches of
    :func:`rollouts`, a curve point every ``eval_every`` iterations and at the end.
    """
    cfg, student, task, logger = ctx.settings, ctx.student, ctx.task, ctx.logger
    optimiser = torch.optim.AdamW(student.parameters(), lr=cfg.learning_rate)
    bar = progress_bar(cfg.dapo_iterations, "GR2 DAPO", ctx.progress)
    for iteration in range(1, cfg.dapo_iterations + 1):
        batch, sampled = rollouts(ctx)
        rewards = batch.rewards
        advantage = group_relative_advantages(torch.as_tensor(rewards)).reshape(-1)
        sequences, starts = batch.sequences(), batch.starts
        evaluate = _sequence_evaluator(ctx, sequences, starts, batch.sids)
        with torch.no_grad():
            old = evaluate(np.arange(len(sequences))).log_probs
        stats = ppo_update(
            evaluate,
            old,
            advantage,
            optimiser=optimiser,
            parameters=list(student.parameters()),
            modules=[student],
            rng=ctx.rng,
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
            rank_reward=float(batch.rank_reward.mean()),
            format_reward=float(batch.format_reward.mean()),
            overlong=float(batch.overlong.mean()),
            kept_groups=len(batch.requests),
            sampled_groups=sampled,
            **order_diagnostics(
                batch.rankings, task.pool.gr2_target_pos[batch.rows], batch.well_formed
            ),
        )
        bar.update()
        bar.set_postfix(reward=f"{rewards.mean():.3f}")
        if iteration % cfg.eval_every == 0 or iteration == cfg.dapo_iterations:
            logger.log("curve", sft_done=1, **curve_point(ctx, iteration))
    bar.close()


def rollouts(ctx: StageContext) -> tuple[Rollouts, int]:
    """One DAPO batch: G samples per prompt, rewards, dynamic sampling.

    With ``dynamic_sampling``, groups whose rewards are all equal are dropped and
    new requests drawn for them, up to ``max_refill_rounds`` more rounds (when the
    last round finds none informative and none was kept, its groups are kept).

    Returns:
        The kept groups (``prompts_per_batch`` of them, or fewer when the rounds ran
        out), and how many groups were sampled.
    """
    cfg = ctx.settings
    ctx.student.eval()
    kept: list[Rollouts] = []
    sampled = 0
    for round_ in range(1 + (cfg.max_refill_rounds if cfg.dynamic_sampling else 0)):
        need = cfg.prompts_per_batch - sum(len(part.requests) for part in kept)
        if need <= 0:
            break
        requests = ctx.pool[ctx.rng.integers(0, len(ctx.pool), need)]
        sampled += need
        groups = _sample(ctx, requests)
        keep = informative_groups(groups.rewards) if cfg.dynamic_sampling else np.ones(need, bool)
        if round_ == cfg.max_refill_rounds and cfg.dynamic_sampling and not kept:
            keep[:] = True  # nothing informative at all: train on what there is
        if keep.any():
            kept.append(groups.select(keep))
    return Rollouts.concatenate(kept), sampled


def _sample(ctx: StageContext, requests: np.ndarray) -> Rollouts:
    """``group_size`` samples of the student for each of ``requests``, and their rewards."""
    cfg, vocab, task = ctx.settings, ctx.vocab, ctx.task
    rows = np.repeat(requests, cfg.group_size)
    texts, sids = prompts(task, vocab, ctx.facts, rows, cfg.history_items)
    seed = int(ctx.rng.integers(2**31))
    with isolated_torch_rng(seed):
        written, state = generate(
            ctx.student,
            vocab,
            texts,
            sids,
            cfg.max_reasoning_tokens,
            sample=True,
            temperature=cfg.temperature,
        )
    rankings = state.ranking.cpu().numpy()
    written = written.cpu().numpy()
    formed = np.array(
        [
            lang.well_formed(vocab, lang.reasoning_segment(vocab, w), s)
            for w, s in zip(written, sids.cpu().numpy(), strict=True)
        ]
    )
    targets = task.pool.gr2_target_pos[rows]
    pre = targets + 1
    post = (rankings == targets[:, None]).argmax(axis=1) + 1
    r_rank = rank_reward(pre, post, task.num_candidates)
    lengths = state.reasoning_length.cpu().numpy()
    return Rollouts(
        requests=requests,
        prompts=texts,
        written=[lang.trimmed(vocab, w) for w in written],
        sids=sids,
        rankings=rankings,
        well_formed=formed,
        rank_reward=r_rank,
        format_reward=format_reward(r_rank, pre, formed, cfg.format_alpha, cfg.format_reward),
        overlong=overlong_penalty(lengths, cfg.max_reasoning_tokens, cfg.overlong_cache),
    )


def _sequence_evaluator(
    ctx: StageContext, sequences: list[np.ndarray], starts: np.ndarray, sids: torch.Tensor
) -> Callable[[np.ndarray], PolicyEvaluation]:
    """PPO's view of the student on some of the sampled sequences (their written tokens)."""

    def evaluate(rows: np.ndarray) -> PolicyEvaluation:
        log_probs, entropy, mask = sequence_log_probs(
            ctx.student,
            ctx.vocab,
            [sequences[r] for r in rows],
            starts[rows],
            sids[rows],
            ctx.settings.max_reasoning_tokens,
        )
        return PolicyEvaluation(log_probs, entropy, mask=mask)

    return evaluate


# ------------------------------------------------------------------ shared pieces


def curve_point(ctx: StageContext, iteration: int) -> dict[str, float]:
    """Greedy recall@1/5 and NDCG@5 on validation requests, and the copy diagnostics."""
    cfg, task, requests = ctx.settings, ctx.task, ctx.valid
    outputs = greedy_outputs(
        ctx.student,
        task,
        ctx.vocab,
        ctx.facts,
        requests,
        cfg.history_items,
        cfg.max_reasoning_tokens,
    )
    rankings = outputs["rankings"]
    rank = target_ranks(rankings, task.pool.gr2_target_pos[requests])
    return {
        "dapo_iteration": iteration,
        "valid_recall@1": float(recall_at_k(rank, 1).mean()),
        "valid_recall@5": float(recall_at_k(rank, 5).mean()),
        "valid_ndcg@5": float(ndcg_at_k(rank, 5).mean()),
        "valid_copy_share": float((rankings == np.arange(rankings.shape[1])).all(axis=1).mean()),
    }


def _aligned(
    weights: list[np.ndarray], starts: np.ndarray, shape: torch.Size, device: Any
) -> torch.Tensor:
    """Per-token weights of written tokens placed like :func:`token_log_probs`' entries."""
    out = torch.zeros(shape, device=device)
    for row, (weight, start) in enumerate(zip(weights, starts, strict=True)):
        out[row, start - 1 : start - 1 + len(weight)] = torch.as_tensor(weight, dtype=out.dtype)
    return out
