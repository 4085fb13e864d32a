"""Moved to :mod:`agents.common.reward_model`; kept as an alias (see CHANGELOG.md)."""

from agents.common.reward_model import (  # noqa: F401
    build_reward_model,
    fit_reward_model,
    reward_model_spec,
)
