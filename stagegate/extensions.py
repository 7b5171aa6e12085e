"""Optional parts found through entry points: the simulator's pieces, CLI sub-apps, model flavours.

The core never imports the simulator package (tests/core/test_import_rules.py fails if it does); where it
needs the simulator's code it asks for an entry point instead, exactly as it finds gates and adapters:

- ``stagegate.simulators``: ``world`` (the runtime's simulated world: a class built with the Runtime,
  offering ``world``, ``reload_world``, ``save_world``, ``history``, ``manifest``, ``training_log`` and
  ``serve``), ``twin`` (what the simulation stage runs: ``fit(train_log, catalogue)``, ``load_record()``,
  ``restrict_gates(gates, record)``), ``demo`` (the demo module: ``POLICY``, ``run_demo``);
- ``stagegate.model_flavours``: ``<flavour>`` -> ``load(model_uri) -> Ranker`` (``recipe``: the
  simulator's recipe models, recognised by the version tag ``recipe``);
- ``stagegate.cli``: typer apps whose commands and groups join the ``stagegate`` command line.

A missing entry point is a :class:`MissingExtension` naming the group, the name and what is installed.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

SIMULATORS = "stagegate.simulators"
MODEL_FLAVOURS = "stagegate.model_flavours"
CLI = "stagegate.cli"


class MissingExtension(LookupError):
    """No entry point ``name`` in ``group``: the package that provides it (e.g. the simulator) is not
    installed, or does not register it."""

    def __init__(self, group: str, name: str, known: list[str], needed_for: str = "") -> None:
        purpose = f" (needed for {needed_for})" if needed_for else ""
        super().__init__(
            f"no {name!r} in entry-point group {group}{purpose}; installed: {', '.join(known) or '(none)'}"
        )
        self.group = group
        self.name = name


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    """The names installed in ``group``."""
    return sorted(_entry_points(group))


@cache  # EntryPoint.load costs milliseconds and a flavour or the world is asked for often
def load(group: str, name: str, needed_for: str = "") -> Any:
    """The object entry point ``name`` of ``group`` refers to; MissingExtension if there is none."""
    eps = _entry_points(group)
    if name not in eps:
        raise MissingExtension(group, name, sorted(eps), needed_for)
    return eps[name].load()


def load_all(group: str) -> dict[str, Any]:
    """Every entry point of ``group``, loaded, by name (in name order)."""
    return {name: load(group, name) for name in names(group)}
