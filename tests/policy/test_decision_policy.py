"""The decision block and gate roles: a risk_aware stage names its guardrails with margins, or is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stagegate.policy import PolicyError, load_policy, parse_policy
from stagegate.policy.gates import configure_stage

ROOT = Path(__file__).resolve().parents[2]
SRM = {"type": "srm", "role": "quality"}
REVENUE = {"type": "sequential", "metric": "revenue_per_user", "method": "always_valid", "mde": 0.1}
PURCHASES = {"type": "sequential", "metric": "purchases_per_user", "method": "always_valid"}


def _canary(gates: list[dict[str, Any]], rule: str = "risk_aware") -> dict[str, Any]:
    return {
        "model": "m",
        "stages": {"canary": {"steps": [{"weight": 10}], "decision": {"rule": rule}, "gates": gates}},
    }


def _problems(data: Any) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(data, "p.yaml")
    return [str(p) for p in info.value.problems]


def test_shipped_policies_say_which_rule_they_use() -> None:
    default = load_policy(ROOT / "policies" / "default.yaml").stages.canary
    assert default is not None and default.decision.rule == "risk_aware"
    roles = {g.name: g.role for g in configure_stage(default)}
    assert roles["sequential:purchases_per_user"] == "guardrail"
    assert roles["sequential:revenue_per_user"] == "success"
    demo = load_policy(ROOT / "policies" / "demo.yaml").stages.canary
    assert demo is not None and demo.decision.rule == "any_harm"  # approvals auto: a HOLD would reject


def test_a_valid_risk_aware_stage_runs_its_gates_at_the_rule_levels() -> None:
    policy = parse_policy(
        _canary([SRM, {**REVENUE, "role": "success"}, {**PURCHASES, "role": "guardrail", "margin": 0.05}])
    )
    gates = {g.name: g for g in configure_stage(policy.stages.canary)}
    guard = gates["sequential:purchases_per_user"].gate.config
    assert (guard.mde, guard.beta, guard.alpha) == (0.05, 0.05, 0.05)  # margin -> mde, NI at alpha
    success = gates["sequential:revenue_per_user"]
    twin = success.superiority.config
    assert twin.direction == "decrease" and twin.harm_margin == 0.0 and twin.alpha == pytest.approx(0.05)
    assert success.superiority.name == "sequential:revenue_per_user better"


def test_every_gate_needs_a_role_and_one_guardrail() -> None:
    problems = _problems(_canary([{"type": "srm"}, {**REVENUE, "role": "success"}]))
    assert any(
        p.startswith("p.yaml: stages.canary.gates[0].role: decision rule risk_aware") for p in problems
    )
    assert any(
        "stages.canary.gates: decision rule risk_aware needs at least one guardrail" in p for p in problems
    )


def test_guardrail_margins_are_required_once_and_only_on_guardrails() -> None:
    assert any(
        "stages.canary.gates[1].margin: a guardrail of a risk_aware stage needs a margin" in p
        for p in _problems(_canary([SRM, {**PURCHASES, "role": "guardrail", "mde": 0.1}]))
    )
    twice = _problems(_canary([{**PURCHASES, "role": "guardrail", "margin": 0.1, "mde": 0.1}]))
    assert any("stages.canary.gates[0].mde: give the guardrail's margin once" in p for p in twice)
    on_quality = _problems(
        _canary([{**SRM, "margin": 0.1}, {**PURCHASES, "role": "guardrail", "margin": 0.1}])
    )
    assert any("stages.canary.gates[0].margin: only a guardrail" in p for p in on_quality)
    wrong_type = _problems(
        _canary(
            [{"type": "guardrail", "metric": "error_rate", "max": 0.01, "role": "guardrail", "margin": 0.1}]
        )
    )
    assert any(
        "gates[0].margin: gate type 'guardrail' has no non-inferiority margin" in p for p in wrong_type
    )


def test_levels_and_record_mode_are_the_rules_not_the_gates() -> None:
    problems = _problems(
        _canary(
            [
                {**REVENUE, "role": "success", "alpha": 0.1},
                {**PURCHASES, "role": "guardrail", "margin": 0.1, "on_inconclusive": "record"},
            ]
        )
    )
    assert any("gates[0].alpha: set by the risk_aware rule" in p for p in problems)
    assert any("gates[1].on_inconclusive: a guardrail in record mode cannot decide" in p for p in problems)


def test_success_metrics_need_a_gate_that_can_prove_an_improvement() -> None:
    problems = _problems(
        _canary(
            [
                {"type": "guardrail", "metric": "error_rate", "max": 0.01, "role": "success"},
                {**PURCHASES, "role": "guardrail", "margin": 0.1},
            ]
        )
    )
    assert any(
        "gates[0].type: a success metric needs a gate that can prove an improvement" in p for p in problems
    )


def test_pipeline_fields_are_validated_with_their_paths() -> None:
    problems = _problems(
        _canary(
            [{**PURCHASES, "role": "guard", "margin": 0.1, "consecutive_error_limit": -1}], rule="any_harm"
        )
    )
    assert any(p.startswith("p.yaml: stages.canary.gates[0].role:") for p in problems)
    assert any(p.startswith("p.yaml: stages.canary.gates[0].consecutive_error_limit:") for p in problems)
    assert any("stages.canary.decision.rule" in p for p in _problems(_canary([SRM], rule="best_effort")))


def test_any_harm_needs_no_roles_and_keeps_old_policies_valid() -> None:
    policy = parse_policy(_canary([{"type": "srm"}, {**PURCHASES, "mde": 0.1}], rule="any_harm"))
    gates = configure_stage(policy.stages.canary)
    assert gates.rule == "any_harm" and [g.role for g in gates] == [None, None]
    assert gates.gates[1].gate.config.beta == 0.18  # the gate's own default: the rule sets no levels
