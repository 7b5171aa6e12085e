"""The decision rules: the most cautious wish wins; record mode never acts; deadlines resolve waiting."""

from __future__ import annotations

from stagegate.decision import Decision, GateLook, decide
from stagegate.verdict import Action, Outcome, Verdict

ACTS = {Outcome.FAIL: Action.ROLLBACK, Outcome.INCONCLUSIVE: Action.HOLD, Outcome.ERROR: Action.ROLLBACK}
RECORD = dict.fromkeys(ACTS, Action.RECORD)


def v(outcome: Outcome, gate: str = "g") -> Verdict:
    return Verdict(gate, outcome, f"{gate} said {outcome}")


def test_all_pass_advances() -> None:
    assert decide([(v(Outcome.PASS), ACTS)] * 2, at_deadline=False).decision is Decision.ADVANCE


def test_fail_rolls_back_even_when_others_pass_or_wait() -> None:
    result = decide(
        [(v(Outcome.PASS), ACTS), (v(Outcome.INCONCLUSIVE), ACTS), (v(Outcome.FAIL, "bad"), ACTS)],
        at_deadline=False,
    )
    assert result.decision is Decision.ROLLBACK and "bad" in result.reason


def test_error_is_never_a_pass() -> None:
    assert decide([(v(Outcome.ERROR), ACTS)], at_deadline=False).decision is Decision.ROLLBACK


def test_record_mode_logs_but_never_acts() -> None:
    result = decide([(v(Outcome.FAIL), RECORD)], at_deadline=True)
    assert result.decision is Decision.ADVANCE
    assert result.judged[0].action is Action.RECORD


def test_inconclusive_waits_then_follows_policy_at_deadline() -> None:
    assert decide([(v(Outcome.INCONCLUSIVE), ACTS)], at_deadline=False).decision is Decision.CONTINUE
    assert decide([(v(Outcome.INCONCLUSIVE), ACTS)], at_deadline=True).decision is Decision.HOLD


def test_sample_size_requirement() -> None:
    ok = [(v(Outcome.PASS), ACTS)]
    assert decide(ok, at_deadline=False, enough_samples=False).decision is Decision.CONTINUE
    assert decide(ok, at_deadline=True, enough_samples=False).decision is Decision.HOLD


def test_a_tolerated_error_keeps_looking_even_at_the_deadline() -> None:
    tolerated = GateLook(v(Outcome.ERROR), ACTS, error_tolerated=True)
    assert decide([tolerated], at_deadline=False).decision is Decision.CONTINUE
    assert decide([tolerated], at_deadline=True).decision is Decision.CONTINUE
    # a FAIL elsewhere still wins
    assert (
        decide([tolerated, (v(Outcome.FAIL, "bad"), ACTS)], at_deadline=False).decision is Decision.ROLLBACK
    )
