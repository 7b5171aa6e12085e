"""The runtime's simulated world: what a Runtime offers about the world, provided by the simulator.

Registered as ``world`` in the ``stagegate.simulators`` entry-point group; ``stagegate.runtime.Runtime``
builds it with itself and forwards ``world``, ``reload_world``, ``save_world``, ``history``, ``manifest``,
``training_log`` and ``serve`` to it, so the core never imports this package. The world's state is pickled
in the workspace after every served window so that the next process continues the same world; the file
is signed with the workspace key and checked before it is unpickled (simulator/world_state.py).
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import numpy as np

from stagegate.logs import ServedBatch
from stagegate.ports import Split
from stagegate.runtime import WorkspaceNotReady


class SimulatedWorld:
    """The simulated live world of one Runtime's workspace (``host``: the Runtime, for its rankers)."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.workspace = host.workspace

    @cached_property
    def manifest(self) -> dict[str, Any]:
        if not self.workspace.manifest_path.exists():
            raise WorkspaceNotReady(f"no world in {self.workspace.root}: run `stagegate world init` first")
        return json.loads(self.workspace.manifest_path.read_text(encoding="utf-8"))

    @cached_property
    def world(self) -> Any:
        if not self.workspace.world_path.exists():
            raise WorkspaceNotReady(f"no world state at {self.workspace.world_path}")
        from simulator.world_state import load_world

        return load_world(self.workspace.world_path, self.workspace.world_key_path)

    def verify_state(self) -> None:
        """Check the world state file as loading it would (owner, mode, HMAC), without unpickling it:
        StateFileRefused names the file and the reason. Nothing to check when there is no state file."""
        if self.workspace.world_path.exists() or self.workspace.world_path.is_symlink():
            from simulator.world_state import verified_payload

            verified_payload(self.workspace.world_path, self.workspace.world_key_path)

    def reload_world(self) -> None:
        """Forget the in-memory world so the next use reads the state another process saved."""
        self.__dict__.pop("world", None)

    def save_world(self) -> None:
        from simulator.world_state import save_world

        save_world(self.world, self.workspace.world_path, self.workspace.world_key_path)

    @cached_property
    def history(self) -> ServedBatch:
        from stagegate.datasets import load_batch

        return load_batch(self.workspace.history_path)

    def training_log(self) -> ServedBatch:
        """The logged history before the manifest's ``holdout_start_day`` (what models train on)."""
        from stagegate.log_rows import take

        cut = float(self.manifest["holdout_start_day"])
        return take(self.history, np.flatnonzero(self.history.context.t < cut))

    def serve(self, model: str, split: Split, hours: float) -> ServedBatch:
        """Serve ``hours`` of live traffic under ``split`` and persist the world's new state."""
        if split.champion is None:
            raise RuntimeError("no champion is serving: refusing to serve traffic")
        champion = self.host.ranker(model, split.champion)
        candidate = self.host.ranker(model, split.candidate) if split.candidate else None
        batch = self.world.serve(
            champion,
            candidate=candidate if split.candidate_weight > 0 else None,
            candidate_share=split.candidate_weight if candidate is not None else 0.0,
            hours=hours,
            shadow=candidate if split.shadow else None,
        )
        self.save_world()
        return batch
