"""Where the embedded default keeps its state: one folder, ``$STAGEGATE_HOME`` or ``./.stagegate``.

Nothing needs to be started for it: MLflow tracks to a SQLite file and an artifact folder inside, events go
to another SQLite file, and the traffic split of the simulated world is a small JSON file. Production
points the same names at servers (``STAGEGATE_MLFLOW_URI``, ``STAGEGATE_EVENTS_URL``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class StateFileRefused(RuntimeError):
    """A state file in the workspace that is not loaded because it could not prove who wrote it (the
    simulated world's pickle: owner, mode, HMAC; simulator/world_state.py). The message names the file and
    the reason; commands exit 2 with it."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def from_env(cls, root: str | Path | None = None) -> Workspace:
        path = Path(root or os.environ.get("STAGEGATE_HOME") or ".stagegate").resolve()
        path.mkdir(parents=True, exist_ok=True)
        (path / "data").mkdir(exist_ok=True)
        return cls(path)

    @property
    def mlflow_uri(self) -> str:
        return os.environ.get("STAGEGATE_MLFLOW_URI") or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def events_url(self) -> str:
        return os.environ.get("STAGEGATE_EVENTS_URL") or f"sqlite:///{self.root / 'events.db'}"

    @property
    def traffic_path(self) -> Path:
        return self.root / "traffic.json"

    @property
    def world_path(self) -> Path:
        return self.root / "data" / "world.pkl"

    @property
    def world_key_path(self) -> Path:
        """The key that signs the world state (0600; created by `stagegate world init`)."""
        return self.root / "world.key"

    @property
    def history_path(self) -> Path:
        return self.root / "data" / "history.npz"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"
