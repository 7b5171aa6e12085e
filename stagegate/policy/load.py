"""Load and validate a policy file: every problem with the file, the field path and the reason.

Nothing runs until a policy validates. Gate entries are validated by their own type's schema (found
through the ``stagegate.gates`` entry points), so an unknown gate type or a misspelt gate field is caught
here, not half-way through a canary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stagegate.plugins import UnknownGateType, build_gate
from stagegate.policy.gates import MARGIN_FIELD, effective_specs, split_spec, stage_problems
from stagegate.policy.schema import Policy
from stagegate.problems import Problem, ProblemsError, field_path, read_yaml


class PolicyError(ProblemsError):
    """A policy that does not validate; ``problems`` lists every one of them."""


def _is_union_tag(part: object) -> bool:
    # pydantic puts the union member it tried into the location ("Approvals", "literal['auto']").
    return isinstance(part, str) and (part[:1].isupper() or part.startswith(("literal[", "function-")))


def _pydantic_problems(file: str, exc: ValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    errors = exc.errors()
    for err in errors:
        raw = tuple(err["loc"])
        tags = [p for p in raw if _is_union_tag(p)]
        # A mapping given where a union also allows a literal: the literal branch's complaint is noise.
        if (
            tags
            and str(tags[-1]).startswith("literal[")
            and len(errors) > 1
            and isinstance(err.get("input"), dict)
        ):
            continue
        loc = field_path(tuple(p for p in raw if not _is_union_tag(p)))
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        problems.append(Problem(file, field, err["msg"]))
    return problems


def parse_policy(data: Any, file: str = "<policy>") -> Policy:
    """Validate already-parsed policy data; raises PolicyError listing every problem."""
    if not isinstance(data, dict):
        raise PolicyError(
            [Problem(file, "", f"expected a mapping at the top level, got {type(data).__name__}")]
        )
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        # The schema's problems, and those of every gate entry checked on its own, in one report: a bad
        # step weight must not hide an unknown gate type further down the same file.
        raise PolicyError([*_pydantic_problems(file, exc), *_raw_gate_problems(file, data)]) from None
    problems: list[Problem] = []
    for stage, config in policy.stages.configured():
        problems.extend(_gate_problems(file, stage, config))
    if policy.approvals != "auto":
        for stage, config in policy.stages.configured():
            if getattr(config, "approval", None) and not policy.approvals.approvers:
                problems.append(Problem(file, f"stages.{stage}.approval", "approval point but no approvers"))
    if problems:
        raise PolicyError(problems)
    return policy


def _gate_problems(file: str, stage: str, config: Any) -> list[Problem]:
    """Each gate entry: the pipeline's fields (role, margin, error limit), then the gate type's own schema
    on the spec the flow will run (margins and the decision rule's levels written in)."""
    problems = []
    for index, spec in enumerate(config.gates):
        if (problem := _type_problem(file, f"stages.{stage}.gates[{index}]", spec)) is not None:
            problems.append(problem)
            continue
        try:
            split_spec(spec)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(file, exc, prefix=f"stages.{stage}.gates[{index}]"))
    if problems:
        return problems
    problems = [Problem(file, f"stages.{stage}.{field}", reason) for field, reason in stage_problems(config)]
    try:
        specs = effective_specs(config)
    except ValueError as exc:
        return [*problems, Problem(file, f"stages.{stage}.decision", str(exc))]
    for index, (_, spec, twin) in enumerate(specs):
        where = f"stages.{stage}.gates[{index}]"
        for built in (spec, twin):
            if built is not None and (found := _build_problems(file, where, built)):
                problems.extend(found)
                break  # the twin repeats the spec's problems
    return problems


def _build_problems(file: str, where: str, spec: dict[str, Any]) -> list[Problem]:
    """What building the gate of ``spec`` refuses: its type, its type's schema, its own checks."""
    try:
        build_gate(spec)
    except UnknownGateType as exc:
        return [Problem(file, f"{where}.type", str(exc))]
    except ValidationError as exc:
        return _pydantic_problems(file, exc, prefix=where)
    except (TypeError, ValueError) as exc:
        return [Problem(file, where, str(exc))]
    return []


def _type_problem(file: str, where: str, spec: dict[str, Any]) -> Problem | None:
    """A gate entry must name its type, as a string, before anything else about it can be checked."""
    kind = spec.get("type")
    if isinstance(kind, str) and kind:
        return None
    got = "nothing" if kind is None else f"{type(kind).__name__} {kind!r}"
    return Problem(file, f"{where}.type", f"every gate needs a type, the name of a gate type; got {got}")


def _raw_gate_problems(file: str, data: dict[str, Any]) -> list[Problem]:
    """Each gate entry of unvalidated policy data, built on its own (type, the type's schema, the
    pipeline's fields): what :func:`_gate_problems` reports once the rest of the policy validates."""
    problems: list[Problem] = []
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return problems
    for stage, config in stages.items():
        gates = config.get("gates") if isinstance(config, dict) else None
        if not isinstance(gates, list):
            continue  # the schema's report says what is wrong with the list itself
        for index, spec in enumerate(gates):
            where = f"stages.{stage}.gates[{index}]"
            if not isinstance(spec, dict):
                continue  # reported by the schema
            if (problem := _type_problem(file, where, spec)) is not None:
                problems.append(problem)
                continue
            try:
                settings, own = split_spec(spec)
            except ValidationError as exc:
                problems.extend(_pydantic_problems(file, exc, prefix=where))
                continue
            if settings.margin is not None and own["type"] in MARGIN_FIELD:
                own = {**own, MARGIN_FIELD[own["type"]]: settings.margin}
            problems.extend(_build_problems(file, where, own))
    return problems


def resolve_relative(policy_path: str | Path, target: str) -> Path:
    """Paths inside a policy are relative to the policy file's folder."""
    candidate = Path(target)
    return candidate if candidate.is_absolute() else Path(policy_path).resolve().parent / candidate


def _check_files(policy: Policy, file: str) -> list[Problem]:
    offline = policy.stages.offline
    if offline is not None and offline.expectations:
        resolved = resolve_relative(file, offline.expectations)
        if not resolved.is_file():
            return [Problem(file, "stages.offline.expectations", f"no expectation suite at {resolved}")]
    return []


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy YAML file; raises PolicyError naming the file, field and reason."""
    file = str(path)
    data = read_yaml(path, PolicyError)
    policy = parse_policy(data, file)
    problems = _check_files(policy, file)
    if problems:
        raise PolicyError(problems)
    return policy
