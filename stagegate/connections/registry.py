"""Adapters, found through one entry-point group per port (the mechanism gates use, stagegate.plugins).

An adapter class offers a pydantic ``Config`` model (its own fields, validated from the connections file)
and ``from_config(config, host)``; the object it builds must satisfy the port's protocol.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from stagegate.ports import PORTS

GROUPS = {port: f"stagegate.{port}" for port in PORTS}


class UnknownAdapter(LookupError):
    def __init__(self, port: str, type_name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown {port} adapter {type_name!r} (entry-point group {GROUPS[port]}); "
            f"known: {', '.join(known) or '(none installed)'}"
        )
        self.port = port
        self.type_name = type_name


@cache
def _entry_points(port: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUPS[port])}


def adapter_types(port: str) -> list[str]:
    """Names of every installed adapter of ``port``."""
    return sorted(_entry_points(port))


def adapter_class(port: str, type_name: str) -> Any:
    """The class registered as ``type_name`` in the port's group; it must offer ``Config`` and
    ``from_config``."""
    if port not in GROUPS:
        raise KeyError(f"unknown port {port!r}; ports: {', '.join(GROUPS)}")
    eps = _entry_points(port)
    if type_name not in eps:
        raise UnknownAdapter(port, type_name, sorted(eps))
    cls = eps[type_name].load()
    if not (hasattr(cls, "Config") and hasattr(cls, "from_config")):
        raise TypeError(
            f"entry point {type_name!r} ({eps[type_name].value}) is not a stagegate {port} adapter"
        )
    return cls
