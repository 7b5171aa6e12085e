"""The ``prometheus`` metric source against a real Prometheus server (Debian's /usr/bin/prometheus, `make
integration-deps`) scraping tests/integrations/exporter.py every second: the router's metric names with a
known error rate and latency distribution per arm.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gates.guardrail import GuardrailGate
from gates.latency import LatencyGate
from gates.threshold import ThresholdGate
from stagegate.adapters.prometheus import (
    PrometheusMetricSource,
    UnjudgeableGates,
    check_template,
    escape_label_value,
    render,
)
from stagegate.connections import load_connections
from stagegate.evidence import CANDIDATE, CHAMPION
from stagegate.ports import MeasurementError, MetricSource, Window
from stagegate.verdict import Outcome

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import exporter  # noqa: E402  (the truth the exporter emits)
from prometheus_server import free_port, prometheus, stop_process  # noqa: E402

ARMS = (CHAMPION, CANDIDATE)


@dataclass(frozen=True)
class Stack:
    address: str
    started: datetime  # the exporter's first request


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("prometheus")
    exp = subprocess.Popen(
        [sys.executable, str(HERE / "exporter.py")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = exp.stdout.readline()
        match = re.fullmatch(r"PORT (\d+)\n", line)
        assert match, f"exporter did not report its port: {line!r} {exp.stderr.read() if exp.poll() else ''}"
        started = datetime.now(UTC)
        with prometheus(work, f"127.0.0.1:{match.group(1)}") as address:
            yield Stack(address, started)
    finally:
        stop_process(exp)


def source(address: str, **fields: object) -> PrometheusMetricSource:
    config = PrometheusMetricSource.Config.model_validate({"address": address, **fields})
    return PrometheusMetricSource.from_config(config)


def window(start: datetime, end: datetime, mirrored: bool = False) -> Window:
    return Window("p-1", "shadow" if mirrored else "canary", 0, start, end, mirrored)


@pytest.fixture(scope="module")
def measured(stack: Stack) -> tuple[Window, object]:
    """One measurement of a window that holds at least 8 s of scrapes (waits for them)."""
    start = stack.started + timedelta(seconds=2)
    end = start + timedelta(seconds=8)
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds() + 1.5))  # the last scrape has landed
    span = window(start, end)
    return span, source(stack.address).measure(span)


def test_error_rates_and_quantiles_match_the_truth(measured: tuple[Window, object]) -> None:
    span, measurement = measured
    assert isinstance(source("http://127.0.0.1:1"), MetricSource)
    for arm in ARMS:
        scalars = measurement.scalars[arm]
        truth = 1 / exporter.ERROR_EVERY[arm]
        assert scalars["error_rate"] == pytest.approx(truth, abs=0.003), (arm, scalars)
        for q, name in ((0.5, "latency_p50_ms"), (0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")):
            expected = 1000 * exporter.true_quantile(arm, q)
            assert scalars[name] == pytest.approx(expected, rel=0.03), (arm, name, scalars[name], expected)
        # The exporter's throughput depends on the machine's load (at most 200 a second), so the count is
        # only bounded; the errors among them must be the known share.
        assert 100 < scalars["requests_total"] <= 8 * exporter.PER_TICK / exporter.TICK * 1.1
        assert scalars["errors_total"] == pytest.approx(truth * scalars["requests_total"], rel=0.2)
        assert measurement.arms[arm].n_users == 0  # no per-user data is invented
    assert measurement.n_requests == round(sum(measurement.scalars[a]["requests_total"] for a in ARMS))
    assert measurement.window == span


def test_a_closed_window_measures_the_same_twice(stack: Stack, measured: tuple[Window, object]) -> None:
    span, first = measured
    assert source(stack.address).measure(span).scalars == first.scalars


def test_threshold_gates_judge_the_scalars(measured: tuple[Window, object]) -> None:
    _, measurement = measured
    evidence = measurement.evidence({CHAMPION: 0.9, CANDIDATE: 0.1})
    too_many_errors = ThresholdGate.from_spec({"type": "threshold", "metric": "error_rate", "max": 0.03})
    verdict = too_many_errors.evaluate(evidence)
    assert verdict.outcome is Outcome.FAIL and verdict.statistic == pytest.approx(0.05, abs=0.003)
    champion_ok = ThresholdGate.from_spec(
        {"type": "threshold", "metric": "error_rate", "max": 0.03, "arm": CHAMPION}
    )
    assert champion_ok.evaluate(evidence).outcome is Outcome.PASS
    slow = ThresholdGate.from_spec({"type": "threshold", "metric": "latency_p99_ms", "max": 150})
    assert slow.evaluate(evidence).outcome is Outcome.FAIL  # candidate p99 ~218 ms


def test_gates_that_need_per_user_data_are_refused_and_never_pass(measured: tuple[Window, object]) -> None:
    _, measurement = measured
    prom = source("http://127.0.0.1:1")
    guardrail = GuardrailGate.from_spec({"type": "guardrail", "metric": "error_rate", "max": 0.03})
    latency = LatencyGate.from_spec({"type": "latency", "quantile": 0.99})
    on_segment = ThresholdGate.from_spec(
        {"type": "threshold", "metric": "error_rate", "max": 0.03, "segment": "heavy"}
    )
    unknown_metric = ThresholdGate.from_spec({"type": "threshold", "metric": "revenue_per_user", "min": 1})
    with pytest.raises(UnjudgeableGates) as info:
        prom.check_gates([guardrail, latency, on_segment, unknown_metric])
    message = str(info.value)
    for name in (guardrail.name, latency.name, on_segment.name, unknown_metric.name):
        assert repr(name) in message
    assert "per-user" in message and "request-level" in message
    prom.check_gates([ThresholdGate.from_spec({"type": "threshold", "metric": "error_rate", "max": 0.03})])
    # Judged anyway, they say ERROR: no per-user or per-request data is there to pass on.
    evidence = measurement.evidence({CHAMPION: 0.9, CANDIDATE: 0.1})
    assert guardrail.evaluate(evidence).outcome is Outcome.ERROR
    assert latency.evaluate(evidence).outcome is Outcome.ERROR


def test_a_query_with_no_data_is_a_measurement_error(stack: Stack, measured: tuple[Window, object]) -> None:
    span, _ = measured
    missing = source(
        stack.address, queries={"requests_total": 'sum(rate(no_such_metric{arm="{arm}"}[{window}]))'}
    )
    with pytest.raises(MeasurementError, match=r"requests_total \(champion, arm='champion'\): no data"):
        missing.measure(span)
    # An arm label nobody emits: no series either.
    nobody = source(stack.address, arm_labels={CHAMPION: "champion", CANDIDATE: "nobody"})
    with pytest.raises(MeasurementError, match=r"arm='nobody'\): no data"):
        nobody.measure(span)
    # Every arm's series at once, not aggregated: one number was expected.
    unaggregated = source(stack.address, queries={"requests_total": "stagegate_requests_total"})
    with pytest.raises(MeasurementError, match=r"3 series where one was expected"):
        unaggregated.measure(span)


def test_an_idle_arm_is_an_error_not_a_zero(stack: Stack, measured: tuple[Window, object]) -> None:
    """The shadow series exist but never move: rate() is 0, the error ratio 0/0 is NaN."""
    span, _ = measured
    mirrored = window(span.start, span.end, mirrored=True)
    with pytest.raises(MeasurementError, match=r"no candidate requests \(arm='shadow'\)|returned NaN"):
        source(stack.address).measure(mirrored)
    only_rate = source(
        stack.address,
        default_queries=False,
        queries={
            "requests_total": 'sum(increase(stagegate_requests_total{arm="{arm}"}[{window}]))',
            "error_rate": 'sum(rate(stagegate_request_errors_total{arm="{arm}"}[{window}]))'
            ' / sum(rate(stagegate_requests_total{arm="{arm}"}[{window}]))',
        },
        arm_labels={CHAMPION: "shadow", CANDIDATE: "candidate"},
    )
    with pytest.raises(
        MeasurementError, match=r"error_rate \(champion, arm='shadow'\): the query returned NaN"
    ):
        only_rate.measure(span)


def test_a_bad_query_reports_prometheus_own_error(stack: Stack, measured: tuple[Window, object]) -> None:
    span, _ = measured
    broken = source(stack.address, queries={"error_rate": 'sum(rate(x{arm="{arm}"}[{window}])'})
    with pytest.raises(MeasurementError, match=r"HTTP 400: .*parse error"):
        broken.measure(span)


def test_a_down_server_raises_within_the_timeout(measured: tuple[Window, object]) -> None:
    span, _ = measured
    start = time.monotonic()
    with pytest.raises(MeasurementError, match="did not answer"):
        source(f"http://127.0.0.1:{free_port()}", timeout_seconds=1).measure(span)
    assert time.monotonic() - start < 3
    # A server that accepts the connection but never answers: the read times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        with pytest.raises(MeasurementError, match="did not answer"):
            source(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_seconds=1).measure(span)
        assert 0.9 < time.monotonic() - start < 4


def test_templates_take_only_the_fixed_placeholders_escaped() -> None:
    assert render('x{stage="{stage}"}[{window}]', {"stage": 'a"b\\c\nd', "window": "60s"}) == (
        'x{stage="a\\"b\\\\c\\nd"}[60s]'
    )
    assert escape_label_value('"') == '\\"'
    for template, reason in (
        ('x{arm="{user}"}', "unknown placeholder {user}"),
        ("x{arm={arm}}", "must be inside a double-quoted label value"),
        ('x[{window}]{a="{window}"}', "is a range and must not be quoted"),
        ('x{arm="{arm}}', "unterminated"),
        ('x{arm="{arm.__class__}"}', None),  # not a placeholder at all: left as PromQL text
        ('x{arm="{0}"}', None),
    ):
        if reason is None:
            check_template(template)
            assert render(template, {"arm": "c"}) == template
        else:
            with pytest.raises(ValueError, match=re.escape(reason)):
                check_template(template)
    with pytest.raises(ValueError, match="query 'rate'"):
        PrometheusMetricSource.Config.model_validate(
            {"address": "http://p:9090", "queries": {"rate": 'x{a="{nope}"}'}}
        )


def test_a_window_over_all_steps_refuses_a_step_template(
    stack: Stack, measured: tuple[Window, object]
) -> None:
    span, _ = measured
    stepped = source(stack.address, queries={"requests_total": 'sum(x{step="{step}"})'})
    every_step = Window("p-1", "canary", None, span.start, span.end)
    with pytest.raises(MeasurementError, match=r"uses \{step\}"):
        stepped.measure(every_step)


def _yaml_blocks(page: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_the_documented_connections_files_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_TOKEN", "t")
    blocks = _yaml_blocks(ROOT / "docs" / "adapters" / "prometheus.md")
    assert blocks, "docs/adapters/prometheus.md has no yaml example"
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.yaml"
        path.write_text(block, encoding="utf-8")
        assert load_connections(path).choices["metrics"].type == "prometheus"


def test_the_default_policys_canary_gates_are_refused_by_name() -> None:
    """What the guardrail monitor passes to check_gates: a policy stage's configured gates."""
    from stagegate.policy import load_policy
    from stagegate.policy.gates import configure_stage

    gates = configure_stage(load_policy(ROOT / "policies" / "default.yaml").stages.canary)
    with pytest.raises(UnjudgeableGates) as info:
        source("http://127.0.0.1:1").check_gates(gates)
    for configured in gates:
        if configured.gate.type != "threshold":
            assert repr(configured.name) in str(info.value)


def test_promote_refuses_gates_the_source_cannot_feed_before_anything_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A canary guardrail needs per-user data, which Prometheus does not hold: `stagegate promote` exits 2
    naming the policy and the gate, before Prefect starts and before the ledger or the split is written."""
    import yaml
    from typer.testing import CliRunner

    from stagegate.cli import app

    home = tmp_path / "ws"
    monkeypatch.setenv("STAGEGATE_HOME", str(home))
    monkeypatch.delenv("STAGEGATE_EVENTS_URL", raising=False)
    connections = tmp_path / "connections.yaml"
    connections.write_text(
        yaml.safe_dump({"metrics": {"type": "prometheus", "address": "http://127.0.0.1:1"}})
    )
    monkeypatch.setenv("STAGEGATE_CONNECTIONS", str(connections))
    policy = tmp_path / "policy.yaml"
    canary = {
        "steps": [{"weight": 10}],
        "gates": [
            {"type": "threshold", "metric": "error_rate", "max": 0.05},
            {"type": "guardrail", "metric": "error_rate", "max": 0.05},
        ],
    }
    policy.write_text(yaml.safe_dump({"model": "m", "stages": {"canary": canary}}))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["promote", "--model", "m", "--version", "2", "--policy", str(policy)])
    assert result.exit_code == 2, result.output
    assert f"{policy}: " in result.output and "guardrail:error_rate" in result.output, result.output
    assert "gate 'threshold:error_rate'" not in result.output  # the scalar gate is accepted
    assert time.monotonic() - started < 15
    assert not (home / "events.db").exists() and not (home / "traffic.json").exists()
