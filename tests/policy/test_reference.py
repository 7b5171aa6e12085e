"""docs/policies.md is what the schema generates (stagegate.policy.reference), so it cannot drift, and it
names every field the schema accepts."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from typer.testing import CliRunner

from stagegate.policy import schema
from stagegate.policy.reference import policy_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"


def test_docs_policies_md_is_the_generated_reference() -> None:
    assert DOC.read_text(encoding="utf-8") == policy_reference(), (
        "docs/policies.md is out of date: `stagegate policy reference > docs/policies.md`"
    )


def _fields(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_every_field_of_the_schema_and_of_every_gate_type_is_documented() -> None:
    from stagegate.plugins import gate_class, gate_types

    text = policy_reference()
    models = [schema.Policy, schema.Approvals, schema.DecisionRule, schema.CanaryStep, schema.Stages]
    models += [schema.OfflineStage, schema.SimulationStage, schema.ShadowStage, schema.CanaryStage]
    models += [schema.RolloutStage] + [gate_class(t).Config for t in gate_types()]
    missing = {f"{m.__name__}.{f}" for m in models for f in _fields(m) if f"| `{f}` |" not in text}
    assert not missing, missing
    for type_name in gate_types():
        assert f"### `type: {type_name}`" in text


def test_the_cli_prints_it() -> None:
    from stagegate.cli import app

    out = CliRunner().invoke(app, ["policy", "reference"])
    assert out.exit_code == 0 and out.stdout == policy_reference()
