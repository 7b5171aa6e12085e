"""Traffic control for the in-process simulated world: the split lives in a JSON file, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from stagegate.traffic.base import Split


class FileTrafficController:
    """Persists the split to ``path``; the world reads it before every batch it serves."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

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

    def rollback(self) -> Split:
        split = Split(champion=self.get_split().champion)
        self.set_split(split)
        return split
