"""The ledger checkpoint of the look loop (flows.stages.checkpoint): a loop that stops at any checkpoint and
is rebuilt from the checkpoint's JSON alone (its evidence history measured again) judges exactly what an
uninterrupted loop judges: the same steps, look numbers, due times, history lengths and decisions."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flows.stages.canary import canary_plan
from flows.stages.checkpoint import CheckpointError, restore_state, to_checkpoint
from flows.stages.runner import LoopState, Parts, run_looks
from stagegate.decision import Decision
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample
from stagegate.policy import parse_policy
from stagegate.policy.gates import configure_stage, judge_look
from stagegate.ports import SIM_EPOCH, Look, Measurement, Wait, Window

GATES = [
    {"type": "sequential", "metric": "revenue_per_user", "method": "always_valid", "mde": 0.1},
    {"type": "guardrail", "metric": "error_rate", "max": 0.05},
]


class ReadyClock:
    def __init__(self) -> None:
        self.at = SIM_EPOCH

    def now(self) -> datetime:
        return self.at

    def wait(self, look: Look) -> Wait:
        self.at = max(self.at, look.due)
        return Wait(ready=True, due=look.due)


def measure(window: Window, expect: Any) -> Measurement:
    """Deterministic in the window alone (as an append-only event store is): users grow with the window."""
    hours = (window.end - (window.start or SIM_EPOCH)).total_seconds() / 3600
    seed = int(window.end.timestamp()) * 10 + window.step
    rng = np.random.default_rng(seed)
    n = int(100 * hours)
    arms = {}
    for arm, offset, lift in ((CHAMPION, 0, 1.0), (CANDIDATE, 10**6, 1.02)):
        requests = rng.integers(1, 6, n).astype(float)
        arms[arm] = ArmSample(
            np.arange(n) + offset,
            {
                "requests": requests,
                "errors": rng.binomial(requests.astype(int), 0.001).astype(float),
                "revenue_per_user": rng.exponential(10.0 * lift, n),
            },
        )
    return Measurement(window, arms, n_requests=int(sum(a.metrics["requests"].sum() for a in arms.values())))


class Crash(Exception):
    pass


def _config() -> Any:
    canary = {
        "steps": [{"weight": 5}, {"weight": 20}, {"weight": 50}],
        "batch_hours": 2,
        "max_hours_per_step": 8,
        "gates": GATES,
    }
    return parse_policy({"model": "m", "stages": {"canary": canary}}).stages.canary


def _run(crash_at: int | None) -> tuple[list[tuple[Any, ...]], int]:
    """The judged looks of a whole canary; with ``crash_at``, the loop dies at every ``crash_at``-th
    checkpoint and is rebuilt from that checkpoint's JSON. Returns the looks and how many restarts."""
    config = _config()
    plan = canary_plan("p", config)
    gates = configure_stage(config)
    judged: list[tuple[Any, ...]] = []
    saved: list[str] = []

    def judge(*, step: int, look: int, evidence: Any, **kwargs: Any) -> Any:
        result = judge_look(gates, evidence, **kwargs)
        judged.append((step, look, evidence.look, len(evidence.history), result.decision, result.reason))
        return result

    def checkpoint(state: LoopState, held: str | None) -> None:
        saved.append(json.dumps(to_checkpoint("canary", state, held=held)))
        if crash_at is not None and len(saved) % crash_at == 0:
            raise Crash

    clock = ReadyClock()
    parts = Parts(clock=clock, measure=measure, judge=judge, checkpoint=checkpoint)
    resume: LoopState | None = None
    restarts = 0
    while True:
        try:
            result = run_looks(plan, parts, resume)
            if result.decision is Decision.HOLD and result.resume is not None:  # approved: go on
                judged.append(("hold", result.reason))
                resume = result.resume
                continue
            break
        except Crash:
            restarts += 1
            data = json.loads(saved[-1])
            if data["held"] is not None:  # died at a hold: the flow asks again, and it is approved
                judged.append(("hold", data["held"]))
            resume = restore_state(plan, data, measure)
    judged.append(("end", result.decision, result.reason, result.looks))
    return judged, restarts


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_a_loop_rebuilt_from_any_checkpoint_judges_what_the_uninterrupted_loop_judges(crash_at: int) -> None:
    reference, none = _run(None)
    assert none == 0 and {r[0] for r in reference} >= {1, 2, 3}  # all three steps judged
    assert max(r[3] for r in reference if isinstance(r[0], int)) >= 4  # the sequential history spans steps
    resumed, restarts = _run(crash_at)
    assert restarts >= len(reference) // crash_at - 1
    assert resumed == reference


def test_a_held_state_and_a_deferred_look_are_kept_in_the_checkpoint() -> None:
    state = LoopState(step_index=1, looks_done=2, step_start=SIM_EPOCH, total_looks=5, streaks={"g": 1})
    data = to_checkpoint("canary", state, held="step 2 (20%): needs a human", resume_at=SIM_EPOCH)
    assert data["held"].startswith("step 2") and data["resume_at"] == SIM_EPOCH.isoformat()
    back = restore_state(canary_plan("p", _config()), json.loads(json.dumps(data)), measure)
    assert (back.step_index, back.looks_done, back.step_start, back.total_looks) == (1, 2, SIM_EPOCH, 5)
    assert back.streaks == {"g": 1} and back.history == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stage": "shadow"}, "not 'canary'"),
        ({"version": 7}, "version 7"),
        ({"step_index": 9}, "lacks"),
        ({"step_start": "yesterday"}, "not an ISO 8601"),
        ({"step_start": "2026-01-01T00:00:00"}, "no time zone"),
        ({"looks_done": None}, "malformed"),
    ],
)
def test_a_checkpoint_that_cannot_be_resumed_from_is_refused(change: dict, message: str) -> None:
    data = {**to_checkpoint("canary", LoopState(step_start=SIM_EPOCH)), **change}
    with pytest.raises(CheckpointError, match=message):
        restore_state(canary_plan("p", _config()), data, measure)


def test_stagegate_resume_refuses_what_it_cannot_resume_before_prefect_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 with the reason, from the ledger alone: unknown id, ended, no checkpoint, a live owner."""
    from typer.testing import CliRunner

    from flows.promote import promote  # imported here so that the timing below excludes the import
    from stagegate.cli import app
    from stagegate.events.store import EventStore

    assert promote is not None
    monkeypatch.setenv("STAGEGATE_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv("STAGEGATE_CONNECTIONS", raising=False)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("STAGEGATE_EVENTS_URL", url)
    # The promotion's owner: another live process of this host (the test runner's parent).
    store = EventStore(url, owner=f"{socket.gethostname()}:{os.getppid()}:")

    def resume(pid: str) -> Any:
        started = time.monotonic()
        result = CliRunner().invoke(app, ["resume", pid])
        assert time.monotonic() - started < 10, "refused before Prefect starts"
        return result

    result = resume("no-such-id")
    assert result.exit_code == 2 and "no promotion 'no-such-id'" in result.output, result.output
    pid = store.open_promotion(model="m", version="2", policy_path="p", policy={}, champion_version="1")
    result = resume(pid)
    assert result.exit_code == 2 and "no checkpoint of a traffic stage" in result.output, result.output
    store.transition(pid, "canary", "entering canary", stage="canary")
    store.save_checkpoint(pid, to_checkpoint("canary", LoopState(step_start=SIM_EPOCH)))
    result = resume(pid)
    assert result.exit_code == 2 and "held by a live process" in result.output, result.output
    store.transition(pid, "rolled_back_pending", "test")
    store.transition(pid, "rolled_back", "test")
    result = resume(pid)
    assert result.exit_code == 2 and "has ended (rolled_back)" in result.output, result.output
