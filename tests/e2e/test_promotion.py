"""End to end through Prefect's temporary server and MLflow on a SQLite file: one promotion that is
promoted, one that is rolled back, and the inputs that must change nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simulator.setup import MODEL
from stagegate.tracking import mlflow_key

pytestmark = pytest.mark.slow

FAST_STAGES = {
    "offline": {"gates": [{"type": "threshold", "metric": "ndcg@10", "min": 0.0}]},
    "simulation": {
        "estimator": "dr",
        "gates": [
            {
                "type": "relative",
                "metric": "revenue_per_user",
                "min_change": -0.9,
                "on_inconclusive": "record",
                "on_error": "record",
            }
        ],
    },
    "shadow": {
        "min_requests": 200,
        "batch_hours": 4,
        "gates": [{"type": "threshold", "metric": "out_of_stock_share", "max": 0.5}],
    },
    "canary": {
        "steps": [{"weight": 20, "min_users": 20}, {"weight": 50, "min_users": 40}],
        "batch_hours": 6,
        "gates": [{"type": "guardrail", "metric": "error_rate", "max": 0.2}],
    },
    "rollout": {
        "bake": "12h",
        "batch_hours": 6,
        "gates": [{"type": "guardrail", "metric": "error_rate", "max": 0.2, "on_inconclusive": "record"}],
    },
}


def write_policy(path: Path, **stage_overrides: dict) -> Path:
    stages = {**FAST_STAGES, **stage_overrides}
    path.write_text(yaml.safe_dump({"model": MODEL, "approvals": "auto", "stages": stages}))
    return path


def _state(root: Path) -> dict:
    from stagegate.runtime import Runtime
    from stagegate.workspace import Workspace

    rt = Runtime(Workspace.from_env(root))
    aliases = {
        a: (v.version if (v := rt.registry.get_alias(MODEL, a)) else None)
        for a in ("champion", "candidate", "previous")
    }
    return {"rt": rt, "aliases": aliases, "split": rt.traffic.get_split()}


def test_promotion_to_full_rollout(workspace: dict, tmp_path: Path) -> None:
    from flows.promote import promote

    version = workspace["versions"]["better"]
    champion = workspace["info"]["champion_version"]
    result = promote(model=MODEL, version=version, policy=str(write_policy(tmp_path / "p.yaml")))

    assert result.outcome == "promoted", result.reason
    assert [s["stage"] for s in result.stages] == ["offline", "simulation", "shadow", "canary", "rollout"]
    state = _state(workspace["root"])
    assert state["aliases"] == {"champion": version, "candidate": None, "previous": champion}
    assert state["split"].champion == version and state["split"].candidate is None
    rt = state["rt"]
    assert rt.registry.get_version(MODEL, version).tags["stagegate.status"] == "promoted"
    aliases = {v.version: v.aliases for v in rt.registry.versions(MODEL)}  # what `status` shows
    assert aliases[version] == ["champion"] and aliases[champion] == ["previous"]
    ledger = rt.events.promotion(result.promotion_id)
    assert ledger["state"] == "promoted"
    assert ledger["flow_run_id"]  # `stagegate approve <promotion id>` finds the paused run through it
    states = [t["to_state"] for t in rt.events.transitions(result.promotion_id)]
    assert states[0] == "registered" and states[-1] == "promoted"
    assert {"offline", "simulation", "shadow", "canary", "rollout"} <= set(states)
    verdicts = rt.events.verdicts(result.promotion_id)
    assert set(verdicts["stage"]) == {"offline", "simulation", "shadow", "canary", "rollout"}
    assert (verdicts[verdicts["stage"] != "simulation"]["outcome"] == "PASS").all()

    # MLflow: one parent run, a nested run per stage with its verdict table.
    client = rt.registry.client
    parent = client.get_run(result.mlflow_run_id)
    assert parent.data.tags["stagegate.outcome"] == "promoted"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'"
    )
    assert sorted(r.data.tags["stagegate.stage"] for r in children) == sorted(
        ["offline", "simulation", "shadow", "canary", "rollout"]
    )
    for run in children:
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert {"verdicts.json", "policy.json"} <= set(artifacts), artifacts
    # The parent run carries the key evidence, for MLflow's run list (stagegate.tracking.key_evidence).
    assert parent.data.metrics["promoted"] == 1.0, parent.data.metrics
    last = verdicts.groupby(["stage", "gate"]).tail(1)
    for row in last.itertuples():
        tag = mlflow_key("stagegate.verdict", row.stage, row.gate)
        assert parent.data.tags[tag] == row.outcome, (tag, sorted(parent.data.tags))
        assert parent.data.metrics[mlflow_key(row.stage, row.gate, "looks")] >= 1
    effect = last[last["gate"] == "relative:revenue_per_user"].iloc[0]  # the simulation stage's gate
    if effect["statistic"] == effect["statistic"]:
        assert parent.data.metrics["simulation.revenue_per_user.effect"] == pytest.approx(effect["statistic"])
    assert "evidence/final/report.html" in {
        a.path for a in client.list_artifacts(result.mlflow_run_id, "evidence/final")
    }

    # the world state the promotion served from and saved is still signed with the workspace's own key
    from simulator.world_state import MAGIC, verified_payload

    ws = rt.workspace
    assert ws.world_path.read_bytes().startswith(MAGIC)
    verified_payload(ws.world_path, ws.world_key_path)
    assert ws.world_key_path.stat().st_mode & 0o777 == 0o600


def test_canary_failure_rolls_back_and_keeps_the_champion(workspace: dict, tmp_path: Path) -> None:
    from flows.promote import promote

    version = workspace["versions"]["clickbait"]
    champion = workspace["info"]["champion_version"]
    # A canary gate that must fail on the first look: revenue per user can never be below zero.
    failing_canary = {
        **FAST_STAGES["canary"],
        "gates": [{"type": "threshold", "metric": "revenue_per_user", "max": -1.0, "on_fail": "rollback"}],
    }
    policy = write_policy(tmp_path / "p.yaml", canary=failing_canary)
    result = promote(model=MODEL, version=version, policy=str(policy))

    assert result.outcome == "rolled_back"
    assert result.stage == "canary" and "revenue_per_user" in result.reason
    state = _state(workspace["root"])
    assert state["aliases"] == {"champion": champion, "candidate": None, "previous": None}
    split = state["split"]
    assert split.champion == champion and split.is_all_champion and split.candidate_weight == 0.0
    rt = state["rt"]
    tags = rt.registry.get_version(MODEL, version).tags
    assert tags["stagegate.status"] == "rolled_back" and "revenue_per_user" in tags["stagegate.reason"]
    verdicts = rt.events.verdicts(result.promotion_id, "canary")
    failed = verdicts[verdicts["outcome"] == "FAIL"]
    assert len(failed) == 1 and failed.iloc[0]["action"] == "rollback"
    # The verdict was persisted before the rollback transition.
    transitions = rt.events.transitions(result.promotion_id)
    rollback_at = next(t["at"] for t in transitions if t["to_state"] == "rolled_back_pending")
    assert failed.iloc[0]["at"] <= rollback_at
    assert rt.events.promotion(result.promotion_id)["state"] == "rolled_back"


def test_cli_refuses_bad_input_and_changes_nothing(workspace: dict, tmp_path: Path) -> None:
    from stagegate.cli import app

    before = _state(workspace["root"])
    runner = CliRunner()
    missing = runner.invoke(
        app,
        ["promote", "--model", MODEL, "--version", "999", "--policy", str(write_policy(tmp_path / "p.yaml"))],
    )
    assert missing.exit_code == 2 and "no version '999'" in missing.output
    unknown = runner.invoke(
        app,
        ["promote", "--model", "nope", "--version", "1", "--policy", str(write_policy(tmp_path / "p.yaml"))],
    )
    assert unknown.exit_code == 2 and "'nope' does not exist" in unknown.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": MODEL, "stages": {"offline": {"gates": [{"type": "magic"}]}}}))
    invalid = runner.invoke(app, ["promote", "--model", MODEL, "--version", "2", "--policy", str(bad)])
    assert invalid.exit_code == 2 and "stages.offline.gates[0].type" in invalid.output
    after = _state(workspace["root"])
    assert after["aliases"] == before["aliases"] and after["split"] == before["split"]
    assert after["rt"].events.promotions(MODEL) == []


def test_cli_validates_policies_and_registers_candidates(workspace: dict, tmp_path: Path) -> None:
    from stagegate.cli import app

    runner = CliRunner()
    root = Path(__file__).resolve().parents[2]
    good = runner.invoke(
        app, ["policy", "validate", str(root / "policies/demo.yaml"), str(root / "policies/default.yaml")]
    )
    assert good.exit_code == 0 and good.output.count(": ok") == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": MODEL, "stages": {"canary": {"steps": [{"weight": 500}]}}}))
    refused = runner.invoke(app, ["policy", "validate", str(bad)])
    assert refused.exit_code == 2 and f"{bad}: stages.canary.steps[0].weight" in refused.output

    registered = runner.invoke(
        app, ["candidates", "register", str(root / "recipes/better.yaml"), "--model", MODEL]
    )
    assert registered.exit_code == 0, registered.output
    # the answer line (progress and MLflow's own "Creating a new version of this model" go to stderr)
    version = re.search(rf"registered {MODEL} version (\d+) from", registered.output).group(1)
    from stagegate.runtime import Runtime

    info = Runtime.from_env().registry.get_version(MODEL, version)
    assert info.tags["stagegate.status"] == "registered"
    status = runner.invoke(app, ["status", "--model", MODEL], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    champion = workspace["info"]["champion_version"]
    assert f"champion v{champion}" in status.output and "registered" in status.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("family: mf\nknobs: {factors: -3}\n")
    refused = runner.invoke(app, ["candidates", "register", str(broken)])
    assert refused.exit_code == 2 and str(broken) in refused.output


def test_approved_holds_resume_the_canary_step_and_finish_the_rollout(
    workspace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every look holds (a gate on an impossible revenue, on_fail: hold) and a human approves each hold: the
    canary still runs its second step, and the approved rollout ends with everyone on the new champion."""
    import flows.promote as promote_flow
    from flows.approval import ApprovalResult
    from flows.context import runtime

    asked: list[str] = []

    def approve(ctx, point: str, note: str) -> ApprovalResult:  # the answer a release manager gives
        asked.append(point)
        events = runtime().events
        events.transition(ctx.promotion_id, "awaiting_approval", f"{point}: waiting for alice")
        events.transition(ctx.promotion_id, "approval_granted", f"{point}: approved by alice")
        return ApprovalResult(True, "alice", "looks fine to me")

    monkeypatch.setattr(promote_flow, "wait_for_approval", approve)
    holding = [{"type": "threshold", "metric": "revenue_per_user", "max": -1.0, "on_fail": "hold"}]
    policy = tmp_path / "p.yaml"
    stages = {
        "shadow": FAST_STAGES["shadow"],
        "canary": {**FAST_STAGES["canary"], "max_hours_per_step": 6, "gates": holding},
        "rollout": {"bake": "6h", "batch_hours": 6, "holdback": 0.2, "gates": holding},
    }
    policy.write_text(
        yaml.safe_dump({"model": MODEL, "approvals": {"approvers": ["alice"]}, "stages": stages})
    )
    version = workspace["versions"]["better"]
    result = promote_flow.promote(model=MODEL, version=version, policy=str(policy))

    assert result.outcome == "promoted", result.reason
    assert asked == ["hold in canary", "hold in canary", "hold in rollout"]
    state = _state(workspace["root"])
    assert state["split"].champion == version and state["split"].is_all_champion  # not the 80/20 holdback
    assert state["split"].candidate is None
    rt = state["rt"]
    canary = rt.events.verdicts(result.promotion_id, "canary")
    assert sorted(set(canary["step"])) == [1, 2]  # the second step ran after the first hold was approved
    reasons = [t["reason"] for t in rt.events.transitions(result.promotion_id)]
    assert any("canary step 2" in r for r in reasons) and "resuming rollout after an approved hold" in reasons
    assert rt.events.promotion(result.promotion_id)["state"] == "promoted"
