"""Policy validation: every problem named with file, field path and reason; the shipped policies validate."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from stagegate.policy import PolicyError, load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {
    "model": "m",
    "stages": {"offline": {"gates": [{"type": "threshold", "metric": "ndcg@10", "min": 0.1}]}},
}


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml"])
def test_shipped_policies_validate(name: str) -> None:
    policy = load_policy(ROOT / "policies" / name)
    assert policy.model == "recsys-ranker"
    assert [s for s, _ in policy.stages.configured()] == [
        "offline",
        "simulation",
        "shadow",
        "canary",
        "rollout",
    ]


def test_demo_policy_approves_automatically_and_default_names_approvers() -> None:
    assert load_policy(ROOT / "policies/demo.yaml").approvals == "auto"
    approvals = load_policy(ROOT / "policies/default.yaml").approvals
    assert "release-manager" in approvals.approvers
    assert approvals.timeout == timedelta(hours=24)


def _problems(data: object) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(data, "p.yaml")
    return [str(p) for p in info.value.problems]


def test_unknown_gate_type_is_named_with_its_path() -> None:
    data = {"model": "m", "stages": {"canary": {"steps": [{"weight": 5}], "gates": [{"type": "nope"}]}}}
    problems = _problems(data)
    assert len(problems) == 1
    assert problems[0].startswith("p.yaml: stages.canary.gates[0].type: unknown gate type 'nope'")
    assert "threshold" in problems[0]  # lists the known types


def test_every_problem_is_reported_not_just_the_first() -> None:
    data = {
        "model": "m",
        "stages": {
            "offline": {"gates": [{"type": "threshold", "metric": "x", "min": 1, "mystery": 2}]},
            "canary": {"steps": [{"weight": 5}], "gates": [{"type": "relative", "metric": "y"}]},
        },
    }
    problems = _problems(data)
    assert any("stages.offline.gates[0].mystery" in p and "Extra inputs" in p for p in problems)
    assert any("stages.canary.gates[0].min_change" in p and "required" in p.lower() for p in problems)


def test_schema_errors_name_fields() -> None:
    data = {"model": "", "stages": {"canary": {"steps": [{"weight": 20}, {"weight": 5}]}}, "colour": "red"}
    problems = _problems(data)
    assert any(p.startswith("p.yaml: model:") for p in problems)
    assert any("stages.canary" in p and "increase" in p for p in problems)
    assert any(p.startswith("p.yaml: colour:") for p in problems)


def test_bad_durations_and_actions_are_refused() -> None:
    data = {**MINIMAL, "approvals": {"approvers": ["a"], "timeout": "soon"}}
    assert any("approvals.timeout" in p and "not a duration" in p for p in _problems(data))
    data = {
        "model": "m",
        "stages": {
            "offline": {"gates": [{"type": "threshold", "metric": "x", "min": 1, "on_fail": "shrug"}]}
        },
    }
    assert any("stages.offline.gates[0].on_fail" in p for p in _problems(data))


def test_gate_semantic_errors_are_refused() -> None:
    data = {"model": "m", "stages": {"offline": {"gates": [{"type": "threshold", "metric": "x"}]}}}
    assert any("min, max or both" in p for p in _problems(data))


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: m\nstages: {offline: [\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value) and "line" in str(info.value)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(PolicyError, match="expected a mapping"):
        load_policy(path)


def test_durations_parse_and_roundtrip() -> None:
    policy = parse_policy({**MINIMAL, "stages": {**MINIMAL["stages"], "rollout": {"bake": "90m"}}})
    assert policy.stages.rollout.bake == timedelta(minutes=90)
    assert policy.model_dump(mode="json")["stages"]["rollout"]["bake"] == "90m"
