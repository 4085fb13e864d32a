"""The agent sets ``compare --preset`` names, their environments and wall times."""

from __future__ import annotations

#: The README's main job: every reference and baseline, 5 seeds, small budgets. PRM
#: twice, on each judge's objective: logged clicks (``prm``) and the training
#: simulator's clicks (``prm-sim``). MaskablePPO is in the full preset: at the quick
#: budget it had not learned (docs/benchmarks.md).
QUICK_AGENTS = (
    "initial-order",
    "random",
    "pointwise-greedy",
    "prm",
    "prm-sim",
    "seq2slate",
    "gen-eval",
    "beam-8",
)
FULL_AGENTS = (
    *QUICK_AGENTS[:6],
    "seq2slate-dense",
    "gen-eval",
    "multi-gen-eval",
    "maskable-ppo",
    "beam-8",
)
#: Agent sets ``--preset`` names (the agents an issue's comparison asks for).
PRESETS: dict[str, tuple[str, ...]] = {
    "quick": QUICK_AGENTS,
    "full": FULL_AGENTS,
    "degre": ("initial-order", "prm", "seq2slate", "gen-eval", "degre", "degre-beam8", "beam-8"),
    "goalrank": (
        "initial-order",
        "pointwise-greedy",
        "prm",
        "gen-eval",
        "gen-eval-learned",
        "multi-gen-eval",
        "goalrank",
        "goalrank-sim",
        "beam-8",
    ),
    "glorank": (
        "initial-order",
        "prm",
        "seq2slate",
        "degre",
        "goalrank",
        "glorank-sft",
        "glorank",
        "glorank-local",
        "beam-8",
    ),
    "gr2": (
        "initial-order",
        "pointwise-greedy",
        "degre",
        "glorank",
        "gr2-targeted-sft",
        "gr2-sft",
        "gr2",
        "gr2-unconditional",
        "beam-8",
    ),
}
#: The environment a preset runs on when ``--env`` is not given.
PRESET_ENVS = {"gr2": "SlateRerankGR2-v0"}

#: Wall time of each preset for 5 seeds on 2 cores (docs/benchmarks.md), for --help.
PRESET_TIMES = {
    "quick": "with --quick, the README's main job: about 3 min, 500 requests",
    "full": "about 35 min, 500 requests",
    "degre": "about 40 min, 500 requests",
    "goalrank": "about 13 min, 500 requests",
    "glorank": "about 72 min, 500 requests; GloRank's fits dominate",
    "gr2": "not timed yet; GR2 alone takes about 17 min a seed with --quick",
}
