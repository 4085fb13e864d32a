"""Gymnasium environments for slate reranking.

Importing this package registers the environments::

    import gymnasium as gym
    import rerank_env  # noqa: F401  (or gym.make("rerank_env:SlateRerank-v0"))

    env = gym.make("SlateRerank-v0")
    envs = gym.make_vec("SlateRerank-v0", num_envs=1024)  # native, batched
    env = gym.make("SlateRerankGlobal-v0")  # one semantic-ID token per step

This layer may import :mod:`simulators`, never :mod:`agents`.
"""

from gymnasium.envs.registration import register

__version__ = "0.2.0"

_STEPWISE = {
    "entry_point": "rerank_env.env:SlateRerankEnv",
    "vector_entry_point": "rerank_env.vector:SlateRerankVectorEnv",
}

#: Registered ids and the keyword arguments each fixes (variants are ids, not classes).
VARIANTS: dict[str, dict] = {
    "SlateRerank-v0": {},
    "SlateRerankDense-v0": {"reward_mode": "dense"},
    "SlateRerank-PBM-v0": {"simulator": "pbm"},
    "SlateRerank-DCM-v0": {"simulator": "dcm"},
    "SlateRerank-Cascade-v0": {"simulator": "cascade"},
    "SlateRerankSynthetic-v0": {"dataset": "synthetic"},
    # The GR2 protocol: K = 10 pre-ranked candidates holding the true next item.
    "SlateRerankGR2-v0": {"protocol": "gr2", "slate_length": 5},
}

for _env_id, _kwargs in VARIANTS.items():
    register(id=_env_id, kwargs=_kwargs, **_STEPWISE)

register(id="SlateRerankList-v0", entry_point="rerank_env.env:SlateRerankListEnv")
VARIANTS["SlateRerankList-v0"] = {}
# GloRank's global action space: one semantic-ID token per step.
register(
    id="SlateRerankGlobal-v0",
    entry_point="rerank_env.semantic_env:SlateRerankGlobalEnv",
    vector_entry_point="rerank_env.semantic_env:SlateRerankGlobalVectorEnv",
)
VARIANTS["SlateRerankGlobal-v0"] = {}

from rerank_env.config import ColdStartConfig, TaskConfig  # noqa: E402
from rerank_env.core import InvalidActionError  # noqa: E402
from rerank_env.task import RerankTask, make_task  # noqa: E402
from simulators.composed import AssumedComposition  # noqa: E402

__all__ = [
    "VARIANTS",
    "AssumedComposition",
    "ColdStartConfig",
    "InvalidActionError",
    "RerankTask",
    "TaskConfig",
    "make_task",
]
