"""Agents by name: what ``rerank-env compare`` accepts, as Gymnasium registers environments.

Every registered name maps to an **entry point** (``"agents.degre:DeGRe"``, a
string: nothing is imported until the agent is made), fixed keyword arguments (an
ablation's switch) and, for composite agents, sub-agents named by their own
registry names. :func:`make_agent` builds one with the settings of a training
budget, read from the agent's config presets (``tiny``, ``quick``, ``full``; see
:mod:`agents.common.config`), so a budget is written once, in the method's config.

Your own agents plug in the same way: :func:`register` a name, or pass an entry
point (``"mypkg.agents:MyAgent"``) wherever a name is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.base import Agent
from agents.common.config import BUDGET_PRESETS, Budget
from agents.common.specs import is_entry_point, load_agent_class

__all__ = ["AgentEntry", "agent_names", "make_agent", "register", "registered"]


@dataclass(frozen=True)
class AgentEntry:
    """One registered agent name.

    Attributes:
        entry_point: ``"module:Class"`` of an :class:`~agents.base.Agent` subclass.
        description: One line for ``rerank-env compare --help``.
        kwargs: Fixed keyword arguments (config fields or constructor arguments).
        components: Constructor arguments that are lists of sub-agents, by registry
            name (built with the same budget and seed), e.g. a generator-evaluator's
            ``generators``.
    """

    entry_point: str
    description: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    components: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_REGISTRY: dict[str, AgentEntry] = {}


def register(
    name: str,
    entry_point: str,
    description: str,
    *,
    kwargs: Mapping[str, Any] | None = None,
    components: Mapping[str, tuple[str, ...]] | None = None,
    overwrite: bool = False,
) -> None:
    """Register ``name`` (what ``compare --agents`` and :func:`make_agent` accept).

    Raises:
        ValueError: ``name`` is taken (pass ``overwrite=True``) or ``entry_point`` is
            not ``"module:Class"``.
    """
    if any(isinstance(names, str) for names in (components or {}).values()):
        raise ValueError(
            f"components of {name!r} must map to tuples of registered names, e.g. "
            f"{{'generators': ('prm',)}}, got {dict(components or {})!r}"
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"agent name {name!r} is already registered; pass overwrite=True")
    if not is_entry_point(entry_point):
        raise ValueError(f"entry_point must look like 'module.path:ClassName', got {entry_point!r}")
    _REGISTRY[name] = AgentEntry(
        entry_point,
        description,
        dict(kwargs or {}),
        {key: tuple(names) for key, names in (components or {}).items()},
    )


def registered() -> dict[str, AgentEntry]:
    """Every registered name and its entry (a copy)."""
    return dict(_REGISTRY)


_BEAM = re.compile(r"beam-(\d+)$")


def agent_names() -> dict[str, str]:
    """Every name :func:`make_agent` accepts, with a one-line description."""
    return {
        **{name: entry.description for name, entry in _REGISTRY.items()},
        "beam-<B>": "beam search of width B against the training simulator, e.g. beam-8",
    }


def make_agent(name: str, *, seed: int = 0, budget: Budget | str = "full") -> Agent:
    """The agent called ``name`` with the settings of ``budget``'s preset.

    Args:
        name: A registered name (:func:`agent_names`), ``beam-<B>``, or an entry point
            ``"module:Class"`` naming any :class:`~agents.base.Agent` subclass.
        seed: The agent's seed (agents without randomness ignore it).
        budget: ``"tiny"`` (tests), ``"quick"`` (the README's main job) or ``"full"``.

    Raises:
        ValueError: Unknown name or budget, or an entry point that is not an agent.
    """
    if budget not in BUDGET_PRESETS:
        raise ValueError(f"budget must be one of {sorted(BUDGET_PRESETS)}, got {budget!r}")
    match = _BEAM.match(name)
    if match:
        return load_agent_class("agents.baselines:BeamSearchAgent")(width=int(match.group(1)))
    if name in _REGISTRY:
        entry = _REGISTRY[name]
        components = {
            key: [make_agent(part, seed=seed, budget=budget) for part in names]
            for key, names in entry.components.items()
        }
        return _from_preset(
            load_agent_class(entry.entry_point), budget, seed, {**entry.kwargs, **components}
        )
    if is_entry_point(name):
        return _from_preset(load_agent_class(name), budget, seed, {})
    raise ValueError(
        f"unknown agent {name!r}; valid: {sorted(agent_names())}, or an entry point "
        "'module.path:ClassName' naming an Agent subclass (e.g. 'mypkg.agents:MyAgent')"
    )


def _from_preset(cls: type[Agent], budget: str, seed: int, kwargs: dict[str, Any]) -> Agent:
    """``cls.from_preset(...)``; a constructor that cannot be called so is a clear error."""
    try:
        return cls.from_preset(budget, seed=seed, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"{cls.__name__}.from_preset({budget!r}, seed={seed}) failed: {err}. An agent "
            "named on the command line is built without arguments: give its constructor "
            "defaults, or register it with register(name, entry_point, ..., kwargs={...})"
        ) from None


# ---------------------------------------------------------------------- the built-in agents
# One entry per agent, laid out as a table: the formatter would spread each over lines.
# fmt: off

register("initial-order", "agents.baselines:InitialOrder", "the upstream ranker's top L")
register("random", "agents.baselines:RandomAgent", "uniformly random lists")
register(
    "vector-dot", "agents.baselines:VectorDotProduct",
    "a probe: sort by the dot product of the observation's user and item vectors (no training)",
)
register(
    "pointwise-greedy", "agents.baselines:PointwiseGreedy",
    "sort by a pointwise click model fitted on the logs",
)
register(
    "prm", "agents.prm:PRM", "Transformer over the candidate list, trained on logged positives"
)
register(
    "prm-sim", "agents.prm:PRM",
    "PRM trained on the training simulator's click probabilities (the tables' objective)",
    kwargs={"labels": "simulator"},
)
register(
    "seq2slate", "agents.seq2slate:Seq2Slate", "pointer network, REINFORCE on the list reward",
    kwargs={"reward": "sparse"},
)
register(
    "seq2slate-dense", "agents.seq2slate:Seq2Slate", "the same with dense per-slot credit",
    kwargs={"reward": "dense"},
)
register(
    "rloo", "agents.policy_gradient:PolicyGradient",
    "pointer network, REINFORCE with a leave-one-out group baseline (RLOO)",
    kwargs={"baseline": "leave-one-out"},
)
register(
    "ppo-gae", "agents.policy_gradient:PolicyGradient",
    "pointer network, PPO with GAE and a learned critic, dense per-slot rewards",
    kwargs={"estimator": "ppo", "credit": "dense"},
)
register(
    "gen-eval", "agents.generator_evaluator:GeneratorEvaluator",
    "pointwise generator (16 Plackett-Luce lists), training simulator as evaluator",
    kwargs={"lists_per_generator": 16}, components={"generators": ("pointwise-greedy",)},
)
register(
    "gen-eval-learned", "agents.generator_evaluator:GeneratorEvaluator",
    "the same, with a click model learned from the logs as evaluator (GoalRank's reward)",
    kwargs={"lists_per_generator": 16, "evaluator": "learned"},
    components={"generators": ("pointwise-greedy",)},
)
register(
    "multi-gen-eval", "agents.generator_evaluator:GeneratorEvaluator",
    "initial-order, pointwise and PRM generators (8 lists each), simulator evaluator",
    kwargs={"lists_per_generator": 8},
    components={"generators": ("initial-order", "pointwise-greedy", "prm")},
)
register(
    "maskable-ppo", "agents.sb3:SB3Agent",
    "sb3-contrib MaskablePPO with the suite's SlatePolicy (a pointer over the candidates), "
    "dense per-slot reward",
    kwargs={"algorithm": "MaskablePPO", "policy": "SlatePolicy",
            # chosen on validation requests, 2 seeds (benchmarks/bench_sb3_policy.py
            # --study tune; docs/benchmarks.md, "MaskablePPO with SlatePolicy")
            "algorithm_kwargs": {"n_steps": 64, "batch_size": 64, "n_epochs": 5,
                                 "learning_rate": 4e-3, "ent_coef": 0.01}},
)
register(
    "degre", "agents.degre:DeGRe",
    "DeGRe: lookahead evaluator, beam-8 mining, dense hard+soft labels, greedy generator",
)
register(
    "degre-hard", "agents.degre:DeGRe", "DeGRe with hard labels only (no soft-label KL)",
    kwargs={"soft_weight": 0.0},
)
register(
    "degre-sparse", "agents.degre:DeGRe",
    "DeGRe's generator by REINFORCE on the evaluator's list value, same evaluator calls",
    kwargs={"supervision": "sparse"},
)
register(
    "degre-sim", "agents.degre:DeGRe", "DeGRe mining with the training simulator",
    kwargs={"evaluator": "simulator"},
)
register(
    "degre-beam8", "agents.degre:DeGRe",
    "DeGRe's learned evaluator served by beam search (width 8): the teacher",
    kwargs={"decode": "evaluator-beam"},
)
register(
    "goalrank", "agents.goalrank:GoalRank",
    "GoalRank: pointer generator on group-relative reference policies (learned reward)",
    components={"auxiliary": ("initial-order", "pointwise-greedy")},
)
register(
    "goalrank-composed", "agents.goalrank:GoalRank",
    "GoalRank, learned reward model fitted inside a learned composition (examination, "
    "redundancy, complementarity)",
    kwargs={"reward_model_composition": True},
    components={"auxiliary": ("initial-order", "pointwise-greedy")},
)
register(
    "goalrank-sim", "agents.goalrank:GoalRank", "GoalRank, training simulator as reward",
    kwargs={"reward_model": "simulator"},
    components={"auxiliary": ("initial-order", "pointwise-greedy")},
)
register(
    "glorank", "agents.glorank:GloRank",
    "GloRank: semantic-ID token generator under a candidate trie, SFT on beam lists then PPO",
)
register(
    "glorank-local", "agents.glorank:GloRank",
    "GloRank's local-index twin: same backbone and stages, pointer head over positions",
    kwargs={"head": "local"},
)
register(
    "glorank-index", "agents.glorank:GloRank",
    "GloRank's index twin: same backbone and stages, a Linear(d, N) over candidate positions",
    kwargs={"head": "index"},
)
register(
    "glorank-sft", "agents.glorank:GloRank", "GloRank after stage 1 alone (SFT, no PPO)",
    kwargs={"ppo_iterations": 0},
)
register(
    "glorank-scratch", "agents.glorank:GloRank", "GloRank by PPO alone (no SFT stage)",
    kwargs={"sft_source": "none"},
)
register(
    "glorank-logged", "agents.glorank:GloRank",
    "GloRank with SFT on the logged positives instead of beam-search lists",
    kwargs={"sft_source": "logged"},
)
register(
    "gr2", "agents.gr2:GR2",
    "GR2: a small LM over semantic IDs; mid-training, rejection-sampled reasoning SFT, DAPO "
    "(GR2 protocol tasks; needs the lm extra)",
)
register(
    "gr2-sft", "agents.gr2:GR2", "GR2 after reasoning SFT alone (no DAPO)",
    kwargs={"dapo_iterations": 0},
)
register(
    "gr2-targeted-sft", "agents.gr2:GR2",
    "GR2's SFT on targeted traces (the answer revealed to the teacher), no DAPO",
    kwargs={"teacher": "targeted", "dapo_iterations": 0},
)
register(
    "gr2-unconditional", "agents.gr2:GR2",
    "GR2 with an unconditional format reward (invites copying the input order)",
    kwargs={"format_reward": "unconditional"},
)
register(
    "gr2-no-mid", "agents.gr2:GR2", "GR2 without mid-training",
    kwargs={"mid_steps": 0},
)
register("oracle", "agents.baselines:OracleAgent", "exhaustive search (small N, L only)")
# fmt: on
