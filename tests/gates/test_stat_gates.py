"""The sequential, srm and latency gates: policy shapes, verdict contents, decisions, and failing closed."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from gates.latency import LatencyGate
from gates.sequential import SequentialGate
from gates.srm import SrmGate
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.plugins import build_gate
from stagegate.verdict import Outcome, Verdict

SEQUENTIAL = {"type": "sequential", "metric": "revenue_per_user", "method": "always_valid", "mde": 0.02,
              "alpha": 0.05, "harm_margin": 0.0, "on_fail": "rollback"}  # fmt: skip
SRM = {"type": "srm", "p_value": 0.001, "on_fail": "rollback"}
LATENCY = {"type": "latency", "metric": "latency_ms", "quantile": 0.99, "max_increase": 0.10}


def arm(values: dict[str, np.ndarray], *, pre: dict | None = None, requests: dict | None = None) -> ArmSample:
    n = len(next(iter(values.values()))) if values else 0
    return ArmSample(np.arange(n), values, pre_period=pre or {}, requests=requests or {})


def canary(
    effect: float, sizes: list[int], *, seed: int = 0, pre: bool = False, allocation: dict | None = None
) -> Evidence:
    """Cumulative canary looks (oldest first) of per-user revenue with a known relative effect."""
    rng = np.random.default_rng(seed)
    n_max = sizes[-1]
    base_c, base_0 = rng.gamma(2.0, 5.0, n_max), rng.gamma(2.0, 5.0, n_max)
    rev_c = base_c * (1 + effect) + rng.normal(0, 2.0, n_max)
    rev_0 = base_0 + rng.normal(0, 2.0, n_max)
    looks: list[Evidence] = []
    for n in sizes:
        arms = {
            CANDIDATE: arm(
                {"revenue_per_user": rev_c[:n]}, pre={"revenue_per_user": base_c[:n]} if pre else None
            ),
            CHAMPION: arm(
                {"revenue_per_user": rev_0[:n]}, pre={"revenue_per_user": base_0[:n]} if pre else None
            ),
        }
        looks.append(
            Evidence(
                "canary",
                arms,
                allocation=allocation or {CANDIDATE: 0.5, CHAMPION: 0.5},
                look=len(looks) + 1,
                history=tuple(looks),
            )
        )
    return looks[-1]


def check_verdict_contract(v: Verdict) -> None:
    assert v.statistic is not None and np.isfinite(v.statistic)
    assert v.threshold is not None and v.n > 0
    assert v.ci_low is not None and v.ci_high is not None and v.ci_low <= v.ci_high
    assert v.message and v.message.count(". ") == 0  # one sentence


# --- sequential --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["always_valid", "group_sequential"])
def test_sequential_rolls_back_on_proven_harm(method: str) -> None:
    gate = build_gate({**SEQUENTIAL, "method": method, "max_users": 20_000})
    v = gate.evaluate(canary(-0.10, [2_000, 4_000, 6_000]))
    assert v.outcome is Outcome.FAIL, v.message
    check_verdict_contract(v)
    assert v.ci_high < 0 and "harm proven" in v.message and gate.action_for(v.outcome).value == "rollback"


@pytest.mark.parametrize("method", ["always_valid", "group_sequential"])
def test_sequential_promotes_on_proven_non_inferiority(method: str) -> None:
    gate = build_gate({**SEQUENTIAL, "method": method, "mde": 0.05, "max_users": 60_000})
    v = gate.evaluate(canary(0.02, [10_000, 20_000, 30_000, 40_000], seed=1))
    assert v.outcome is Outcome.PASS, v.message
    check_verdict_contract(v)
    assert v.ci_low > -0.05


def test_sequential_keeps_going_without_enough_evidence() -> None:
    v = build_gate(SEQUENTIAL).evaluate(canary(0.0, [300, 600], seed=2))
    assert v.outcome is Outcome.INCONCLUSIVE and v.details["looks"] == 2
    assert v.ci_low < -0.02 and v.ci_high > 0


def test_sequential_burn_in_is_inconclusive_not_pass() -> None:
    v = build_gate(SEQUENTIAL).evaluate(canary(0.0, [50], seed=3))
    assert v.outcome is Outcome.INCONCLUSIVE and "collecting" in v.message


def test_sequential_uses_cuped_and_reports_the_reduction() -> None:
    plain = build_gate({**SEQUENTIAL, "cuped": False}).evaluate(canary(0.0, [4_000], seed=4, pre=True))
    adjusted = build_gate(SEQUENTIAL).evaluate(canary(0.0, [4_000], seed=4, pre=True))
    reduction = adjusted.details["cuped_variance_reduction"]
    assert 0.5 < reduction < 1.0
    assert adjusted.details["se"] ** 2 == pytest.approx(plain.details["se"] ** 2 * (1 - reduction), rel=0.1)


def test_sequential_ratio_metric_and_direction() -> None:
    rng = np.random.default_rng(5)
    imps = rng.poisson(10, (2, 5_000)) + 1
    clicks = rng.binomial(imps, [[0.05], [0.065]])  # candidate's CTR is 23% lower
    arms = {
        CANDIDATE: arm({"clicks": clicks[0], "impressions": imps[0]}),
        CHAMPION: arm({"clicks": clicks[1], "impressions": imps[1]}),
    }
    ev = Evidence("canary", arms)
    assert build_gate({**SEQUENTIAL, "metric": "ctr"}).evaluate(ev).outcome is Outcome.FAIL
    # Lower is better for this metric: the same data is then a proven improvement.
    assert (
        build_gate({**SEQUENTIAL, "metric": "ctr", "direction": "decrease"}).evaluate(ev).outcome
        is Outcome.PASS
    )


def test_sequential_winsorises_heavy_tails() -> None:
    ev = canary(0.0, [3_000], seed=6)
    ev.arm(CANDIDATE).metrics["revenue_per_user"][0] = 1e7  # one whale
    v = build_gate({**SEQUENTIAL, "winsorize": 0.999}).evaluate(ev)
    assert v.details["winsorize_cap"] < 1e3 and v.details["winsorized_users"] >= 1
    assert abs(v.statistic) < 0.05


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda a: a.metrics["revenue_per_user"].__setitem__(3, np.nan), "NaN"),
        (lambda a: a.metrics.pop("revenue_per_user"), "not in evidence"),
        (lambda a: a.metrics["revenue_per_user"].__setitem__(slice(None), 1.0), "zero variance"),
    ],
)
def test_sequential_fails_closed_on_bad_data(mutate, reason: str) -> None:
    ev = canary(0.0, [500], seed=7)
    for a in ev.arms.values():
        mutate(a)
    v = build_gate(SEQUENTIAL).evaluate(ev)
    assert v.outcome is Outcome.ERROR and reason in v.message, v.message


def test_sequential_waits_for_an_arm_with_no_user_yet_and_errors_on_an_unknown_one() -> None:
    empty = Evidence("canary", {CANDIDATE: arm({"revenue_per_user": np.array([])}),
                                CHAMPION: arm({"revenue_per_user": np.arange(200.0)})})  # fmt: skip
    v = build_gate(SEQUENTIAL).evaluate(empty)
    assert v.outcome is Outcome.INCONCLUSIVE and "no users yet" in v.message, v.message
    # Absent from the evidence but configured to get traffic: no user yet, not a failure to measure.
    waiting = Evidence("canary", {CHAMPION: arm({"revenue_per_user": np.arange(200.0)})}, allocation=FIVE)
    v = build_gate(SEQUENTIAL).evaluate(waiting)
    assert v.outcome is Outcome.INCONCLUSIVE and "no candidate users yet" in v.message, v.message
    # Absent and not configured: the evidence is malformed.
    alone = Evidence("canary", {CANDIDATE: arm({"revenue_per_user": np.arange(200.0)})})
    v = build_gate(SEQUENTIAL).evaluate(alone)
    assert v.outcome is Outcome.ERROR and "champion" in v.message


def test_sequential_waits_while_a_sparse_metric_has_no_events() -> None:
    """A 1% canary at a 1% click rate: no click yet in an arm is 'not enough data yet', never ERROR."""
    rng = np.random.default_rng(9)
    imps_c, imps_0 = np.full(150, 10.0), np.full(15_000, 10.0)
    clicks_0 = rng.binomial(10, 0.01, 15_000).astype(float)
    cases = {
        "candidate has no click": (np.zeros(150), clicks_0),
        "champion has no click": (
            rng.binomial(10, 0.01, 150).astype(float) + np.eye(1, 150)[0],
            np.zeros(15_000),
        ),
        "nobody clicked": (np.zeros(150), np.zeros(15_000)),
    }
    for label, (c, z) in cases.items():
        ev = Evidence("canary", {CANDIDATE: arm({"clicks": c, "impressions": imps_c}),
                                 CHAMPION: arm({"clicks": z, "impressions": imps_0})})  # fmt: skip
        v = build_gate({**SEQUENTIAL, "metric": "ctr"}).evaluate(ev)
        assert v.outcome is Outcome.INCONCLUSIVE, (label, v.message)
        # 14 clicking users expected in the candidate: testable, and 0 of them is not yet proof of harm.
        assert ("not enough data yet" in v.message) == (label != "candidate has no click"), (label, v.message)
    revenue = Evidence("canary", {CANDIDATE: arm({"revenue_per_user": np.zeros(500)}),
                                  CHAMPION: arm({"revenue_per_user": np.zeros(500)})})  # fmt: skip
    v = build_gate(SEQUENTIAL).evaluate(revenue)
    assert v.outcome is Outcome.INCONCLUSIVE and "no events yet" in v.message, v.message


def test_sequential_budget_canary_carries_harm_evidence_across_ramp_steps() -> None:
    """Four steps (new splits), each showing -6% at z ~ 2: no step proves harm alone, the canary does."""
    base = np.random.default_rng(0).normal(10.0, 9.0, 2_000)
    looks: list[Evidence] = []
    for share in (0.10, 0.25, 0.50, 0.75):
        arms = {CANDIDATE: arm({"m": base * 0.94}), CHAMPION: arm({"m": base.copy()})}
        alloc = {CANDIDATE: share, CHAMPION: 1 - share}
        looks.append(Evidence("canary", arms, allocation=alloc, history=tuple(looks)))
    spec = {"type": "sequential", "metric": "m", "method": "always_valid", "mde": 0.10, "winsorize": None}
    per_step = build_gate(spec).evaluate(looks[-1])
    assert per_step.outcome is Outcome.INCONCLUSIVE and per_step.details["steps"] == 4, per_step.message
    assert per_step.details["looks"] == 1  # the per-step test sees only the current step's looks
    canary_wide = build_gate({**spec, "budget": "canary"}).evaluate(looks[-1])
    assert canary_wide.outcome is Outcome.FAIL and "over the canary's 4 steps" in canary_wide.message
    assert canary_wide.details["carried_log_e_value"] > 0
    # Sharing alpha with two more gates raises the bar: the same evidence no longer suffices.
    shared = build_gate({**spec, "budget": "canary", "budget_gates": 3}).evaluate(looks[-1])
    assert shared.outcome is Outcome.INCONCLUSIVE, shared.message
    with pytest.raises(ValidationError, match="always_valid"):
        build_gate({**spec, "method": "group_sequential", "max_users": 100, "budget": "canary"})


def test_sequential_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="max_users"):
        build_gate({**SEQUENTIAL, "method": "group_sequential"})
    with pytest.raises(ValidationError, match="harm_margin"):
        build_gate({**SEQUENTIAL, "harm_margin": 0.05})
    with pytest.raises(ValidationError, match="extra"):
        build_gate({**SEQUENTIAL, "confidence": 0.9})
    assert isinstance(build_gate(SEQUENTIAL), SequentialGate)


# --- srm ---------------------------------------------------------------------------------------------------


def split(n_cand: list[int], n_champ: list[int], allocations: list[dict]) -> Evidence:
    looks: list[Evidence] = []
    for c, h, alloc in zip(n_cand, n_champ, allocations, strict=True):
        arms = {CANDIDATE: arm({"x": np.zeros(c)}), CHAMPION: arm({"x": np.zeros(h)})}
        looks.append(Evidence("canary", arms, allocation=alloc, history=tuple(looks)))
    return looks[-1]


FIVE = {CANDIDATE: 5.0, CHAMPION: 95.0}


@pytest.mark.parametrize("method", ["sequential", "chi_square"])
def test_srm_passes_the_configured_split_and_fails_a_mismatch(method: str) -> None:
    gate = build_gate({**SRM, "method": method})
    ok = gate.evaluate(split([2_500, 5_000], [47_500, 95_000], [FIVE, FIVE]))
    assert ok.outcome is Outcome.PASS, ok.message
    check_verdict_contract(ok)
    assert ok.ci_low <= 0.05 <= ok.ci_high
    bad = gate.evaluate(split([2_300, 4_600], [47_700, 95_400], [FIVE, FIVE]))  # 4.6% instead of 5%
    assert bad.outcome is Outcome.FAIL and "mismatch" in bad.message and bad.statistic < 0.001


def test_srm_is_not_fooled_by_a_changed_split() -> None:
    half = {CANDIDATE: 50.0, CHAMPION: 50.0}
    # 5% step, then 50%: cumulative counts are far from 50/50, but the users since the change are.
    ev = split([500, 1_000, 5_500, 10_000], [9_500, 19_000, 23_500, 28_000], [FIVE, FIVE, half, half])
    v = build_gate(SRM).evaluate(ev)
    assert v.outcome is Outcome.PASS and v.n == 18_000 and v.details["looks"] == 2


def test_srm_fails_closed() -> None:
    no_alloc = Evidence("canary", {CANDIDATE: arm({"x": np.zeros(10)}), CHAMPION: arm({"x": np.zeros(10)})})
    assert build_gate(SRM).evaluate(no_alloc).outcome is Outcome.ERROR
    # An arm with no user yet counts 0 users: inconclusive while few users came, a mismatch once many did.
    missing = Evidence("canary", {CANDIDATE: arm({"x": np.zeros(10)})}, allocation=FIVE)
    assert build_gate(SRM).evaluate(missing).outcome is Outcome.INCONCLUSIVE
    lost = Evidence("canary", {CHAMPION: arm({"x": np.zeros(5_000)})}, allocation=FIVE)
    v = build_gate(SRM).evaluate(lost)
    assert v.outcome is Outcome.FAIL and "0.00%" in v.message, v.message
    nobody = Evidence("canary", {}, allocation=FIVE)
    assert build_gate(SRM).evaluate(nobody).outcome is Outcome.INCONCLUSIVE
    stranger = Evidence("canary", {"other": arm({"x": np.zeros(10)}), CHAMPION: arm({"x": np.zeros(10)})},
                        allocation=FIVE)  # fmt: skip
    assert build_gate(SRM).evaluate(stranger).outcome is Outcome.ERROR
    few = build_gate(SRM).evaluate(split([3], [40], [FIVE]))
    assert few.outcome is Outcome.INCONCLUSIVE
    assert isinstance(build_gate(SRM), SrmGate)


# --- latency -----------------------------------------------------------------------------------------------


def latency(increase: float, n: int, *, seed: int = 0) -> Evidence:
    rng = np.random.default_rng(seed)
    req_c = rng.lognormal(np.log(100 * (1 + increase)), 0.6, n)
    req_0 = rng.lognormal(np.log(100), 0.6, n)
    arms = {
        CANDIDATE: arm({}, requests={"latency_ms": req_c}),
        CHAMPION: arm({}, requests={"latency_ms": req_0}),
    }
    return Evidence("shadow", arms)


def test_latency_fails_a_proven_tail_regression_and_passes_a_clean_one() -> None:
    gate = build_gate(LATENCY)
    bad = gate.evaluate(latency(0.40, 20_000))
    assert bad.outcome is Outcome.FAIL and bad.ci_low > 0.10, bad.message
    check_verdict_contract(bad)
    good = gate.evaluate(latency(0.0, 50_000, seed=1))
    assert good.outcome is Outcome.PASS and good.ci_high <= 0.10, good.message
    assert isinstance(gate, LatencyGate) and "p99" in good.message


def test_latency_is_inconclusive_until_the_quantile_can_be_bounded() -> None:
    v = build_gate(LATENCY).evaluate(latency(0.0, 300))
    assert v.outcome is Outcome.INCONCLUSIVE and "381" in v.message
    assert build_gate(LATENCY).evaluate(latency(0.3, 3_000)).outcome is Outcome.INCONCLUSIVE


def test_latency_fails_closed() -> None:
    ev = latency(0.0, 5_000)
    ev.arm(CANDIDATE).requests["latency_ms"][10] = np.nan
    assert build_gate(LATENCY).evaluate(ev).outcome is Outcome.ERROR
    no_series = Evidence("shadow", {CANDIDATE: arm({}), CHAMPION: arm({})})
    assert build_gate(LATENCY).evaluate(no_series).outcome is Outcome.ERROR
    flat = Evidence(
        "shadow", {a: arm({}, requests={"latency_ms": np.full(1_000, 50.0)}) for a in (CANDIDATE, CHAMPION)}
    )
    assert build_gate(LATENCY).evaluate(flat).outcome is Outcome.ERROR
