"""Generator-evaluator reranking: generators propose lists, an evaluator picks one.

The two-stage design of PIER / NAR4Rec-style rerankers (and of GoalRank's
comparison): for each request every generator proposes ``lists_per_generator``
lists (its greedy list plus Plackett-Luce or policy samples), an evaluator scores
all of them in one batched call, and the best is shown. With several generators it
is the multi-generator form.

The evaluator is the task's training simulator (``evaluator="simulator"``: the
reward the other agents train on, so the comparison is fair) or a context-aware
click model learned from the training logs (``evaluator="learned"``: what a
production system without a simulator would have).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from agents.base import Agent, TrainableAgent, can_sample, empty_prefixes
from agents.baselines import PointwiseGreedy
from agents.common.config import AgentConfig
from agents.common.distributed import DataParallel
from agents.common.reward_model import build_reward_model, fit_reward_model, reward_model_spec
from agents.common.scorers import ClickModelScorer, ListScorer, SimulatorScorer
from agents.common.specs import agent_from_spec, agent_spec
from agents.common.telemetry import TrainingLogger
from rerank_env.task import RerankTask
from simulators.base import ClickSimulator
from simulators.data.errors import ConfigError

EvaluatorKind = Literal["simulator", "learned"]


@dataclasses.dataclass(frozen=True)
class GeneratorEvaluatorConfig(AgentConfig):
    """A generator-evaluator's settings (its generators are constructor arguments).

    Attributes:
        lists_per_generator: Lists each generator proposes per request (its greedy
            list and ``lists_per_generator - 1`` samples).
        evaluator: ``"simulator"`` or ``"learned"`` (see the module docstring).
        evaluator_epochs: Maximum epochs of the learned evaluator.
        temperature: Sampling temperature of the generators.
        seed: Seed of the sampling and of the learned evaluator.
    """

    lists_per_generator: int = 16
    evaluator: EvaluatorKind = "simulator"
    evaluator_epochs: int = 20
    temperature: float = 1.0
    seed: int = 0

    QUICK: ClassVar[dict[str, Any]] = {"evaluator_epochs": 5}
    TINY: ClassVar[dict[str, Any]] = {"evaluator_epochs": 2, "lists_per_generator": 8}

    def validate(self) -> None:
        """Refuse out-of-range fields."""
        if self.evaluator not in ("simulator", "learned"):
            raise ConfigError(f"evaluator must be 'simulator' or 'learned', got {self.evaluator!r}")
        if self.lists_per_generator < 1:
            raise ConfigError(f"lists_per_generator must be >= 1, got {self.lists_per_generator}")
        self._at_least(1, "evaluator_epochs")


class GeneratorEvaluator(TrainableAgent):
    """Generators propose lists, an evaluator picks the best of them.

    Args:
        generators: Agents that can sample lists (any :class:`~agents.base.ScoringAgent`,
            :class:`~agents.seq2slate.Seq2Slate`), or their checkpoint specs; untrained
            ones are trained by :meth:`fit`. Default: one ``PointwiseGreedy``.
        config: A :class:`GeneratorEvaluatorConfig` (default: its defaults).
        **overrides: Config fields to change, e.g. ``evaluator="learned"``.
    """

    config_class = GeneratorEvaluatorConfig

    def __init__(
        self,
        generators: Sequence[Agent | dict[str, Any]] | None = None,
        config: GeneratorEvaluatorConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.settings: GeneratorEvaluatorConfig = self._settings_from(config, overrides)
        cfg = self.settings
        self.curve = ("epoch", "evaluator_valid_nll") if cfg.evaluator == "learned" else None
        if generators is None:
            generators = [PointwiseGreedy(seed=cfg.seed)]
        self.generators = [agent_from_spec(g) if isinstance(g, dict) else g for g in generators]
        if not self.generators:
            raise ValueError("a generator-evaluator needs at least one generator")
        for generator in self.generators:
            if not can_sample(generator):
                raise TypeError(
                    f"generator {generator.name!r} cannot sample lists (it has no sample(...) "
                    "method); use a ScoringAgent (InitialOrder, PointwiseGreedy, PRM) or Seq2Slate"
                )
        kind = "multi-gen-eval" if len(self.generators) > 1 else "gen-eval"
        # The evaluator is part of the name so both kinds can sit in one comparison.
        kind += "-learned" if cfg.evaluator == "learned" else ""
        self.name = f"{kind}({'+'.join(g.name for g in self.generators)})"
        self.scorer: ListScorer = SimulatorScorer("train")

    def config(self) -> dict[str, Any]:
        """Config fields; generators as specs."""
        return {"generators": [agent_spec(g) for g in self.generators], **self.settings.to_dict()}

    def _build_info(self, task: RerankTask) -> dict[str, Any]:
        info: dict[str, Any] = {
            "generators": [
                (g.build_info if g.fitted else g._build_info(task))
                if isinstance(g, TrainableAgent)
                else {}
                for g in self.generators
            ]
        }
        if self.settings.evaluator == "learned":
            info["evaluator_spec"] = reward_model_spec(task, self.settings.seed)
        return info

    def _build(self, task: RerankTask | None = None) -> None:
        for generator, info in zip(self.generators, self.build_info["generators"], strict=True):
            # With a task (setup) fitted generators are kept; loading rebuilds them all.
            if isinstance(generator, TrainableAgent) and (task is None or not generator.fitted):
                generator.build_info = dict(info)
                generator._build(task)
                generator.fitted = task is None  # loading: the checkpoint holds its weights
        evaluator = None
        self.scorer = SimulatorScorer("train")
        if self.settings.evaluator == "learned":
            evaluator = build_reward_model(
                self.build_info["evaluator_spec"], task, self.settings.seed
            )
            self.scorer = ClickModelScorer(evaluator)
        self._collect_modules(evaluator)

    def _setup(self, task: RerankTask, *, progress: bool = False) -> None:
        """Train the untrained generators, then build the evaluator."""
        for generator in self.generators:
            if isinstance(generator, TrainableAgent) and not generator.fitted:
                generator.fit(task, progress=progress)
        self.setup(task)

    def _train(
        self, task: RerankTask, *, logger: TrainingLogger, parallel: DataParallel, progress: bool
    ) -> None:
        """Fit the evaluator if ``evaluator="learned"`` (the generators are trained)."""
        cfg = self.settings
        if cfg.evaluator == "learned":
            valid_nll = fit_reward_model(
                self.modules["evaluator"],
                task,
                epochs=cfg.evaluator_epochs,
                seed=cfg.seed,
                progress=progress,
            )
            for epoch, nll in enumerate(valid_nll, start=1):
                logger.log("evaluator", step=epoch, epoch=epoch, evaluator_valid_nll=nll)

    def _collect_modules(self, evaluator: ClickSimulator | None) -> None:
        """``self.modules``: the generators' (prefixed ``g<i>.``) and the evaluator."""
        modules: dict[str, torch.nn.Module] = {}
        for index, generator in enumerate(self.generators):
            if isinstance(generator, TrainableAgent):
                modules.update({f"g{index}.{k}": m for k, m in generator.modules.items()})
        if evaluator is not None:
            modules["evaluator"] = evaluator.eval()
        self.modules = modules

    def proposals(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """Every generator's lists for each request, ``[B, G * K, L]``."""
        requests = np.asarray(requests, dtype=np.int64)
        parts = []
        for index, agent in enumerate(self.generators):
            parts.append(agent.rank(task, requests, prefixes)[:, None])
            if self.settings.lists_per_generator > 1:
                parts.append(
                    agent.sample(
                        task,
                        requests,
                        self.settings.lists_per_generator - 1,
                        self.settings.seed + index,
                        prefixes,
                        temperature=self.settings.temperature,
                    )
                )
        return np.concatenate(parts, axis=1)

    def evaluate(self, task: RerankTask, requests: np.ndarray, lists: np.ndarray) -> np.ndarray:
        """The evaluator's expected clicks of ``lists`` ``[B, M, L]``, ``[B, M]``."""
        return self.scorer.group_values(task, requests, lists).cpu().numpy()

    def rank(
        self, task: RerankTask, requests: np.ndarray, prefixes: np.ndarray | None = None
    ) -> np.ndarray:
        """The evaluator's best of the generators' proposals (completing any prefix)."""
        self._require_built()
        if prefixes is None:
            prefixes = empty_prefixes(len(requests), task.slate_length)
        lists = self.proposals(task, requests, prefixes)
        best = self.evaluate(task, requests, lists).argmax(axis=1)
        return lists[np.arange(len(lists)), best]
