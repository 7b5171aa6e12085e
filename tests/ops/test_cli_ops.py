"""The operations commands' pieces that need no server: the interactive demo's policy, the registration."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from stagegate.cli import app
from stagegate.cli_ops import interactive_policy
from stagegate.policy import load_policy


def test_interactive_policy_asks_for_approval_before_rollout(tmp_path: Path) -> None:
    path = interactive_policy(tmp_path / "elsewhere" / "demo-interactive.yaml", ["release-manager", "alice"])
    policy = load_policy(path)  # validates, including the expectation suite's path
    assert policy.approvals != "auto" and policy.approvals.approvers == ["release-manager", "alice"]
    assert policy.stages.canary.approval == "before_rollout"
    assert Path(policy.stages.offline.expectations).is_file()


def test_commands_are_registered() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["--help"]).output
    for command in ("up", "down", "approve", "reject"):
        assert f" {command} " in out, out
    assert "--interactive" in runner.invoke(app, ["demo", "--help"]).output
    bad = runner.invoke(app, ["approve", "not-a-uuid", "--approver", "alice", "--token", "sgt_x"])
    assert bad.exit_code == 2 and "not a flow run id" in bad.output
