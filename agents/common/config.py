"""The base of every method's configuration: a frozen, typed dataclass with presets.

A method's settings live in one dataclass (``DeGReConfig``, ``GoalRankConfig``,
...), validated on construction, with its training budgets as classmethods:

* ``Config.tiny(**overrides)``: seconds on a small task (tests, smoke runs);
* ``Config.quick(**overrides)``: the README's main job (``rerank-env compare --quick``);
* ``Config.default(**overrides)`` (or ``Config()``): the benchmarks' budget.

The command-line registry and ``compare`` read these presets (budget ``"tiny"``,
``"quick"`` or ``"full"``), so a budget is written once. Checkpoints store
:meth:`AgentConfig.to_dict` and rebuild with :meth:`AgentConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

from simulators.data.errors import ConfigError

Budget = Literal["tiny", "quick", "full"]
#: Budget names, each with the preset classmethod it selects.
BUDGET_PRESETS: dict[str, str] = {"tiny": "tiny", "quick": "quick", "full": "default"}

C = TypeVar("C", bound="AgentConfig")


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Base of the methods' frozen configs. Subclasses are frozen dataclasses too.

    Subclasses override :meth:`validate` (raise :class:`ConfigError` naming the
    field, the value and what is valid) and set :attr:`TINY` / :attr:`QUICK` (the
    fields those presets change from the defaults).
    """

    #: Field values of the ``tiny`` preset (changes from the defaults).
    TINY: ClassVar[Mapping[str, Any]] = {}
    #: Field values of the ``quick`` preset (changes from the defaults).
    QUICK: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a field is out of range (subclasses extend it)."""

    # ------------------------------------------------------------------ presets

    @classmethod
    def default(cls: type[C], **overrides: Any) -> C:
        """The benchmarks' budget (the field defaults), with ``overrides``."""
        return cls.from_dict(overrides)

    @classmethod
    def quick(cls: type[C], **overrides: Any) -> C:
        """The README's main job: small budgets, minutes for a whole comparison."""
        return cls.from_dict({**cls.QUICK, **overrides})

    @classmethod
    def tiny(cls: type[C], **overrides: Any) -> C:
        """Seconds on a small task (tests and smoke runs); learns something, not much."""
        return cls.from_dict({**cls.QUICK, **cls.TINY, **overrides})

    @classmethod
    def preset(cls: type[C], budget: str, **overrides: Any) -> C:
        """The preset of ``budget`` (``"tiny"``, ``"quick"``, ``"full"``) with ``overrides``."""
        if budget not in BUDGET_PRESETS:
            raise ConfigError(
                f"unknown budget {budget!r}; valid: {sorted(BUDGET_PRESETS)} (tiny: tests, "
                "quick: the README's main job, full: benchmarks)"
            )
        return getattr(cls, BUDGET_PRESETS[budget])(**overrides)

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-like dict (tuples become lists)."""
        return {
            field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """A config from ``values``; unknown keys are refused with the valid ones."""
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; valid: {names}")
        return cls(**values)

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ validation helpers

    def _choice(self, name: str, valid: Iterable[Any]) -> None:
        valid = tuple(valid)
        value = getattr(self, name)
        if value not in valid:
            raise ConfigError(f"{name} must be one of {valid}, got {value!r}")

    def _at_least(self, minimum: float, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
