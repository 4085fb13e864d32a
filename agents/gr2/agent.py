"""GR2, the agent: mid-training, teacher traces, reasoning SFT, DAPO; top to bottom.

Trains on a GR2-protocol task (``task.gr2_task()``, or ``make_task(protocol="gr2")``):
each request offers the pre-ranker's K candidates, one of which is the user's true
next item ``x*``. The student reads the user's history and the candidates in
semantic IDs, writes a rationale, then ranks all K. :meth:`GR2.fit` runs the stages
of :mod:`agents.gr2.stages` in turn (the mid-training corpus is
:mod:`agents.gr2.corpus`'s), each from its own seeded generator, so that a study
may branch between them (:meth:`GR2.branch`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from agents.base import TrainableAgent, UnsupportedTaskError, complete_by_scores
from agents.common.distributed import DataParallel
from agents.common.scorers import SimulatorScorer
from agents.common.telemetry import TrainingLogger
from agents.gr2 import language as lang
from agents.gr2 import stages
from agents.gr2.config import GR2Config
from agents.gr2.language import GR2Vocabulary, ItemFacts
from agents.gr2.model import build_student, greedy_outputs
from agents.gr2.stages import STAGES, StageContext
from rerank_env.task import RerankTask
from simulators.base import isolated_torch_rng
from simulators.data.errors import ConfigError
from simulators.data.semantic_ids import codes_checksum

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
        stage_seconds: Wall time of the stages run (``mid``, ``sft``: teacher and SFT, ``dapo``).
        stages_done: The stages run since :meth:`setup`, in order.
    """

    config_class = GR2Config
    curve = ("dapo_iteration", "valid_recall@1")

    def __init__(self, config: GR2Config | None = None, **overrides: Any) -> None:
        super().__init__()
        self.settings: GR2Config = self._settings_from(config, overrides)
        self.name = self.settings.name
        self.reward = SimulatorScorer("train")
        self._forget_stages()

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
        buckets, sizes = (cfg.year_buckets, cfg.popularity_buckets), tuple(info["sid_sizes"])
        return GR2Vocabulary(info["n_genres"], *buckets, info["candidates"], sizes)

    def _build(self, task: RerankTask | None = None) -> None:
        cfg = self.settings
        sizes = {k: getattr(cfg, k) for k in ("dim", "layers", "heads", "intermediate")}
        length = self.build_info["max_length"] + 8
        with isolated_torch_rng(cfg.seed):
            student = build_student(self.vocab, **sizes, max_length=length)
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

        ``fit`` is :meth:`setup`, :meth:`mid_train`, :meth:`supervise`, :meth:`reinforce`:
        each stage seeds its own generator, so :meth:`branch` gives separate fits' runs.
        """
        self.mid_train(task, progress=progress, logger=logger)
        self.supervise(task, progress=progress, logger=logger)
        self.reinforce(task, progress=progress, logger=logger)

    def mid_train(
        self, task: RerankTask, *, progress: bool = False, logger: TrainingLogger | None = None
    ) -> GR2:
        """Stage 0: what semantic IDs mean (next SID, captioning, the reasoning grammar).

        Measured before and after on held-out items and validation requests
        (``mid_report``). ``logger``: ``fit``'s (default: the stage opens its own).
        """
        with self._stage(task, "mid", logger, progress) as context:
            self.mid_report = stages.mid_train(context)
        return self

    def supervise(
        self, task: RerankTask, *, progress: bool = False, logger: TrainingLogger | None = None
    ) -> GR2:
        """Stage 1: teacher traces (rejection-sampled or targeted), then SFT on them.

        ``logger``: ``fit``'s (default: the stage opens its own).
        """
        with self._stage(task, "sft", logger, progress) as context:
            self.teacher_stats = stages.supervise(context, self.reward)
        return self

    def reinforce(
        self, task: RerankTask, *, progress: bool = False, logger: TrainingLogger | None = None
    ) -> GR2:
        """Stage 2: DAPO on the verifiable rank reward (+ format reward), no KL.

        PPO's update with clip-higher, token-level normalisation and no critic.
        ``logger``: ``fit``'s (default: the stage opens its own).
        """
        with self._stage(task, "dapo", logger, progress) as context:
            stages.reinforce(context)
        return self

    def setup(self, task: RerankTask) -> GR2:
        """Build the untrained student for ``task``; no stage done yet."""
        super().setup(task)
        self._forget_stages()
        return self

    def _forget_stages(self) -> None:
        self.teacher_stats: dict[str, float] | None = None
        self.mid_report: dict[str, float] | None = None
        self.stage_seconds: dict[str, float] = {}
        self.stages_done: list[str] = []
        self._pool: tuple[np.ndarray, np.ndarray] | None = None  # the requests, slot-1 values

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
        for name in ("build_info", "modules", "stages_done", "stage_seconds", "teacher_stats"):
            setattr(twin, name, copy.deepcopy(getattr(self, name)))
        twin.mid_report, twin.history = copy.deepcopy(self.mid_report), list(self.history)
        twin._pool, twin.fitted = self._pool, self.fitted  # the pool: shared, read only
        return twin

    @contextlib.contextmanager
    def _stage(
        self, task: RerankTask, name: str, logger: TrainingLogger | None, progress: bool
    ) -> Iterator[StageContext]:
        """One stage (refused if run): its context; its time and the stage done, after.

        ``logger``: ``fit``'s (default: the stage opens and closes its own). The training
        pool and its slot-1 values are computed once per agent (branches share them).
        """
        self._require_built()
        self.check_task(task)
        if name in self.stages_done:
            raise RuntimeError(
                f"{self.name!r} has already run its {name!r} stage; branch() an agent "
                "before it to run the stage with other settings"
            )
        self.reward = SimulatorScorer("train")
        student = self.modules["student"].to(task.device)
        if self._pool is None:
            self._pool = stages.training_pool(task, self.settings, self.reward)
        own = self.training_logger() if logger is None else logger
        context = StageContext.start(
            task, self.settings, student, self.vocab, self._pool, name, own, progress
        )
        clock = time.perf_counter()
        try:
            yield context
            self.stage_seconds[name] = time.perf_counter() - clock
            self.stages_done.append(name)
            if name == STAGES[-1]:
                context.logger.log("timing", **{f"{k}_s": v for k, v in self.stage_seconds.items()})
        finally:
            if logger is None:
                context.logger.close()
        student.eval()
        self.fitted = True

    # ------------------------------------------------------------------ serving

    def outputs(self, task: RerankTask, requests: np.ndarray) -> dict[str, Any]:
        """The student's greedy outputs for ``requests``, batched.

        Returns:
            ``rankings`` (positions ``[B, K]``), ``written``, ``well_formed`` and
            ``reasoning_length``: see :func:`~agents.gr2.model.greedy_outputs`.
        """
        self._require_built()
        self.check_task(task)
        vocab, cfg = self.vocab, self.settings
        student, facts = self.modules["student"].to(task.device), ItemFacts.from_task(task, vocab)
        requests = np.asarray(requests, dtype=np.int64)
        return greedy_outputs(
            student, task, vocab, facts, requests, cfg.history_items, cfg.max_reasoning_tokens
        )

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Greedy constrained decoding: the first L of the student's ranking of all K.

        With ``prefixes``, the given items come first and the student's order fills
        the rest (it does not condition its reasoning on them).
        """
        rankings = self.outputs(task, requests)["rankings"]
        scores = np.empty(rankings.shape, dtype=np.float64)
        np.put_along_axis(scores, rankings, np.arange(task.num_candidates, 0, -1.0), axis=1)
        return complete_by_scores(scores, task.slate_length, prefixes)

    def explain(self, task: RerankTask, requests: np.ndarray) -> list[str]:
        """The student's greedy output for ``requests`` as readable text (rationale, ranking)."""
        return [self.vocab.describe(w) for w in self.outputs(task, requests)["written"]]
