"""Moved to :mod:`agents.common.training`; kept as an alias (see CHANGELOG.md)."""

from agents.common.training import (  # noqa: F401
    minibatches,
    preserved_global_rng,
    progress_bar,
    training_mode,
)
