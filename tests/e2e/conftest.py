"""One small world for the end-to-end tests: built once, copied per test (a promotion changes it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagegate.setup import MODEL, RECIPES, init_workspace, register_candidate


@pytest.fixture(scope="session")
def seeded_workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("world") / "ws"
    info = init_workspace(size="small", root=root, seed=11)
    versions = {
        name: register_candidate(RECIPES / f"{name}.yaml", MODEL, root=root)
        for name in ("clickbait", "better")
    }
    return {"root": root, "info": info, "versions": versions}


@pytest.fixture
def workspace(seeded_workspace: dict, tmp_path: Path) -> Iterator[dict]:
    """A private copy of the seeded workspace, with STAGEGATE_HOME pointing at it."""
    root = tmp_path / "ws"
    shutil.copytree(seeded_workspace["root"], root)
    # MLflow artifact locations are absolute paths into the seeded copy; they stay valid (read-only use).
    old = os.environ.get("STAGEGATE_HOME")
    os.environ["STAGEGATE_HOME"] = str(root)
    from flows.context import runtime

    runtime.cache_clear()
    yield {**seeded_workspace, "root": root}
    runtime.cache_clear()
    if old is None:
        os.environ.pop("STAGEGATE_HOME", None)
    else:
        os.environ["STAGEGATE_HOME"] = old
