"""Every installed gate type passes the shared suite; a new built-in without an example here fails."""

from __future__ import annotations

import pytest

from stagegate.plugins import gate_types
from tests.gates.conformance import check_gate, make_evidence

EXAMPLES: dict[str, dict] = {
    "threshold": {"type": "threshold", "metric": "ndcg@10", "min": 0.05},
    "relative": {"type": "relative", "metric": "revenue_per_user", "min_change": -0.05},
    "guardrail": {"type": "guardrail", "metric": "error_rate", "max": 0.01},
    "sequential": {
        "type": "sequential",
        "metric": "revenue_per_user",
        "method": "always_valid",
        "mde": 0.05,
        "alpha": 0.05,
    },
    "srm": {"type": "srm", "p_value": 0.001},
    "latency": {"type": "latency", "metric": "latency_ms", "quantile": 0.99, "max_increase": 0.10},
}


def test_every_installed_gate_type_has_an_example() -> None:
    missing = sorted(set(gate_types()) - set(EXAMPLES))
    assert not missing, f"gate types without a conformance example: {missing}"


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_gate_conformance(type_name: str) -> None:
    if type_name not in gate_types():
        pytest.fail(f"gate type {type_name!r} is not installed (entry point group stagegate.gates)")
    check_gate(EXAMPLES[type_name], make_evidence())
