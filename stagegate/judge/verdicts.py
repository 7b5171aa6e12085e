"""From one look's decision to the judge's answer: one verdict word, and the HTTP status per caller.

The verdict (the field Argo Rollouts' ``web`` provider reads with ``jsonPath: "{$.verdict}"``):

- ``FAIL``: harm proven (a gate FAILed and its policy action is rollback), or the stage's rule says
  ROLLBACK on a look that was measured.
- ``ERROR``: the look could not be measured (the MetricSource failed), or a gate that is not in record
  mode could not measure. Never a success: the HTTP status is 503, which Argo records as a measurement
  Error (counted against consecutiveErrorLimit) and Flagger as a failed webhook (halt). When the errors
  went past the policy's ``consecutive_error_limit`` the rule's ``decision`` is ``rollback`` and Flagger's
  rollback hook answers 200; the verdict stays ERROR.
- ``PASS``: the rule says ADVANCE (risk_aware: every guardrail proven non-inferior and a success metric
  proven better; any_harm: every acting gate passed), with the step's minimum sample size met.
- ``INCONCLUSIVE``: anything else (CONTINUE, HOLD): keep looking. The AnalysisTemplate's conditions make
  it neither success nor failure, so Argo counts it against inconclusiveLimit and pauses.

FAIL is checked before ERROR: a proven harm on one gate is not hidden by another gate's error.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

import numpy as np

from stagegate.decision import Decision, LookDecision
from stagegate.verdict import Action, Outcome, Verdict


class JudgeVerdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    ERROR = "ERROR"


class Hook(StrEnum):
    """Who asks: Argo's web provider, or one of Flagger's webhook types."""

    ARGO = "argo"
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    CONFIRM_PROMOTION = "confirm-promotion"
    ROLLBACK = "rollback"


OK = 200
HALT = 403  # Flagger: any non-2xx halts; 403 is what Flagger's own gate/halt answers
UNAVAILABLE = 503  # the look could not be measured: never a 2xx


def judge_verdict(decision: LookDecision, measurement_failed: bool) -> JudgeVerdict:
    """The one word for a look (module docstring)."""
    judged = decision.judged
    if any(j.verdict.outcome is Outcome.FAIL and j.action is Action.ROLLBACK for j in judged):
        return JudgeVerdict.FAIL  # harm proven: not hidden by another gate's error
    if measurement_failed or any(
        j.verdict.outcome is Outcome.ERROR and j.action is not Action.RECORD for j in judged
    ):
        # Unmeasured, even when the errors went past their limit and the rule says ROLLBACK: the body's
        # ``decision`` says so (Flagger's rollback hook acts on it), the verdict stays ERROR (Argo: 5xx).
        return JudgeVerdict.ERROR
    if decision.decision is Decision.ROLLBACK:
        return JudgeVerdict.FAIL
    if decision.decision is Decision.ADVANCE:
        return JudgeVerdict.PASS
    return JudgeVerdict.INCONCLUSIVE


def status_for(hook: Hook, verdict: JudgeVerdict, decision: Decision) -> int:
    """The HTTP status each caller reads.

    - Argo: 200 with the verdict in the body, except ERROR: 503 (a measurement Error, never Successful).
    - confirm-traffic-increase: 200 while no harm is proven and the look measured (PASS, INCONCLUSIVE);
      FAIL halts (403; the rollback hook rolls back), ERROR 503 (except the canary's very first increase,
      before any traffic: stagegate.judge.looks.Judge.open_first_step).
    - confirm-promotion: 200 only on PASS (the rule says ADVANCE); INCONCLUSIVE and FAIL 403, ERROR 503.
    - rollback: 200 means "roll back now" to Flagger, so 200 only when the rule says ROLLBACK; otherwise
      403, or 503 when the look could not be measured.
    """
    if hook is Hook.ROLLBACK:
        if decision is Decision.ROLLBACK:
            return OK
        return UNAVAILABLE if verdict is JudgeVerdict.ERROR else HALT
    if verdict is JudgeVerdict.ERROR:
        return UNAVAILABLE
    if hook is Hook.ARGO:
        return OK
    if hook is Hook.CONFIRM_TRAFFIC_INCREASE:
        return OK if verdict in (JudgeVerdict.PASS, JudgeVerdict.INCONCLUSIVE) else HALT
    return OK if verdict is JudgeVerdict.PASS else HALT


def finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (JSON has neither), numpy scalars plain numbers."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)


#: Sequential statistics copied from a gate's details into the answer (the e-value and its boundary).
SEQUENTIAL_FIELDS = (
    "harm_statistic",
    "harm_boundary",
    "promote_statistic",
    "promote_boundary",
    "p_value_harm",
    "looks",
    "carried_log_e_value",
)


def gate_row(verdict: Verdict, action: Action | None) -> dict[str, Any]:
    """One gate's verdict in the answer: name, outcome, statistic, interval, n, and what it asks for."""
    row: dict[str, Any] = {
        "name": verdict.gate,
        "metric": verdict.metric,
        "outcome": verdict.outcome.value,
        "statistic": finite(verdict.statistic),
        "threshold": finite(verdict.threshold),
        "interval": [finite(verdict.ci_low), finite(verdict.ci_high)],
        "n": int(verdict.n),
        "action": action.value if action is not None else None,
        "message": verdict.message,
    }
    sequential = {k: finite(verdict.details[k]) for k in SEQUENTIAL_FIELDS if k in verdict.details}
    if sequential:
        row["sequential"] = sequential
    return row
