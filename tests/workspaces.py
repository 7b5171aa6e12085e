"""A private copy of a workspace built once per session, with STAGEGATE_HOME pointing at it (a promotion
changes the workspace it runs in)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def private_copy(seeded: dict, tmp_path: Path) -> Iterator[dict]:
    """``seeded`` (a dict with its ``root``) copied under ``tmp_path``; the environment and the flows'
    cached runtime are restored afterwards. MLflow artifact locations stay absolute paths into the seeded
    copy: they remain valid for read-only use."""
    from flows.context import runtime

    root = tmp_path / "ws"
    shutil.copytree(seeded["root"], root)
    old = os.environ.get("STAGEGATE_HOME")
    os.environ["STAGEGATE_HOME"] = str(root)
    runtime.cache_clear()
    try:
        yield {**seeded, "root": root}
    finally:
        runtime.cache_clear()
        if old is None:
            os.environ.pop("STAGEGATE_HOME", None)
        else:
            os.environ["STAGEGATE_HOME"] = old
