"""What the simulation stage (flows/stages/simulation.py) needs of the simulator, behind one entry point.

Registered as ``twin`` in the ``stagegate.simulators`` entry-point group: the stage loads
:data:`TWIN` from there and never imports this package.

- ``fit(train_log, catalogue)``: a :class:`simulator.world.twin.TwinWorld` fitted from the training log and
  the public catalogue only; it offers ``simulate(ranker, traffic, days, seed=...)`` and ``info``;
- ``load_record()``: the twin's calibration record (simulator/world/twin_calibration.json), or None;
- ``restrict_gates(gates, record)``: the simulation gates as the stage runs them (a gate on a twin metric
  rolls back only where the calibration supports it, else it holds) and the notes saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TwinSimulator:
    """The twin world and its calibration, as the simulation stage uses them."""

    def fit(self, train_log: Any, catalogue: Any) -> Any:
        from simulator.world.twin import TwinWorld

        return TwinWorld.fit(train_log, catalogue)

    def load_record(self) -> dict[str, Any] | None:
        from simulator.world.twin_calibration import load_record

        return load_record()

    def restrict_gates(self, gates: Any, record: Any) -> tuple[list[dict[str, Any]], Any]:
        from simulator.world.twin_calibration import restrict_gates

        return restrict_gates(gates, record)


TWIN = TwinSimulator()
