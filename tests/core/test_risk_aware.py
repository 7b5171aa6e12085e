"""The risk-aware decision rule (Schultzberg, Ankargren & Frånberg 2024): advance on proof, hold otherwise.

Pure rule checks on hand-made verdicts, the levels it runs the gates at, and the superiority test it builds
from a sequential gate, checked by simulation with known truth (A/A under continuous monitoring, power).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stagegate.decision import Decision, GateLook, Role, decide_risk_aware, risk_aware_levels
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.policy import parse_policy
from stagegate.policy.gates import configure_stage, judge_look
from stagegate.verdict import Action, Outcome, Verdict

ACTS = {Outcome.FAIL: Action.ROLLBACK, Outcome.INCONCLUSIVE: Action.HOLD, Outcome.ERROR: Action.ROLLBACK}


def look(role: Role, outcome: Outcome, better: Outcome | None = None, name: str = "g") -> GateLook:
    sup = None
    if role is Role.SUCCESS:
        sup = Verdict(f"{name} better", better or Outcome.INCONCLUSIVE, "better?", statistic=0.01)
    return GateLook(Verdict(name, outcome, f"{name} said {outcome}"), ACTS, role, sup)


def test_levels_split_alpha_over_success_metrics_and_power_over_guardrails() -> None:
    lv = risk_aware_levels(n_success=2, n_guardrails=3, alpha=0.05, power=0.8)
    assert lv.success_alpha == pytest.approx(0.025)
    assert lv.success_beta == pytest.approx(0.2)
    assert lv.guardrail_alpha == pytest.approx(0.05)  # non-inferiority is not alpha-adjusted
    assert lv.guardrail_beta == pytest.approx(0.2 / 3)
    assert lv.deterioration_alpha == pytest.approx(0.05)
    assert risk_aware_levels(0, 5, 0.05, 0.8).deterioration_alpha == pytest.approx(0.04)
    with pytest.raises(ValueError):
        risk_aware_levels(1, 0, 0.05, 0.8)


def test_advances_only_when_guardrails_and_one_success_are_proven() -> None:
    guard, quality = look(Role.GUARDRAIL, Outcome.PASS), look(Role.QUALITY, Outcome.PASS)
    s1 = look(Role.SUCCESS, Outcome.INCONCLUSIVE, Outcome.PASS, "s1")
    s2 = look(Role.SUCCESS, Outcome.INCONCLUSIVE, Outcome.INCONCLUSIVE, "s2")
    result = decide_risk_aware([quality, guard, s1, s2], at_deadline=False)
    assert result.decision is Decision.ADVANCE and "s1 better" in result.reason
    # the same without a proven success metric keeps looking, and holds at the deadline
    assert decide_risk_aware([quality, guard, s2], at_deadline=False).decision is Decision.CONTINUE
    held = decide_risk_aware([quality, guard, s2], at_deadline=True)
    assert held.decision is Decision.HOLD and "no success metric proven better" in held.reason
    # without success metrics, the guardrails alone decide
    assert decide_risk_aware([quality, guard], at_deadline=False).decision is Decision.ADVANCE


@pytest.mark.parametrize(
    "guard, success, better",
    [
        (g, s, b)
        for g, s, b in itertools.product(
            [Outcome.PASS, Outcome.INCONCLUSIVE], [Outcome.PASS, Outcome.INCONCLUSIVE], list(Outcome)
        )
        if not (g is Outcome.PASS and b is Outcome.PASS)
    ],
)
def test_never_advances_at_the_last_deadline_without_proof(
    guard: Outcome, success: Outcome, better: Outcome
) -> None:
    looks = [look(Role.GUARDRAIL, guard), look(Role.SUCCESS, success, better)]
    result = decide_risk_aware(looks, at_deadline=True, last_step=True)
    assert result.decision is Decision.HOLD


def test_between_steps_ramps_or_holds_at_an_earlier_deadline() -> None:
    looks = [look(Role.GUARDRAIL, Outcome.INCONCLUSIVE)]
    ramp = decide_risk_aware(looks, at_deadline=True, last_step=False, between_steps="ramp")
    assert ramp.decision is Decision.ADVANCE and "next step" in ramp.reason
    hold = decide_risk_aware(looks, at_deadline=True, last_step=False, between_steps="hold")
    assert hold.decision is Decision.HOLD


@pytest.mark.parametrize("role", [Role.GUARDRAIL, Role.SUCCESS, Role.QUALITY])
def test_proven_harm_or_a_failed_quality_check_rolls_back(role: Role) -> None:
    proven = [
        look(Role.GUARDRAIL, Outcome.PASS, name="ok"),
        look(Role.SUCCESS, Outcome.PASS, Outcome.PASS, "s"),
    ]
    result = decide_risk_aware([*proven, look(role, Outcome.FAIL, name="bad")], at_deadline=False)
    assert result.decision is Decision.ROLLBACK and "bad" in result.reason
    errored = decide_risk_aware([*proven, look(role, Outcome.ERROR, name="bad")], at_deadline=False)
    assert errored.decision is Decision.ROLLBACK


def test_an_unfinished_quality_check_blocks_and_follows_its_policy() -> None:
    proven = [look(Role.GUARDRAIL, Outcome.PASS)]
    srm = look(Role.QUALITY, Outcome.INCONCLUSIVE, name="srm")
    assert decide_risk_aware([*proven, srm], at_deadline=False).decision is Decision.CONTINUE
    assert decide_risk_aware([*proven, srm], at_deadline=True).decision is Decision.HOLD


def test_sample_size_and_missing_roles() -> None:
    proven = [look(Role.GUARDRAIL, Outcome.PASS)]
    assert decide_risk_aware(proven, at_deadline=False, enough_samples=False).decision is Decision.CONTINUE
    with pytest.raises(ValueError, match="no role"):
        decide_risk_aware([GateLook(Verdict("g", Outcome.PASS, "ok"), ACTS)], at_deadline=False)


# --------------------------------------------------------------- the superiority test, by simulation

POLICY = {
    "model": "m",
    "stages": {
        "canary": {
            "steps": [{"weight": 50}],
            "decision": {"rule": "risk_aware", "alpha": 0.05, "power": 0.8},
            "gates": [
                {"type": "sequential", "metric": "revenue_per_user", "method": "always_valid", "mde": 0.1,
                 "role": "success", "cuped": False},
                {"type": "sequential", "metric": "purchases_per_user", "method": "always_valid",
                 "margin": 0.1, "role": "guardrail", "cuped": False},
            ],
        }
    },
}  # fmt: skip


def _canary(lift: float, n_per_look: int, looks: int, rng: np.random.Generator) -> list[Evidence]:
    """Cumulative evidence at each look: lognormal revenue (CV ~1.3), purchases scaled by ``1 + lift``."""
    out: list[Evidence] = []
    n = n_per_look * looks

    def arm(scale: float, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        purchases = rng.poisson(2.0 * scale, n).astype(float)
        revenue = purchases * rng.lognormal(1.0, 0.5, n)
        return np.arange(n) + offset, revenue, purchases

    c, o = arm(1.0 + lift, 10**7), arm(1.0, 0)
    for k in range(1, looks + 1):
        m = k * n_per_look
        arms = {
            CANDIDATE: ArmSample(c[0][:m], {"revenue_per_user": c[1][:m], "purchases_per_user": c[2][:m]}),
            CHAMPION: ArmSample(o[0][:m], {"revenue_per_user": o[1][:m], "purchases_per_user": o[2][:m]}),
        }
        out.append(
            Evidence("canary", arms, allocation={CHAMPION: 0.5, CANDIDATE: 0.5}, look=k, history=tuple(out))
        )
    return out


def _first_decision(lift: float, seed: int, n_per_look: int = 150, looks: int = 8) -> Decision:
    gates = configure_stage(parse_policy(POLICY).stages.canary)
    rng = np.random.default_rng(seed)
    for k, evidence in enumerate(_canary(lift, n_per_look, looks, rng), start=1):
        result = judge_look(gates, evidence, at_deadline=k == looks)
        if result.decision is not Decision.CONTINUE:
            return result.decision
    return Decision.CONTINUE


def test_no_effect_is_rarely_advanced_under_continuous_monitoring() -> None:
    # True effect 0: advancing needs a false "better" on revenue at alpha = 0.05 (one success metric).
    runs = 150
    advanced = sum(_first_decision(0.0, seed, looks=6) is Decision.ADVANCE for seed in range(runs))
    assert advanced <= runs * 0.05 + 2.33 * np.sqrt(runs * 0.05 * 0.95)


def test_a_real_improvement_is_advanced_and_a_harm_beyond_the_margin_is_not() -> None:
    runs = 40
    better = [_first_decision(0.12, seed, n_per_look=400) for seed in range(runs)]
    assert sum(d is Decision.ADVANCE for d in better) >= 0.8 * runs
    harmful = [_first_decision(-0.12, seed, n_per_look=400) for seed in range(runs)]
    assert not any(d is Decision.ADVANCE for d in harmful)
    assert sum(d is Decision.ROLLBACK for d in harmful) >= 0.8 * runs
