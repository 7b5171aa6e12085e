"""A look the wall clock may not block for: the promotion flow records the deferral in the ledger, keeps the
promotion's lease until the look is due, and ends with the resume time (flows.promote._defer)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

import flows.promote as promote_flow
from flows.gating import StageOutcome
from flows.stages.runner import LoopState, ResumeLater
from stagegate.adapters.clock import WallClock
from stagegate.decision import Decision
from stagegate.events.store import EventStore
from stagegate.ports import next_look


def test_a_deferred_look_is_recorded_and_keeps_the_lease_until_it_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    pid = store.open_promotion(model="m", version="2", policy_path="p", policy={}, champion_version="1")
    store.transition(pid, "canary", "entering canary", stage="canary")
    now = datetime.now(UTC)
    host = SimpleNamespace(events=store, clock=WallClock(60, now=lambda: now))
    monkeypatch.setattr(promote_flow, "runtime", lambda: host)
    monkeypatch.setattr(promote_flow, "get_run_logger", lambda: logging.getLogger("test"))
    look = next_look(pid, "canary", 1, now, timedelta(hours=12), 0)
    later = ResumeLater("canary", look, look.due, LoopState(step_start=now))
    ctx = SimpleNamespace(promotion_id=pid, model="m", version="2", mlflow_run_id="run")
    done = [StageOutcome("shadow", Decision.ADVANCE, "all gates passed")]

    result = promote_flow._defer(ctx, "canary", later, done)

    assert result.outcome == "deferred" and not result.ledger_closed
    assert result.resume_at == look.due.isoformat() and look.due.isoformat() in result.reason
    assert result.stages == [{"stage": "shadow", "decision": "advance", "reason": "all gates passed"}]
    row = store.promotion(pid)
    assert row["state"] == "canary" and "deferred" in row["reason"] and "resume at" in row["reason"]
    lease = row["lease_expires_at"]
    lease = lease if lease.tzinfo else lease.replace(tzinfo=UTC)
    assert lease >= look.due  # nobody takes it over as abandoned before the look is due
