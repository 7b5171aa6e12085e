"""Threshold, relative and guardrail gates decide as their docstrings say, on data with known truth."""

from __future__ import annotations

import dataclasses

import numpy as np

from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.plugins import build_gate
from stagegate.verdict import Outcome
from tests.gates.conformance import make_evidence


def _one_arm(values: np.ndarray, name: str = "m", **extra: np.ndarray) -> Evidence:
    arm = ArmSample(user_ids=np.arange(len(values)), metrics={name: values, **extra})
    return Evidence(stage="t", arms={CANDIDATE: arm})


def test_threshold_pass_and_fail_on_the_mean() -> None:
    ev = _one_arm(np.array([0.1, 0.2, 0.3]))
    assert build_gate({"type": "threshold", "metric": "m", "min": 0.19}).evaluate(ev).outcome is Outcome.PASS
    verdict = build_gate({"type": "threshold", "metric": "m", "max": 0.19}).evaluate(ev)
    assert (
        verdict.outcome is Outcome.FAIL and abs(verdict.statistic - 0.2) < 1e-12 and verdict.threshold == 0.19
    )
    assert "above the maximum" in verdict.message


def test_threshold_on_a_segment_uses_only_that_segment() -> None:
    arm = ArmSample(
        user_ids=np.arange(4),
        metrics={"m": np.array([0.0, 0.0, 1.0, 1.0])},
        segments={"cold_start": np.array([True, True, False, False])},
    )
    ev = Evidence(stage="t", arms={CANDIDATE: arm})
    verdict = build_gate({"type": "threshold", "metric": "m", "segment": "cold_start", "min": 0.5}).evaluate(
        ev
    )
    assert verdict.outcome is Outcome.FAIL and verdict.n == 2
    missing = build_gate({"type": "threshold", "metric": "m", "segment": "heavy", "min": 0.5}).evaluate(ev)
    assert missing.outcome is Outcome.ERROR and "heavy" in missing.message


def _paired(lift: float, n: int = 3000, seed: int = 1) -> Evidence:
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 5.0, n)
    champ = ArmSample(user_ids=np.arange(n), metrics={"m": base})
    cand = ArmSample(user_ids=np.arange(n), metrics={"m": base * (1 + lift) + rng.normal(0, 0.5, n)})
    return Evidence(stage="t", arms={CHAMPION: champ, CANDIDATE: cand}, paired=True)


def test_relative_gate_detects_a_known_loss_and_passes_a_known_gain() -> None:
    spec = {"type": "relative", "metric": "m", "min_change": -0.01}
    loss = build_gate(spec).evaluate(_paired(-0.05))
    assert loss.outcome is Outcome.FAIL and loss.ci_high < -0.01
    assert loss.ci_low <= -0.05 <= loss.ci_high  # the interval covers the truth
    gain = build_gate(spec).evaluate(_paired(0.05))
    assert gain.outcome is Outcome.PASS and gain.ci_low > -0.01


def test_relative_gate_is_inconclusive_when_the_interval_straddles() -> None:
    verdict = build_gate({"type": "relative", "metric": "m", "min_change": 0.0}).evaluate(_paired(0.0, n=200))
    assert verdict.outcome is Outcome.INCONCLUSIVE and verdict.ci_low < 0 < verdict.ci_high


def test_relative_gate_direction_decrease() -> None:
    spec = {"type": "relative", "metric": "m", "min_change": -0.01, "direction": "decrease"}
    # A 5% higher value is a 5% loss when lower is better.
    assert build_gate(spec).evaluate(_paired(0.05)).outcome is Outcome.FAIL


def test_relative_gate_needs_a_champion() -> None:
    ev = _one_arm(np.ones(50))
    verdict = build_gate({"type": "relative", "metric": "m", "min_change": 0}).evaluate(ev)
    assert verdict.outcome is Outcome.ERROR and "champion" in verdict.message


def test_guardrail_ratio_breach_proven_and_safety_proven() -> None:
    breach = make_evidence(n=4000, seed=3)
    breach = dataclasses.replace(
        breach,
        arms={
            **breach.arms,
            CANDIDATE: dataclasses.replace(
                breach.arms[CANDIDATE],
                metrics={
                    **breach.arms[CANDIDATE].metrics,
                    "errors": np.random.default_rng(5)
                    .binomial(breach.arms[CANDIDATE].metrics["requests"].astype(int), 0.05)
                    .astype(float),
                },
            ),
        },
    )
    verdict = build_gate({"type": "guardrail", "metric": "error_rate", "max": 0.01}).evaluate(breach)
    assert verdict.outcome is Outcome.FAIL and verdict.ci_low > 0.01
    safe = build_gate({"type": "guardrail", "metric": "error_rate", "max": 0.01}).evaluate(
        make_evidence(seed=4)
    )
    assert safe.outcome is Outcome.PASS and safe.ci_high <= 0.01


def test_guardrail_zero_errors_in_few_requests_is_not_proof_of_safety() -> None:
    # 0 errors in 40 requests: the exact 95% upper bound is about 8.8%, far above a 0.1% limit.
    ev = _one_arm(np.full(10, 4.0), name="requests", errors=np.zeros(10))
    verdict = build_gate({"type": "guardrail", "metric": "error_rate", "max": 0.001}).evaluate(ev)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert 0.08 < verdict.ci_high < 0.10


def test_guardrail_constant_values_cannot_form_an_interval() -> None:
    verdict = build_gate({"type": "guardrail", "metric": "m", "max": 1.0}).evaluate(
        _one_arm(np.full(100, 0.5))
    )
    assert verdict.outcome is Outcome.ERROR and "equal" in verdict.message
