"""Twin calibration (issue 12 item 6): the arithmetic on synthetic numbers with known answers, the support
rule, the record, and the simulation gates restricted to what the calibration supports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulator.world.twin_calibration import (
    RULE,
    MetricCalibration,
    calibrate,
    load_record,
    record,
    restrict_gates,
    support,
)

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f"c{i}" for i in range(10)]


def _effects(values) -> dict:
    return {n: {"revenue_per_user": float(v)} for n, v in zip(NAMES, values, strict=True)}


def test_calibration_arithmetic_on_known_numbers() -> None:
    truth = np.array([-0.20, -0.10, -0.05, -0.02, 0.01, 0.03, 0.05, 0.08, 0.12, 0.20])
    # the twin: a biased, monotone copy with two ranks swapped and two signs wrong
    twin = truth - 0.04
    twin[[6, 7]] = twin[[7, 6]]
    cal = calibrate(_effects(twin), _effects(truth), metrics=["revenue_per_user"])["revenue_per_user"]
    assert cal.n == 10 and cal.n_signed == 10
    # signs: the twin is negative for truth 0.01 and 0.03 -> 8/10 agree
    assert cal.sign_agreement == pytest.approx(0.8)
    # Spearman with one adjacent swap among 10: 1 - 6 * 2 / (10 * 99)
    assert cal.spearman == pytest.approx(1 - 12 / 990)
    assert cal.bias == pytest.approx(-0.04)
    assert cal.mean_abs_error == pytest.approx(np.mean(np.abs(twin - truth)))
    assert cal.supported()[0]  # 0.8 and 0.99 meet the rule
    # only resolved true signs count: the three small true effects (-0.02, 0.01, 0.03) have intervals
    # covering 0, and the two wrong signs were among them
    ci = {n: {"revenue_per_user": [t - 0.035, t + 0.035]} for n, t in zip(NAMES, truth, strict=True)}
    cal = calibrate(_effects(twin), _effects(truth), ci, metrics=["revenue_per_user"])["revenue_per_user"]
    assert cal.n_signed == 7 and cal.sign_agreement == 1.0


def test_an_anti_correlated_twin_is_not_supported() -> None:
    truth = np.linspace(-0.2, 0.2, 10)
    cal = calibrate(_effects(-truth), _effects(truth), metrics=["revenue_per_user"])["revenue_per_user"]
    assert cal.spearman == pytest.approx(-1.0) and cal.sign_agreement == 0.0
    ok, why = cal.supported()
    assert not ok and "sign agreement" in why and "Spearman" in why
    few = calibrate(
        {n: v for n, v in _effects(truth).items() if n in NAMES[:5]},
        _effects(truth),
        metrics=["revenue_per_user"],
    )["revenue_per_user"]
    assert few.n == 5 and not few.supported()[0]  # fewer candidates than the rule needs
    nan = MetricCalibration("revenue_per_user", 10, 0, float("nan"), float("nan"), float("nan"), 0.0, 0.0)
    assert not nan.supported()[0]


def _record(supported: bool) -> dict:
    truth = np.linspace(-0.2, 0.2, 10)
    twin = truth if supported else -truth
    cal = calibrate(_effects(twin), _effects(truth), metrics=["revenue_per_user"])
    return json.loads(json.dumps(record(cal, benchmark="test")))


GATES = [
    {"type": "relative", "metric": "revenue_per_user", "min_change": -0.05, "on_inconclusive": "record"},
    {"type": "relative", "metric": "clicks_per_user", "min_change": -0.05, "on_fail": "record"},
    {"type": "relative", "metric": "revenue_per_user:dr", "min_change": -0.03, "on_fail": "rollback"},
]


def test_restrict_gates_holds_where_the_calibration_does_not_support() -> None:
    gates, notes = restrict_gates(GATES, _record(supported=False))
    assert gates[0]["on_fail"] == "hold" and gates[0]["on_error"] == "hold"
    assert gates[0]["on_inconclusive"] == "record"  # not a rollback: left alone
    assert gates[1]["on_fail"] == "record" and gates[1]["on_error"] == "hold"  # clicks: not in the record
    assert gates[2] == GATES[2]  # an off-policy estimate is not the twin's
    assert len(notes) == 2 and "not supported" in notes[0] and "not in the twin calibration" in notes[1]
    same, notes = restrict_gates(GATES[:1], _record(supported=True))
    assert same == GATES[:1] and "supported" in notes[0]
    held, notes = restrict_gates(GATES[:1], None)
    assert held[0]["on_fail"] == "hold" and "no twin calibration record" in notes[0]
    assert GATES[0].get("on_fail") is None  # the policy's entries are not mutated


def test_load_record_fails_closed_on_a_named_bad_file(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_record(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"metrics": {"revenue_per_user": {"n": 3}}}')
    with pytest.raises(ValueError, match="malformed"):
        load_record(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_record(supported=True)))
    monkeypatch.setenv("STAGEGATE_TWIN_CALIBRATION", str(good))
    data = load_record()
    assert data["path"] == str(good) and support(data, "revenue_per_user")[0]
    assert data["rule"] == RULE


def test_simulation_stage_gates_follow_the_record(tmp_path: Path, monkeypatch) -> None:
    from flows.stages.simulation import calibrated_gates
    from stagegate.policy.load import load_policy

    sim = load_policy(ROOT / "policies" / "default.yaml").stages.simulation
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_record(supported=False)))
    monkeypatch.setenv("STAGEGATE_TWIN_CALIBRATION", str(bad))
    gates, info = calibrated_gates(sim)
    twin_gate = next(g for g in gates if g.get("metric") == "revenue_per_user")
    assert twin_gate["on_fail"] == "hold" and info["record"] == str(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_record(supported=True)))
    monkeypatch.setenv("STAGEGATE_TWIN_CALIBRATION", str(good))
    gates, _ = calibrated_gates(sim)
    assert gates == [dict(g) for g in sim.gates]


def test_the_shipped_record_is_valid() -> None:
    monkeypatch_free = load_record(ROOT / "simulator" / "world" / "twin_calibration.json")
    assert set(monkeypatch_free["metrics"]) == {"revenue_per_user", "purchases_per_user", "clicks_per_user"}
    assert monkeypatch_free["provenance"]["benchmark"] == "benchmarks/twin_calibration.py"


def test_calibrated_context_replaces_only_the_simulation_gates(tmp_path: Path, monkeypatch) -> None:
    from flows.context import PromotionContext
    from flows.stages.simulation import calibrated_context
    from stagegate.policy.load import load_policy

    policy = load_policy(ROOT / "policies" / "default.yaml")
    ctx = PromotionContext(
        promotion_id="p",
        model="m",
        version="2",
        champion_version="1",
        policy=policy,
        policy_path="default.yaml",
        mlflow_run_id="r",
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_record(supported=False)))
    monkeypatch.setenv("STAGEGATE_TWIN_CALIBRATION", str(bad))
    new, info = calibrated_context(ctx)
    gates = new.policy.stages.simulation.gates
    assert next(g for g in gates if g["metric"] == "revenue_per_user")["on_fail"] == "hold"
    assert new.policy.stages.canary == ctx.policy.stages.canary and new.version == "2"
    assert "on_fail" not in next(
        g for g in ctx.policy.stages.simulation.gates if g["metric"] == "revenue_per_user"
    )
    assert info["notes"] and info["record"] == str(bad)
