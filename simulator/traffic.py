"""Traffic control for the in-process simulated world: the split lives in a JSON file, written atomically.

The ``file`` adapter of the ``stagegate.traffic`` port (entry-point group ``stagegate.traffic``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from stagegate.traffic.base import Split, TrafficError


class FileTrafficController:
    """Persists the split to ``path``; the world reads it before every batch it serves."""

    class Config(BaseModel):
        """``path``: the split file (default: the workspace's ``traffic.json``)."""

        model_config = ConfigDict(extra="forbid")

        path: str | None = None

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def from_config(cls, config: Config, host: Any) -> FileTrafficController:
        return cls(Path(config.path) if config.path else host.workspace.traffic_path)

    def get_split(self) -> Split:
        if not self.path.exists():
            return Split()
        return Split.model_validate(json.loads(self.path.read_text(encoding="utf-8")))

    def set_split(self, split: Split) -> None:
        # Write-then-rename so that a crash never leaves half a file: the old split or the new one.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".traffic-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(split.model_dump_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def rollback(self, champion: str | None = None) -> Split:
        """All traffic to ``champion`` (default: the current split's), shadow off; read back to confirm."""
        split = Split(champion=champion if champion is not None else self.get_split().champion)
        self.set_split(split)
        back = self.get_split()
        if back != split or not back.is_all_champion:
            raise TrafficError(f"rollback did not take: {self.path} reads {back!r}, expected {split!r}")
        return back
