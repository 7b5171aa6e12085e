"""Gate types, found through the ``stagegate.gates`` entry-point group.

The built-in gates are declared in pyproject.toml under that group exactly as a third-party package
declares its own, so there is one lookup path for every gate. This module lives in the core so that policy
validation can check gate types and their fields without importing the gates layer statically.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

GROUP = "stagegate.gates"


class UnknownGateType(LookupError):
    def __init__(self, type_name: str, known: list[str]) -> None:
        super().__init__(f"unknown gate type {type_name!r}; known types: {', '.join(known) or '(none)'}")
        self.type_name = type_name


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def gate_types() -> list[str]:
    """Names of every installed gate type."""
    return sorted(_entry_points())


@cache  # EntryPoint.load costs ~20 ms a call, and gates are built at every stage and every look
def gate_class(type_name: str) -> Any:
    """The class registered for ``type_name``; it must offer ``from_spec`` and ``evaluate``."""
    eps = _entry_points()
    if type_name not in eps:
        raise UnknownGateType(type_name, sorted(eps))
    cls = eps[type_name].load()
    if not (hasattr(cls, "from_spec") and hasattr(cls, "evaluate")):
        raise TypeError(f"entry point {type_name!r} ({eps[type_name].value}) is not a stagegate gate")
    return cls


def build_gate(spec: dict[str, Any]) -> Any:
    """Build a gate from its policy entry (``{"type": ..., ...}``); pydantic errors name the bad field."""
    type_name = spec.get("type")
    if not isinstance(type_name, str):
        raise UnknownGateType(str(type_name), gate_types())
    return gate_class(type_name).from_spec(spec)
