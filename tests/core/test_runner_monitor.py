"""The guardrail monitor's plan on the one look loop: it watches the current step with no deadline, keeps
looking through a hold or a pass, tolerates a flaky metric query (error streaks, as the stages do) and
ends on a rollback or when told to stop."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import flows.monitor as monitor
from flows.stages.runner import Parts, run_looks
from simulator.traffic import FileTrafficController
from stagegate.decision import Decision
from stagegate.events.store import EventStore
from stagegate.policy import parse_policy
from stagegate.policy.gates import configure_stage, judge_look
from stagegate.ports import Measurement, Window
from stagegate.traffic import Split
from tests.core.test_runner import ReadyClock, measurement

CANARY = {
    "steps": [{"weight": 50}],
    "batch_hours": 6,
    "gates": [{"type": "guardrail", "metric": "error_rate", "max": 0.05, "on_fail": "rollback"}],
}


@pytest.fixture
def watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    policy = parse_policy({"model": "m", "stages": {"canary": CANARY}})
    pid = store.open_promotion(
        model="m", version="2", policy_path="p", policy=policy.model_dump(mode="json"), champion_version="1"
    )
    traffic = FileTrafficController(tmp_path / "traffic.json")
    traffic.set_split(Split(champion="1", candidate="2", candidate_weight=0.5))
    monkeypatch.setattr(monitor, "runtime", lambda: SimpleNamespace(events=store, traffic=traffic))
    return monitor.context_from_ledger(pid), policy


def test_the_monitor_watches_the_current_step_without_a_deadline(watched: Any) -> None:
    ctx, _ = watched
    plan = monitor.monitor_plan(ctx, "canary", interval_seconds=5, max_looks=7, serve=True)
    (step,) = plan.steps
    assert plan.watch and plan.whole_step and plan.max_looks == 7 and not plan.mirrored
    assert step.deadline_hours is None and step.weight == 0.5 and step.number == 0
    assert plan.every == timedelta(hours=6)  # one of the stage's batches per look on the simulated world
    real = monitor.monitor_plan(ctx, "canary", interval_seconds=5, max_looks=7, serve=False)
    assert real.every == timedelta(seconds=5)  # against real traffic: the interval, on the wall clock


def test_one_flaky_query_does_not_roll_back_a_breach_does(watched: Any) -> None:
    ctx, policy = watched
    gates = configure_stage(policy.stages.canary)
    decisions: list[Decision] = []
    calls = {"n": 0}

    def measure(window: Window, expect: Any) -> Measurement:
        calls["n"] += 1
        assert window.start is None  # the whole step so far, also what came before the monitor
        if calls["n"] == 2:
            raise ConnectionError("metrics backend timed out")
        return measurement(window, 2000, candidate_error=0.3 if calls["n"] >= 5 else 0.001, seed=calls["n"])

    def judge(*, step: int, look: int, evidence: Any, **kwargs: Any) -> Any:
        result = judge_look(gates, evidence, **kwargs)
        decisions.append(result.decision)
        return result

    plan = monitor.monitor_plan(ctx, "canary", interval_seconds=0, max_looks=20, serve=True)
    result = run_looks(plan, Parts(clock=ReadyClock(), measure=measure, judge=judge))
    assert result.decision is Decision.ROLLBACK and "error_rate" in result.reason and result.looks == 5
    # looks 1, 3, 4 passed (an advance is the human's to decide: keep watching), look 2 could not measure
    assert decisions == [
        Decision.ADVANCE,
        Decision.CONTINUE,
        Decision.ADVANCE,
        Decision.ADVANCE,
        Decision.ROLLBACK,
    ]


def test_the_monitor_stops_when_the_promotion_stops_waiting(watched: Any) -> None:
    ctx, policy = watched
    gates = configure_stage(policy.stages.canary)
    stops = iter([None, None, "promotion is approval_granted: stopped watching"])
    plan = monitor.monitor_plan(ctx, "canary", interval_seconds=0, max_looks=20, serve=True)
    parts = Parts(
        clock=ReadyClock(),
        measure=lambda w, e: measurement(w, 2000),
        judge=lambda *, step, look, evidence, **kw: judge_look(gates, evidence, **kw),
        stop=lambda: next(stops),
    )
    result = run_looks(plan, parts)
    assert result.decision is Decision.CONTINUE and result.looks == 2 and "stopped watching" in result.reason


def test_a_monitor_that_does_not_serve_waits_real_time(watched: Any) -> None:
    ctx, policy = watched
    gates = configure_stage(policy.stages.canary)
    plan = monitor.monitor_plan(ctx, "canary", interval_seconds=0.05, max_looks=2, serve=False)
    clock = monitor.monitor_clock(0.05)  # not the runtime's clock: a world-less promotion has no sim time
    started = clock.now()
    parts = Parts(
        clock=clock,
        measure=lambda w, e: measurement(w, 2000),
        judge=lambda *, step, look, evidence, **kw: judge_look(gates, evidence, **kw),
    )
    result = run_looks(plan, parts)
    assert result.decision is Decision.CONTINUE and result.looks == 2
    assert clock.now() - started >= timedelta(seconds=0.1)


def test_the_monitor_counts_a_promotion_abandoned_when_its_run_ended_or_its_lease_lapsed() -> None:
    """A SIGKILLed promote leaves its flow run Paused for ever: the lease (or a dead owner) tells."""
    import socket
    from datetime import UTC, datetime, timedelta

    from flows.monitor import abandonment
    from stagegate.events.store import process_owner

    now = datetime.now(UTC)
    alive = {
        "state": "awaiting_approval",
        "flow_run_id": "r-1",
        "owner": process_owner(),
        "lease_expires_at": now + timedelta(minutes=2),
    }
    assert abandonment(alive, run_ended=False, now=now) is None
    assert "flow run r-1 ended" in abandonment(alive, run_ended=True, now=now)
    lapsed = {**alive, "lease_expires_at": now - timedelta(seconds=1)}
    assert "lease expired" in abandonment(lapsed, run_ended=False, now=now)
    gone = {**alive, "owner": f"{socket.gethostname()}:999999999:0"}
    assert "is gone" in abandonment(gone, run_ended=False, now=now)
    answered = {**lapsed, "state": "approval_granted"}  # not waiting any more: not the monitor's to judge
    assert abandonment(answered, run_ended=True, now=now) is None
