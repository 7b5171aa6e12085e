"""Approval points through the real promote flow on the session's Prefect server and MLflow server:
refused approvers, approval and rejection from the shell, the policy's timeout, and what gets recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagegate.cli import NOT_PROMOTED
from tests.ops.servers import (
    Promo,
    Receiver,
    RunningStack,
    cli,
    finish,
    log_tail,
    make_promo,
    paused_run,
    start_promotion,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def promos(
    stack: RunningStack, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Promo]:
    """Three promotions started at once (they share the server, not a workspace)."""
    base = tmp_path_factory.mktemp("approval")
    env = {"STAGEGATE_NOTIFY_URL": receiver.url}
    made = {
        "approve": make_promo(base, stack, approvers=["alice", "release-manager"], extra_env=env),
        "reject": make_promo(base, stack, approvers=["alice"], extra_env=env),
        "timeout": make_promo(base, stack, approvers=["alice"], timeout="5s", extra_env=env),
    }
    for promo in made.values():
        start_promotion(promo)
    return made


def _ledger(promo: Promo) -> tuple[dict, list[dict]]:
    rt = promo.runtime()
    row = rt.events.promotions(promo.model)[0]
    return row, rt.events.transitions(row["id"])


def _approval_records(promo: Promo, run_id: str) -> list[dict]:
    rt = promo.runtime()
    client = rt.registry.client
    files = [a.path for a in client.list_artifacts(run_id, "approvals")]
    return [json.loads(Path(client.download_artifacts(run_id, f)).read_text()) for f in sorted(files)]


def _form_description(stack: RunningStack, run: str, timeout: float = 20.0) -> str:
    """The description of the approval form the paused run shows now (its latest pause's)."""
    import time
    from uuid import UUID

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline, text = time.monotonic() + timeout, ""
    with temporary_settings({PREFECT_API_URL: stack.api}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            keys = client.filter_flow_run_input(UUID(run), key_prefix="paused", limit=100, exclude_keys=set())
            described = sorted((i for i in keys if i.key.endswith("-description")), key=lambda i: i.created)
            text = json.loads(described[-1].value) if described else ""
            if "Refused" in text:
                return text
            time.sleep(0.5)
    return text


def test_refused_approver_then_approval_from_the_shell(
    stack: RunningStack, promos: dict[str, Promo], receiver: Receiver
) -> None:
    promo = promos["approve"]
    run = paused_run(stack, promo)

    refused = cli(
        promo, "approve", run, "--approver", "mallory", "--token", "sgt_guess", "--reason", "trust me"
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused" in refused.stdout and "not on the policy's approver list" in refused.stderr
    assert paused_run(stack, promo, timeout=20) == run  # still waiting
    # the form shown now says why: whoever submitted sees the refusal in the UI
    assert "Refused: the answer from 'mallory': not on the approver list" in _form_description(stack, run)

    # alice's name with another approver's token proves nothing
    impostor = cli(promo, "approve", run, "--approver", "alice", "--token", promo.tokens["release-manager"])
    assert impostor.returncode == 1 and "refused" in impostor.stdout, impostor.stdout + impostor.stderr
    assert paused_run(stack, promo, timeout=20) == run

    ok = cli(
        promo,
        "approve",
        run,
        "--approver",
        "alice",
        "--token",
        promo.tokens["alice"],
        "--reason",
        "verdicts look fine",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "before rollout: approved" in ok.stdout
    assert finish(promo) == 0, log_tail(promo)

    row, transitions = _ledger(promo)
    assert row["state"] == "promoted", log_tail(promo)
    reasons = [(t["to_state"], t["reason"]) for t in transitions]
    assert (
        "awaiting_approval",
        "before rollout: refused answer from 'mallory' (not on the approver list)",
    ) in (reasons)
    assert (
        "awaiting_approval",
        "before rollout: refused answer from 'alice' (the token does not match 'alice''s)",
    ) in (reasons)
    assert ("approval_granted", "before rollout: approved by alice: verdicts look fine") in reasons
    # who, when, why and which evidence: in MLflow ...
    rt = promo.runtime()
    tags = rt.registry.client.get_run(row["mlflow_run_id"]).data.tags
    assert tags["stagegate.approval.before-rollout.approver"] == "alice"
    assert tags["stagegate.approval.before-rollout.decision"] == "approved"
    assert tags["stagegate.approval.before-rollout.refused"] == "mallory, alice"
    records = _approval_records(promo, row["mlflow_run_id"])
    assert sorted(r["decision"] for r in records) == ["approved", "refused", "refused"]
    assert all("sgt_" not in json.dumps(r) for r in records)  # no token in what is recorded
    approved = next(r for r in records if r["decision"] == "approved")
    assert approved["reason"] == "verdicts look fine" and approved["at"]
    assert approved["evidence"]["mlflow_artifacts"] == "evidence/before-rollout"
    assert len(approved["evidence"]["digest"]) == 16
    evidence = {
        a.path for a in rt.registry.client.list_artifacts(row["mlflow_run_id"], "evidence/before-rollout")
    }
    assert {"evidence/before-rollout/report.md", "evidence/before-rollout/report.html"} <= evidence
    # ... and as Prefect artifacts of the flow run; the evidence artifact links to the MLflow run.
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api}), get_client(sync_client=True) as client:
        from uuid import UUID

        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run)]))
        )
    by_key = {}
    for a in arts:
        by_key.setdefault(a.key, []).append(a)
    assert {
        "evidence-before-rollout",
        "approval-before-rollout",
        "evidence-final",
        "promotion-summary",
    } <= set(by_key)
    assert any("alice" in a.data for a in by_key["approval-before-rollout"])
    assert not any("sgt_" in (a.data or "") for group in by_key.values() for a in group)
    # the answers (with their tokens) were deleted from Prefect once read
    with temporary_settings({PREFECT_API_URL: stack.api}), get_client(sync_client=True) as client:
        inputs = client.filter_flow_run_input(UUID(run), key_prefix="", limit=100, exclude_keys=set())
    assert not any(promo.tokens["alice"] in i.value for i in inputs), [i.key for i in inputs]
    assert stack.mlflow in by_key["evidence-before-rollout"][0].data
    # announced: paused, refused, approved, promoted
    pid = row["id"]
    kinds = receiver.kinds(pid)
    assert kinds[:1] == ["paused"] and {"approval_refused", "approved", "promoted"} <= set(kinds), kinds
    paused = next(r for r in receiver.received if r.get("promotion_id") == pid and r["kind"] == "paused")
    assert paused["url"] == f"{stack.ui}/runs/flow-run/{run}"


def test_rejection_from_the_shell_rolls_back(
    stack: RunningStack, promos: dict[str, Promo], receiver: Receiver
) -> None:
    promo = promos["reject"]
    run = paused_run(stack, promo)
    done = cli(
        promo,
        "reject",
        run,
        "--approver",
        "alice",
        "--token",
        promo.tokens["alice"],
        "--reason",
        "not this week",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert finish(promo) == NOT_PROMOTED, log_tail(promo)
    row, transitions = _ledger(promo)
    assert row["state"] == "rolled_back"
    assert "approval before rollout refused: not this week" in row["reason"]
    assert ("approval_denied", "before rollout: rejected by alice: not this week") in [
        (t["to_state"], t["reason"]) for t in transitions
    ]
    rt = promo.runtime()
    assert rt.registry.get_alias(promo.model, "champion").version == "1"
    assert rt.registry.get_alias(promo.model, "candidate") is None
    assert rt.registry.get_version(promo.model, "2").tags["stagegate.status"] == "rolled_back"
    assert rt.traffic.get_split().is_all_champion
    assert "rolled_back" in receiver.kinds(row["id"])


def test_no_answer_before_the_timeout_is_a_rejection(stack: RunningStack, promos: dict[str, Promo]) -> None:
    promo = promos["timeout"]
    assert finish(promo) == NOT_PROMOTED, log_tail(promo)
    row, transitions = _ledger(promo)
    states = [t["to_state"] for t in transitions]
    assert "approval_timed_out" in states and row["state"] == "rolled_back", states
    assert "no approval within 5s" in row["reason"]
    records = _approval_records(promo, row["mlflow_run_id"])
    assert [r["decision"] for r in records] == ["timed_out"]
