"""The one look loop (flows.stages.runner) with the real gates and decision rules, a fake clock and a fake
metric source: approved holds resume where they held, a wall clock that may not block defers the look
without judging, a bake runs its full time and ends on time, shadow is judged once on enough requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from flows.stages.canary import canary_plan
from flows.stages.runner import LoopResult, Parts, Plan, ResumeLater, Step, run_looks
from stagegate.adapters.clock import WallClock
from stagegate.decision import Decision
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample
from stagegate.policy import parse_policy
from stagegate.policy.gates import configure_stage, judge_look
from stagegate.ports import SIM_EPOCH, Look, Measurement, Wait, Window


class ReadyClock:
    """A clock that is at every look's due time as soon as it is asked (the simulated clock's contract)."""

    def __init__(self, start: datetime = SIM_EPOCH) -> None:
        self.at = start
        self.waited: list[Look] = []

    def now(self) -> datetime:
        return self.at

    def wait(self, look: Look) -> Wait:
        self.waited.append(look)
        self.at = max(self.at, look.due)
        return Wait(ready=True, due=look.due)


def _arm(n: int, error_rate: float, rng: np.random.Generator, offset: int) -> ArmSample:
    requests = rng.integers(5, 15, n).astype(float) if n > 100 else np.ones(n)
    errors = rng.binomial(requests.astype(int), error_rate).astype(float)
    return ArmSample(np.arange(n) + offset, {"requests": requests, "errors": errors})


def measurement(window: Window, users: int, candidate_error: float = 0.001, seed: int = 0) -> Measurement:
    rng = np.random.default_rng(seed)
    arms = {CHAMPION: _arm(users, 0.001, rng, 0), CANDIDATE: _arm(users, candidate_error, rng, 10**6)}
    return Measurement(window, arms, n_requests=int(sum(a.metrics["requests"].sum() for a in arms.values())))


def _canary(steps: int, hours_per_step: float, **gate: Any) -> Any:
    spec = {"type": "guardrail", "metric": "error_rate", "max": 0.05, **gate}
    canary = {
        "steps": [{"weight": 10 * (i + 1)} for i in range(steps)],
        "batch_hours": 12,
        "max_hours_per_step": hours_per_step,
        "gates": [spec],
    }
    return parse_policy({"model": "m", "stages": {"canary": canary}}).stages.canary


class Recorder:
    """judge() and enter_step() that remember what they saw."""

    def __init__(self, config: Any) -> None:
        self.gates = configure_stage(config)
        self.judged: list[tuple[int, int, Decision]] = []
        self.entered: list[int] = []

    def judge(self, *, step: int, look: int, evidence: Any, **kwargs: Any) -> Any:
        result = judge_look(self.gates, evidence, **kwargs)
        self.judged.append((step, look, result.decision))
        return result

    def enter(self, step: Step, start: datetime) -> None:
        self.entered.append(step.number)


def _parts(rec: Recorder, measure: Any, clock: Any | None = None) -> Parts:
    return Parts(clock=clock or ReadyClock(), measure=measure, judge=rec.judge, enter_step=rec.enter)


def test_hold_at_a_step_deadline_resumes_with_the_next_step_not_the_next_stage() -> None:
    config = _canary(3, 12)  # one look per step, at its deadline
    rec = Recorder(config)

    def measure(window: Window, expect: Any) -> Measurement:  # step 1 too small to prove anything
        return measurement(window, 20 if window.step == 1 else 2000, seed=window.step)

    parts = _parts(rec, measure)
    plan = canary_plan("p", config)
    held = run_looks(plan, parts)
    assert held.decision is Decision.HOLD and held.reason.startswith("step 1 (10%)")
    assert held.resume is not None and held.resume.step_index == 1  # the step's time is up: next step
    done = run_looks(plan, parts, held.resume)
    assert done.decision is Decision.ADVANCE and done.reason == "all 3 steps passed"
    assert rec.entered == [1, 2, 3]  # steps 2 and 3 ran after the approval
    assert [(s, lk) for s, lk, _ in rec.judged] == [(1, 1), (2, 1), (3, 1)]
    assert done.looks == 3  # looks are counted across the hold


def test_hold_before_the_deadline_resumes_the_same_step_with_its_next_look() -> None:
    config = _canary(2, 36, on_fail="hold")  # three looks per step
    rec = Recorder(config)
    calls = {"n": 0}

    def measure(window: Window, expect: Any) -> Measurement:  # the first look is broken, then healthy
        calls["n"] += 1
        return measurement(window, 2000, candidate_error=0.5 if calls["n"] == 1 else 0.001, seed=calls["n"])

    parts = _parts(rec, measure)
    plan = canary_plan("p", config)
    held = run_looks(plan, parts)
    assert held.decision is Decision.HOLD and "error_rate" in held.reason
    assert held.resume is not None and (held.resume.step_index, held.resume.looks_done) == (0, 1)
    done = run_looks(plan, parts, held.resume)
    assert done.decision is Decision.ADVANCE
    assert rec.entered == [1, 2]  # step 1 was not entered again: its traffic never moved
    assert [(s, lk) for s, lk, _ in rec.judged] == [(1, 1), (1, 2), (2, 1)]
    assert len(held.resume.history) == 1  # the held look's evidence stays in the sequential history


def test_a_look_due_later_than_the_clock_may_block_is_deferred_unjudged() -> None:
    config = _canary(1, 12)
    rec = Recorder(config)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slept: list[float] = []
    clock = WallClock(max_block_seconds=60, now=lambda: start, sleep=slept.append)
    measured: list[Window] = []
    plan = canary_plan("p", config)
    with pytest.raises(ResumeLater) as caught:
        run_looks(plan, _parts(rec, lambda w, e: measured.append(w), clock))
    later = caught.value
    assert later.resume_at == start + timedelta(hours=12) == later.look.due
    assert "resume at 2026-01-01T12:00:00+00:00" in str(later)
    assert rec.judged == [] and measured == [] and slept == []  # neither judged, measured nor slept
    assert rec.entered == [1] and later.state.step_start == start and later.state.looks_done == 0


def test_a_wall_clock_within_its_block_waits_and_judges() -> None:
    config = _canary(1, 12)
    config = config.model_copy(update={"batch_hours": 1 / 3600, "max_hours_per_step": 1 / 3600})
    rec = Recorder(config)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]

    def sleep(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)

    clock = WallClock(max_block_seconds=5, now=lambda: now[0], sleep=sleep)
    result = run_looks(canary_plan("p", config), _parts(rec, lambda w, e: measurement(w, 2000), clock))
    assert result.decision is Decision.ADVANCE and now[0] == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_a_bake_runs_its_full_time_and_its_last_look_is_due_at_the_deadline() -> None:
    config = _canary(1, 12)
    rec = Recorder(config)
    step = Step(number=0, weight=0.9, label="during bake", deadline_hours=10, bake=True)
    plan = Plan("p", "rollout", (step,), timedelta(hours=6))
    clock = ReadyClock()
    windows: list[Window] = []

    def measure(window: Window, expect: Any) -> Measurement:
        windows.append(window)
        assert tuple(expect) == (CHAMPION, CANDIDATE)  # the holdback keeps both arms
        return measurement(window, 2000)

    result = run_looks(plan, _parts(rec, measure, clock))
    assert result.decision is Decision.ADVANCE
    assert [lk.due - SIM_EPOCH for lk in clock.waited] == [timedelta(hours=6), timedelta(hours=10)]
    assert [d for _, _, d in rec.judged] == [Decision.ADVANCE, Decision.ADVANCE]  # the first did not end it
    assert all(w.start == SIM_EPOCH and w.step == 0 for w in windows)  # cumulative from the step's start


def test_shadow_is_judged_once_on_enough_mirrored_requests() -> None:
    shadow = parse_policy(
        {
            "model": "m",
            "stages": {
                "shadow": {
                    "min_requests": 100,
                    "gates": [{"type": "threshold", "metric": "requests", "min": 1}],
                }
            },
        }
    ).stages.shadow
    rec = Recorder(shadow)
    step = Step(number=0, weight=0.0, deadline_hours=48, min_samples=100, judge_early=False)
    plan = Plan("p", "shadow", (step,), timedelta(hours=2), mirrored=True, sample="requests")
    seen = {"n": 0}

    def measure(window: Window, expect: Any) -> Measurement:
        assert window.mirrored and tuple(expect) == (CHAMPION, CANDIDATE)
        seen["n"] += 1
        return measurement(window, 10 * seen["n"] if seen["n"] < 3 else 2000)

    result: LoopResult = run_looks(plan, _parts(rec, measure))
    assert result.decision is Decision.ADVANCE and seen["n"] == 3
    assert [(s, lk) for s, lk, _ in rec.judged] == [(0, 3)]  # looks 1-2 had too few requests: not judged
