"""Property-based tests (hypothesis) of the policy and connections parsers: whatever YAML a person
writes, the parser either returns a validated object or raises its own error listing problems that name
the file and a field; it never crashes with another exception, and it reports every independent problem
in one run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagegate.connections.load import ConnectionsError, parse_connections
from stagegate.policy import PolicyError, parse_policy

REPO = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((REPO / "policies" / "default.yaml").read_text(encoding="utf-8"))
FILE = "p.yaml"

# What YAML can hold: scalars (NaN, infinities, huge numbers, empty and odd strings) nested in lists and maps.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["24h", "0s", "-1h", "auto", "sequential", "threshold", "guardrail", "revenue", "${X}"]),
)
yaml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node of a nested dict/list, the root excluded."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


POLICY_PATHS = _paths(SHIPPED)


def _set(data: Any, path: tuple, value: Any) -> Any:
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def _check_policy(data: Any) -> None:
    try:
        parse_policy(data, FILE)
    except PolicyError as exc:
        assert exc.problems, "a PolicyError must list at least one problem"
        for problem in exc.problems:
            assert problem.file == FILE and problem.reason, problem


@SETTINGS
@given(yaml_values)
def test_any_yaml_is_a_policy_or_a_policy_error(data: Any) -> None:
    _check_policy(data)


@SETTINGS
@given(st.sampled_from(POLICY_PATHS), yaml_values)
def test_any_field_of_the_shipped_policy_set_to_anything_is_validated_or_refused(
    path: tuple, value: Any
) -> None:
    _check_policy(_set(SHIPPED, path, value))


@SETTINGS
@given(st.sampled_from(POLICY_PATHS))
def test_a_removed_field_is_validated_or_refused(path: tuple) -> None:
    data = copy.deepcopy(SHIPPED)
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    _check_policy(data)


@SETTINGS
@given(
    weight=st.one_of(st.integers(min_value=101, max_value=10**6), st.integers(max_value=-1)),
    gate_type=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=3, max_size=12).filter(
        lambda t: t not in {"guardrail", "latency", "relative", "sequential", "srm", "threshold"}
    ),
)
def test_a_schema_error_never_hides_an_unknown_gate_type(weight: int, gate_type: str) -> None:
    """Two independent mistakes in one file: both are reported, each with its field."""
    data = copy.deepcopy(SHIPPED)
    data["stages"]["canary"]["steps"][0]["weight"] = weight
    data["stages"]["canary"]["gates"][0]["type"] = gate_type
    try:
        parse_policy(data, FILE)
    except PolicyError as exc:
        fields = {p.field for p in exc.problems}
    else:
        raise AssertionError("a policy with two mistakes validated")
    assert "stages.canary.steps[0].weight" in fields, fields
    assert "stages.canary.gates[0].type" in fields, fields


def _check_connections(data: Any) -> None:
    try:
        parse_connections(data, "c.yaml")
    except ConnectionsError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == "c.yaml" and problem.reason, problem


PORT_SECTIONS = st.fixed_dictionaries(
    {},
    optional={
        port: st.one_of(
            yaml_values,
            st.fixed_dictionaries(
                {"type": st.sampled_from(["simulator", "http", "prometheus", "sql", "nope", ""])},
                optional={
                    "url": scalars,
                    "query": scalars,
                    "token": st.sampled_from(["hunter2", "${env:TOKEN}", "${secret:block}"]),
                    "timeout": scalars,
                },
            ),
        )
        for port in ("traffic", "metrics", "offline", "clock")
    },
)


@SETTINGS
@given(st.one_of(yaml_values, PORT_SECTIONS))
def test_any_yaml_is_connections_or_a_connections_error(data: Any) -> None:
    _check_connections(data)


@SETTINGS
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=20).map("zq9x".__add__))
def test_a_literal_secret_is_always_refused(secret: str) -> None:
    """A password written into the file is refused, however it looks, and the refusal names the field."""
    data = {"metrics": {"type": "prometheus", "url": "http://127.0.0.1:9090", "password": secret}}
    try:
        parse_connections(data, "c.yaml")
    except ConnectionsError as exc:
        assert any(p.field.startswith("metrics.password") for p in exc.problems), exc.problems
        assert all(secret not in p.reason for p in exc.problems)  # and the message does not repeat it
    else:
        raise AssertionError("a literal password was accepted")
