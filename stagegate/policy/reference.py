"""docs/policies.md, generated from the policy schema and the gate types' own schemas, so it cannot drift.

``stagegate policy reference`` prints it; tests/policy/test_reference.py fails when docs/policies.md is not
what this module generates (regenerate with ``stagegate policy reference > docs/policies.md``). Every
field comes from the pydantic models: its type, default, constraints and description; the sections'
prose from the models' docstrings.
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from enum import Enum
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

INTRO = """\
# Policy reference

A policy is a YAML file (policies/ holds two) that says which stages a candidate goes through and which
gates decide at each. `stagegate policy validate FILE` checks it and reports every problem with the file,
the field and the reason; a field this page does not list is refused, never ignored. Durations are a
number followed by `s`, `m`, `h` or `d` (`"24h"`). This page is generated from the schema
(stagegate/policy/reference.py): `stagegate policy reference > docs/policies.md`.
"""

GATES_INTRO = """\
Each stage's `gates` is a list of entries; each names its `type` (a gate plugin, found through the
`stagegate.gates` entry points) and holds that type's fields plus three of the pipeline's. An outcome's
action (`on_fail`, `on_inconclusive`, `on_error`) is `rollback`, `hold` (wait for a human) or `record`
(a dry run: the verdict is recorded and does not act); a PASS never acts.
"""

PIPELINE_FIELDS = (  # (field, type, default, meaning): stagegate.policy.gates.GateSettings
    (
        "role",
        "`success` \\| `guardrail` \\| `quality`",
        "none",
        "the gate's part in `risk_aware` (required there)",
    ),
    (
        "margin",
        "number > 0",
        "none",
        "a guardrail's non-inferiority margin in the gate's unit (a sequential gate's `mde`)",
    ),
    (
        "consecutive_error_limit",
        "integer 0-100",
        "{limit}",
        "ERROR looks in a row tolerated before ERROR acts",
    ),
)


def _type_name(annotation: Any) -> str:
    """A field's type as a policy author reads it: `a` | `b`, number, duration, list of ..."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (Union, UnionType):
        parts = " \\| ".join(_type_name(a) for a in args if a is not type(None))
        return f"{parts} or none" if type(None) in args else parts
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    names = {int: "integer", float: "number", str: "string", bool: "boolean", timedelta: "duration"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "**required**"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(its defaults)"
        return f"`{value!r}`" if value not in ([], {}) else "empty"
    value = info.default
    if value is None:
        return "none"
    if isinstance(value, timedelta):
        from stagegate.policy.durations import format_duration

        return f"`{format_duration(value)}`"
    if hasattr(value, "value"):  # an enum
        return f"`{value.value}`"
    return f"`{value!r}`"


def _constraints(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >=")):
            if (bound := getattr(item, attr, None)) is not None:
                parts.append(f"{sign} {bound}")
    return ", ".join(parts)


def field_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    """A markdown table of ``model``'s fields: name, type, default, constraints, description."""
    rows = ["| field | type | default | constraints | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        meaning = (info.description or "").replace("|", "\\|").replace("\n", " ")
        kind, default, bounds = _type_name(info.annotation), _default(info), _constraints(info)
        rows.append(f"| `{name}` | {kind} | {default} | {bounds} | {meaning} |")
    return "\n".join(rows)


def _doc(model: type) -> str:
    own = model.__dict__.get("__doc__")
    return inspect.cleandoc(own) if own else ""


def _first_paragraph(module: Any) -> str:
    doc = inspect.cleandoc(getattr(module, "__doc__", None) or "")
    return doc.split("\n\n", 1)[0]


def policy_reference() -> str:
    """The whole of docs/policies.md."""
    from gates.base import GateConfig
    from stagegate.plugins import gate_class, gate_types
    from stagegate.policy import schema
    from stagegate.policy.gates import DEFAULT_ERROR_LIMIT

    sections = [INTRO, "## The policy", _doc(schema.Policy), field_table(schema.Policy)]
    sections += ["### `approvals`", _doc(schema.Approvals), field_table(schema.Approvals)]
    sections += ["## Stages", _doc(schema.Stages), field_table(schema.Stages)]
    sections += ["### Fields of every stage", _doc(schema._Stage), field_table(schema._Stage)]
    sections += ["### `decision`", _doc(schema.DecisionRule), field_table(schema.DecisionRule)]
    for name in schema.STAGE_ORDER:
        model = schema.Stages.model_fields[name].annotation
        model = next(a for a in getattr(model, "__args__", (model,)) if a is not type(None))  # X | None
        sections += [f"### `stages.{name}`", _doc(model), field_table(model, skip=("gates", "decision"))]
        if name == "canary":
            sections += ["Each entry of `steps`:", field_table(schema.CanaryStep)]
    pipeline = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    pipeline += [
        f"| `{f}` | {t} | {d.format(limit=DEFAULT_ERROR_LIMIT)} | {m} |" for f, t, d, m in PIPELINE_FIELDS
    ]
    sections += ["## Gates", GATES_INTRO, "### Fields of every gate entry, taken by the pipeline"]
    sections.append("\n".join(pipeline))
    sections += ["### Fields of every gate type", _doc(GateConfig), field_table(GateConfig)]
    for type_name in gate_types():
        cls = gate_class(type_name)
        doc = _doc(cls) or _doc(cls.Config) or _first_paragraph(inspect.getmodule(cls))
        sections += [
            f"### `type: {type_name}`",
            doc,
            field_table(cls.Config, skip=tuple(GateConfig.model_fields)),
        ]
    text = "\n\n".join(part.strip() for part in sections if part.strip())
    return text + "\n"
