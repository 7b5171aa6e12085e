"""`stagegate world init` in a workspace that already holds a world refuses without --force and changes
nothing (the world, its history and the split are what the workspace's promotions measure against)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagegate.cli import app
from stagegate.workspace import Workspace


def test_world_init_refuses_to_replace_a_world_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEGATE_HOME", str(tmp_path / "ws"))
    workspace = Workspace.from_env()
    workspace.world_path.parent.mkdir(parents=True, exist_ok=True)
    workspace.world_path.write_bytes(b"the world promotions here were judged against")
    result = CliRunner().invoke(app, ["world", "init", "--size", "small"])
    assert result.exit_code == 2, result.output
    assert "already holds a simulated world" in result.output and "--force" in result.output
    assert workspace.world_path.read_bytes() == b"the world promotions here were judged against"
