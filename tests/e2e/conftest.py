"""One small world for the end-to-end tests: built once, copied per test (a promotion changes it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.setup import MODEL, RECIPES, init_workspace, register_candidate
from tests.workspaces import private_copy


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
    with private_copy(seeded_workspace, tmp_path) as copy:
        yield copy
