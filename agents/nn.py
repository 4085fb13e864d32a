"""Moved to :mod:`agents.common.nn` (and :mod:`agents.common.sampling`); kept as an alias.

Import from ``agents.common.nn``; this module re-exports it so existing code keeps
working (see CHANGELOG.md).
"""

from agents.common.nn import *  # noqa: F403
from agents.common.nn import (  # noqa: F401  (names a star import would skip)
    POINTER_CLIP,
    CandidateSetEncoder,
    FeatureTables,
    PointerDecoder,
    PointerPolicy,
    RequestInputs,
    feature_tables,
    greedy_lists,
    input_dims,
    masked_entropy,
    request_inputs,
    sampled_lists,
    transformer_stack,
)
from agents.common.sampling import request_gumbel, torch_generator  # noqa: F401
