"""Agents named by entry points, as Gymnasium names environments: ``"agents.degre:DeGRe"``.

An entry point is ``"module:Class"``. Composite agents (a generator-evaluator's
generators, GoalRank's auxiliary policies) store their parts as specs,
``{"agent": entry point, "config": constructor arguments}``, so checkpoints name
classes without this module importing any of them: nothing here imports an agent
class, which keeps the registry and the composite agents free of import cycles,
and a user's own agent class works everywhere a built-in one does.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

from agents.base import Agent
from agents.common.imports import imports_allowed


def is_entry_point(text: str) -> bool:
    """Whether ``text`` looks like ``"module.path:ClassName"``."""
    module, sep, attribute = text.partition(":")
    return bool(sep and module and attribute) and all(
        part.isidentifier() for part in (*module.split("."), *attribute.split("."))
    )


def entry_point(cls: type) -> str:
    """``"module:Class"`` of ``cls``, by its shortest public package that exports it.

    ``DeGRe`` is defined in ``agents.degre.agent`` and exported by ``agents.degre``,
    so its entry point is ``"agents.degre:DeGRe"``: files may move inside a package
    without breaking saved specs.
    """
    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:end]))
        if module is not None and getattr(module, cls.__qualname__, None) is cls:
            return f"{'.'.join(parts[:end])}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def load_agent_class(name: str, *, allow_import: bool | None = None) -> type[Agent]:
    """The :class:`~agents.base.Agent` subclass an entry point names.

    Args:
        name: ``"module:Class"``.
        allow_import: Import the module if it is not imported yet. ``None``: yes,
            except while a checkpoint loads (:mod:`agents.common.imports`): a file
            should not make Python import arbitrary modules, so then only modules of
            ``agents`` or already imported ones are allowed.

    Raises:
        ValueError: ``name`` is not an entry point, cannot be imported, or does not
            name an Agent subclass.
    """
    allow_import = imports_allowed() if allow_import is None else allow_import
    if not is_entry_point(name):
        raise ValueError(
            f"{name!r} is not an agent entry point: expected 'module.path:ClassName' "
            f"(e.g. 'agents.degre:DeGRe' or 'mypkg.agents:MyAgent')"
        )
    module_name, _, attribute = name.partition(":")
    if module_name not in sys.modules and not (
        allow_import or module_name == "agents" or module_name.startswith("agents.")
    ):
        raise ValueError(
            f"{name!r} names module {module_name!r}, which is not imported; import it "
            "before loading a checkpoint that refers to it"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import {module_name!r} for agent {name!r}: {err}. Install the package "
            "that holds it (pip install -e PATH) or put its folder on PYTHONPATH"
        ) from err
    found: Any = module
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not (inspect.isclass(found) and issubclass(found, Agent)):
        raise ValueError(
            f"{name!r} does not name an Agent subclass (found {found!r}); an agent class "
            "subclasses agents.base.Agent and implements rank(task, requests, prefixes)"
        )
    return found


def agent_spec(agent: Agent) -> dict[str, Any]:
    """``{"agent": entry point, "config": constructor arguments}`` of ``agent``."""
    return {"agent": entry_point(type(agent)), "config": agent.config()}


def agent_from_spec(spec: dict[str, Any], *, allow_import: bool | None = None) -> Agent:
    """An (untrained) agent from :func:`agent_spec`'s output.

    Args:
        spec: ``{"agent": entry point, "config": {...}}``.
        allow_import: See :func:`load_agent_class`.
    """
    if not isinstance(spec, dict) or "agent" not in spec:
        raise ValueError(
            f"an agent spec is {{'agent': 'module:Class', 'config': {{...}}}}, got {spec!r}"
        )
    cls = load_agent_class(spec["agent"], allow_import=allow_import)
    return cls(**spec.get("config", {}))
