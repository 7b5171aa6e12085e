"""Consecutive-error limit: a failed metric query is an ERROR that counts before it acts (issue 8, item 7).

The stages' look loop (flows.stages.runner, with the canary's plan) runs with the real gates and decision
rule, a clock that is ready at once and a fake metric source: one that fails once must not roll the canary
back; one that always fails must roll it back after exactly ``consecutive_error_limit`` tolerated looks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flows.stages.canary import canary_plan
from flows.stages.runner import Parts, run_looks
from stagegate.decision import Decision, update_error_streaks
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample
from stagegate.policy import parse_policy
from stagegate.policy.gates import DEFAULT_ERROR_LIMIT, configure_stage, judge_look
from stagegate.ports import Measurement, Window
from stagegate.verdict import Outcome
from tests.core.test_runner import ReadyClock


def _policy(limit: int | None, steps: int = 2, **actions: str) -> Any:
    gate: dict[str, Any] = {"type": "guardrail", "metric": "error_rate", "max": 0.05, **actions}
    if limit is not None:
        gate["consecutive_error_limit"] = limit
    canary = {
        "steps": [{"weight": 10 * (i + 1)} for i in range(steps)],
        "batch_hours": 12,
        "max_hours_per_step": 36,
        "gates": [gate],
    }
    return parse_policy({"model": "m", "stages": {"canary": canary}}).stages.canary


def _arm(n: int, rng: np.random.Generator, offset: int) -> ArmSample:
    requests = rng.integers(5, 15, n).astype(float) if n > 100 else np.ones(n)
    errors = rng.binomial(requests.astype(int), 0.001).astype(float)
    return ArmSample(np.arange(n) + offset, {"requests": requests, "errors": errors})


def _healthy(window: Window, users: int, look: int) -> Measurement:
    rng = np.random.default_rng(look)
    return Measurement(window, {CHAMPION: _arm(users, rng, 0), CANDIDATE: _arm(users, rng, 10**6)})


class Source:
    """A metric source that raises on the calls listed in ``fail_on`` (1-based), or always."""

    def __init__(self, fail_on: set[int] | None = None, always: bool = False, users: int = 2000) -> None:
        self.fail_on, self.always, self.users, self.calls = fail_on or set(), always, users, 0

    def __call__(self, window: Window, expect: Any) -> Measurement:
        self.calls += 1
        if self.always or self.calls in self.fail_on:
            raise ConnectionError("metrics backend timed out")
        return _healthy(window, self.users, self.calls)


def _run(config: Any, source: Source) -> tuple[Decision, str, list[Any]]:
    gates = configure_stage(config)
    looks: list[Any] = []

    def judge(*, step: int, look: int, evidence: Any, **kwargs: Any) -> Any:
        result = judge_look(gates, evidence, **kwargs)
        looks.append(result)
        return result

    result = run_looks(canary_plan("p", config), Parts(clock=ReadyClock(), measure=source, judge=judge))
    return result.decision, result.reason, looks


def test_healthy_source_passes_every_step() -> None:
    decision, _, looks = _run(_policy(None), Source())
    assert decision is Decision.ADVANCE and len(looks) == 2  # one look per step: proven safe at once


def test_one_flaky_query_does_not_roll_back() -> None:
    decision, _, looks = _run(_policy(None), Source(fail_on={1}))
    assert decision is Decision.ADVANCE
    assert looks[0].decision is Decision.CONTINUE and looks[0].judged[0].verdict.outcome is Outcome.ERROR
    assert "metric query failed" in looks[0].judged[0].verdict.message
    assert looks[1].error_streaks == {"0:guardrail:error_rate": 0}  # a measured look resets the count


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_always_failing_source_rolls_back_after_the_limit(limit: int) -> None:
    source = Source(always=True)
    decision, reason, looks = _run(_policy(limit, steps=1), source)
    assert decision is Decision.ROLLBACK
    assert len(looks) == limit + 1  # `limit` errors tolerated, the next one acts
    assert [r.decision for r in looks[:-1]] == [Decision.CONTINUE] * limit
    assert "metric query failed" in reason


def test_errors_at_the_deadline_extend_the_step_by_at_most_the_limit() -> None:
    # Too few requests to clear the limit: the gate stays inconclusive (recorded) until the deadline (look 3).
    config = _policy(2, steps=1, on_inconclusive="record")
    decision, _, looks = _run(config, Source(fail_on={3, 4}, users=20))
    assert decision is Decision.ADVANCE and len(looks) == 5  # looks 3-4 failed: the step ends on look 5
    assert [r.decision for r in looks] == [Decision.CONTINUE] * 4 + [Decision.ADVANCE]
    decision, _, looks = _run(config, Source(fail_on={3, 4, 5}, users=20))
    assert decision is Decision.ROLLBACK and len(looks) == 5  # a third error in a row acts


def test_default_limit_and_unlimited_callers() -> None:
    assert DEFAULT_ERROR_LIMIT == 2
    gates = configure_stage(_policy(None))
    # A caller that keeps no state (error_streaks=None) gets the fail-closed behaviour: ERROR acts at once.
    result = judge_look(gates, None, at_deadline=False, measurement_error="boom")
    assert result.decision is Decision.ROLLBACK


def test_streaks_count_consecutive_errors_and_reset() -> None:
    limits = {"a": 1, "b": 0}
    streaks, tolerated = update_error_streaks({}, {"a": Outcome.ERROR, "b": Outcome.PASS}, limits)
    assert streaks == {"a": 1, "b": 0} and tolerated == {"a": True, "b": False}
    streaks, tolerated = update_error_streaks(streaks, {"a": Outcome.ERROR, "b": Outcome.ERROR}, limits)
    assert streaks == {"a": 2, "b": 1} and tolerated == {"a": False, "b": False}
    streaks, _ = update_error_streaks(streaks, {"a": Outcome.INCONCLUSIVE, "b": Outcome.ERROR}, limits)
    assert streaks == {"a": 0, "b": 2}
