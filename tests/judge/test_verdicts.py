"""The verdict word and every caller's HTTP status, over every combination (pure, no server)."""

from __future__ import annotations

import itertools

import pytest

from stagegate.decision import Decision, Judged, LookDecision
from stagegate.judge.verdicts import Hook, JudgeVerdict, finite, judge_verdict, status_for
from stagegate.verdict import Action, Outcome, Verdict


def _decision(decision: Decision, *judged: tuple[Outcome, Action | None]) -> LookDecision:
    return LookDecision(
        decision,
        "test",
        [Judged(Verdict(f"g{i}", outcome, "m"), action) for i, (outcome, action) in enumerate(judged)],
    )


@pytest.mark.parametrize(
    ("decision", "measurement_failed", "expected"),
    [
        (_decision(Decision.ADVANCE, (Outcome.PASS, None)), False, JudgeVerdict.PASS),
        (_decision(Decision.CONTINUE, (Outcome.INCONCLUSIVE, None)), False, JudgeVerdict.INCONCLUSIVE),
        (_decision(Decision.HOLD, (Outcome.INCONCLUSIVE, Action.HOLD)), False, JudgeVerdict.INCONCLUSIVE),
        (_decision(Decision.ROLLBACK, (Outcome.FAIL, Action.ROLLBACK)), False, JudgeVerdict.FAIL),
        # proven harm is not hidden by another gate's error
        (
            _decision(Decision.ROLLBACK, (Outcome.FAIL, Action.ROLLBACK), (Outcome.ERROR, Action.ROLLBACK)),
            False,
            JudgeVerdict.FAIL,
        ),
        # a tolerated error (no action yet) is still an unmeasured look
        (
            _decision(Decision.CONTINUE, (Outcome.ERROR, None), (Outcome.PASS, None)),
            False,
            JudgeVerdict.ERROR,
        ),
        # errors past their limit: the rule rolls back, the look stays ERROR
        (_decision(Decision.ROLLBACK, (Outcome.ERROR, Action.ROLLBACK)), True, JudgeVerdict.ERROR),
        # a gate in record mode (dry run) does not make the look an error
        (
            _decision(Decision.ADVANCE, (Outcome.ERROR, Action.RECORD), (Outcome.PASS, None)),
            False,
            JudgeVerdict.PASS,
        ),
        # a harm the policy holds on (on_fail: hold) waits for a human: inconclusive to the tools
        (_decision(Decision.HOLD, (Outcome.FAIL, Action.HOLD)), False, JudgeVerdict.INCONCLUSIVE),
        (_decision(Decision.ADVANCE), True, JudgeVerdict.ERROR),
    ],
)
def test_verdict_word(decision: LookDecision, measurement_failed: bool, expected: JudgeVerdict) -> None:
    assert judge_verdict(decision, measurement_failed) is expected


@pytest.mark.parametrize(("verdict", "decision"), list(itertools.product(JudgeVerdict, Decision)))
def test_status_for_every_caller(verdict: JudgeVerdict, decision: Decision) -> None:
    argo = status_for(Hook.ARGO, verdict, decision)
    increase = status_for(Hook.CONFIRM_TRAFFIC_INCREASE, verdict, decision)
    promote = status_for(Hook.CONFIRM_PROMOTION, verdict, decision)
    rollback = status_for(Hook.ROLLBACK, verdict, decision)
    if verdict is JudgeVerdict.ERROR:
        assert argo == increase == promote == 503  # never a success
    else:
        assert argo == 200  # the body's verdict is the answer; the conditions read it
    assert (promote == 200) == (verdict is JudgeVerdict.PASS)
    assert (increase == 200) == (verdict in (JudgeVerdict.PASS, JudgeVerdict.INCONCLUSIVE))
    assert (rollback == 200) == (decision is Decision.ROLLBACK)  # 2xx means "roll back now" to Flagger
    for status in (argo, increase, promote, rollback):
        assert status == 200 or status >= 400


def test_json_numbers_are_finite() -> None:
    import numpy as np

    assert finite(float("nan")) is None and finite(np.float64("inf")) is None
    assert finite(np.int64(3)) == 3 and isinstance(finite(np.int64(3)), int)
    assert finite(np.float64(0.5)) == 0.5 and finite(True) is True and finite(None) is None
