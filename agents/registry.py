"""Agents by name: what ``rerank-env compare`` and generator specs accept.

:func:`make_agent` builds an agent from its command-line name with the settings of
a training budget (``quick`` for smoke runs and the README's main job, ``full`` for
benchmarks). :func:`agent_spec` / :func:`agent_from_spec` turn an agent's class
and constructor arguments into JSON and back (checkpoints of composite agents).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from agents.base import Agent
from agents.baselines import (
    BeamSearchAgent,
    InitialOrder,
    OracleAgent,
    PointwiseGreedy,
    RandomAgent,
)
from agents.degre import DeGRe
from agents.generator_evaluator import GeneratorEvaluator
from agents.goalrank import GoalRank
from agents.prm import PRM
from agents.sb3 import SB3Agent
from agents.seq2slate import Seq2Slate

Budget = Literal["quick", "full"]

#: Classes an agent spec may name.
AGENT_CLASSES: dict[str, type[Agent]] = {
    cls.__name__: cls
    for cls in (
        InitialOrder, RandomAgent, PointwiseGreedy, BeamSearchAgent, OracleAgent, PRM,
        Seq2Slate, GeneratorEvaluator, SB3Agent, DeGRe, GoalRank,
    )
}  # fmt: skip


def _seq2slate(reward: str) -> Callable[[int, Budget], Agent]:
    def make(seed: int, budget: Budget) -> Agent:
        iterations = 60 if budget == "quick" else 300
        return Seq2Slate(iterations=iterations, reward=reward, seed=seed)

    return make


def _degre(**options: Any) -> Callable[[int, Budget], Agent]:
    def make(seed: int, budget: Budget) -> Agent:
        if budget == "quick":
            sizes = {"evaluator_lists": 4, "evaluator_epochs": 3, "mining_requests": 200,
                     "rounds": 2}  # fmt: skip
        else:
            sizes = {"evaluator_lists": 8, "evaluator_epochs": 10, "mining_requests": 2000,
                     "rounds": 4}  # fmt: skip
        return DeGRe(**sizes, **options, seed=seed)

    return make


def _goalrank(**options: Any) -> Callable[[int, Budget], Agent]:
    def make(seed: int, budget: Budget) -> Agent:
        quick = budget == "quick"
        return GoalRank(
            auxiliary=[InitialOrder(), PointwiseGreedy(epochs=5 if quick else 20, seed=seed)],
            reward_model_epochs=5 if quick else 20, iterations=60 if quick else 300,
            **options, seed=seed,
        )  # fmt: skip

    return make


_FACTORIES: dict[str, tuple[Callable[[int, Budget], Agent], str]] = {
    "initial-order": (lambda seed, budget: InitialOrder(), "the upstream ranker's top L"),
    "random": (lambda seed, budget: RandomAgent(seed=seed), "uniformly random lists"),
    "pointwise-greedy": (
        lambda seed, budget: PointwiseGreedy(epochs=5 if budget == "quick" else 20, seed=seed),
        "sort by a pointwise click model fitted on the logs",
    ),
    "prm": (
        lambda seed, budget: PRM(epochs=2 if budget == "quick" else 20, seed=seed),
        "Transformer over the candidate list, trained on logged positives",
    ),
    "seq2slate": (_seq2slate("sparse"), "pointer network, REINFORCE on the list reward"),
    "seq2slate-dense": (_seq2slate("dense"), "the same with dense per-slot credit"),
    "gen-eval": (
        lambda seed, budget: GeneratorEvaluator(
            [PointwiseGreedy(epochs=5 if budget == "quick" else 20, seed=seed)],
            lists_per_generator=16, seed=seed,
        ),
        "pointwise generator (16 Plackett-Luce lists), training simulator as evaluator",
    ),
    "gen-eval-learned": (
        lambda seed, budget: GeneratorEvaluator(
            [PointwiseGreedy(epochs=5 if budget == "quick" else 20, seed=seed)],
            lists_per_generator=16, evaluator="learned",
            evaluator_epochs=5 if budget == "quick" else 20, seed=seed,
        ),
        "the same, with a click model learned from the logs as evaluator (GoalRank's reward)",
    ),
    "multi-gen-eval": (
        lambda seed, budget: GeneratorEvaluator(
            [
                InitialOrder(),
                PointwiseGreedy(epochs=5 if budget == "quick" else 20, seed=seed),
                PRM(epochs=2 if budget == "quick" else 20, seed=seed),
            ],
            lists_per_generator=8, seed=seed,
        ),
        "initial-order, pointwise and PRM generators (8 lists each), simulator evaluator",
    ),
    "maskable-ppo": (
        lambda seed, budget: SB3Agent(
            "MaskablePPO", total_timesteps=8192 if budget == "quick" else 65_536, seed=seed,
            algorithm_kwargs={"n_steps": 256, "batch_size": 128, "learning_rate": 1e-3},
        ),
        "sb3-contrib MaskablePPO on SlateRerankDense-v0 (dense per-slot reward)",
    ),
    "degre": (
        _degre(),
        "DeGRe: lookahead evaluator, beam-8 mining, dense hard+soft labels, greedy generator",
    ),
    "degre-hard": (_degre(soft_weight=0.0), "DeGRe with hard labels only (no soft-label KL)"),
    "degre-sparse": (
        _degre(supervision="sparse"),
        "DeGRe's generator by REINFORCE on the evaluator's list value, same evaluator calls",
    ),
    "degre-sim": (_degre(evaluator="simulator"), "DeGRe mining with the training simulator"),
    "degre-beam8": (
        _degre(decode="evaluator-beam"),
        "DeGRe's learned evaluator served by beam search (width 8): the teacher",
    ),
    "goalrank": (
        _goalrank(),
        "GoalRank: pointer generator on group-relative reference policies (learned reward)",
    ),
    "goalrank-sim": (_goalrank(reward_model="simulator"), "GoalRank, training simulator as reward"),
    "oracle": (lambda seed, budget: OracleAgent(), "exhaustive search (small N, L only)"),
}  # fmt: skip

_BEAM = re.compile(r"beam-(\d+)$")


def agent_names() -> dict[str, str]:
    """Every name :func:`make_agent` accepts, with a one-line description."""
    return {
        **{name: text for name, (_, text) in _FACTORIES.items()},
        "beam-<B>": "beam search of width B against the training simulator, e.g. beam-8",
    }


def make_agent(name: str, *, seed: int = 0, budget: Budget = "full") -> Agent:
    """The agent called ``name`` (see :func:`agent_names`) with the budget's settings."""
    if budget not in ("quick", "full"):
        raise ValueError(f"budget must be 'quick' or 'full', got {budget!r}")
    match = _BEAM.match(name)
    if match:
        return BeamSearchAgent(width=int(match.group(1)))
    if name not in _FACTORIES:
        raise ValueError(f"unknown agent {name!r}; valid: {sorted(agent_names())}")
    return _FACTORIES[name][0](seed, budget)


def agent_spec(agent: Agent) -> dict[str, Any]:
    """``{"agent": class name, "config": constructor arguments}`` of ``agent``."""
    name = type(agent).__name__
    if name not in AGENT_CLASSES:
        raise ValueError(f"{name} is not a registered agent class; known: {sorted(AGENT_CLASSES)}")
    return {"agent": name, "config": agent.config()}


def agent_from_spec(spec: dict[str, Any]) -> Agent:
    """An (untrained) agent from :func:`agent_spec`'s output."""
    name = spec.get("agent")
    if name not in AGENT_CLASSES:
        raise ValueError(f"unknown agent class {name!r} in spec; known: {sorted(AGENT_CLASSES)}")
    return AGENT_CLASSES[name](**spec.get("config", {}))
