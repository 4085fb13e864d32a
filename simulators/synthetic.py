"""The synthetic world, now :mod:`simulators.data.synthetic_world`; kept as an alias.

It moved into :mod:`simulators.data` because the data layer generates its logs on
first use; importing it from here keeps working (see CHANGELOG.md).
"""

from simulators.data.synthetic_world import SyntheticWorld, TrueClickModel, true_simulator_for

__all__ = ["SyntheticWorld", "TrueClickModel", "true_simulator_for"]
