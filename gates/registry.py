"""Find gate types through the ``stagegate.gates`` entry-point group.

The built-in gates are declared in pyproject.toml under that group, the same way a third-party package
declares its own, so there is one lookup path for every gate.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from gates.base import Gate

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


def gate_class(type_name: str) -> type[Gate]:
    eps = _entry_points()
    if type_name not in eps:
        raise UnknownGateType(type_name, sorted(eps))
    cls = eps[type_name].load()
    if not (isinstance(cls, type) and issubclass(cls, Gate)):
        raise TypeError(f"entry point {type_name!r} ({eps[type_name].value}) is not a stagegate Gate subclass")
    return cls


def build_gate(spec: dict[str, Any]) -> Gate:
    """Build a gate from its policy entry (``{"type": ..., ...}``); pydantic errors name the bad field."""
    if "type" not in spec:
        raise UnknownGateType("<missing>", gate_types())
    return gate_class(str(spec["type"])).from_spec(spec)
