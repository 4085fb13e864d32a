"""Moved to :mod:`agents.common.nn`, :mod:`agents.common.pointer` and ``sampling``; an alias.

Import from ``agents.common.nn``; this module re-exports it so existing code keeps
working (see CHANGELOG.md).
"""

from agents.common.nn import *  # noqa: F403
from agents.common.nn import (  # noqa: F401  (names a star import would skip)
    CandidateSetEncoder,
    FeatureTables,
    RequestInputs,
    feature_tables,
    input_dims,
    masked_entropy,
    request_inputs,
    transformer_stack,
)
from agents.common.pointer import (  # noqa: F401
    POINTER_CLIP,
    PointerDecoder,
    PointerPolicy,
    greedy_lists,
    sampled_lists,
)
from agents.common.sampling import request_gumbel, torch_generator  # noqa: F401
