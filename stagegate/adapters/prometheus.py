"""The ``prometheus`` metric source: arm-level aggregates from PromQL instant queries, one per metric and arm.

Configured like an Argo Rollouts Prometheus provider: an ``address``, a PromQL query template per metric,
an ``interval`` and ``timeout_seconds``. The defaults read the router's metrics, whose names are fixed:

- ``stagegate_requests_total{arm}`` (counter), ``stagegate_request_errors_total{arm}`` (counter),
- ``stagegate_request_latency_seconds{arm}`` (histogram), with ``arm`` one of champion, candidate, shadow.

What reaches the gates, and what cannot. Prometheus holds counters and histogram buckets per arm, not one
row per user or per request, so this source returns no per-user arrays and no request-level series (it does
not invent them). Each arm of its :class:`AggregateMeasurement` has zero units; the numbers travel as
``Evidence.scalars[arm][metric]`` (``error_rate``, ``latency_p99_ms``, ...). Of the built-in gates only the
``threshold`` gate judges a scalar; guardrail (its interval is over users), latency (its quantile interval
is over requests), relative, sequential and srm need per-user or per-request data. :meth:`check_gates`
refuses those combinations with an error naming each gate, and the guardrail monitor calls it before its
first look; a gate that slips through would say ERROR (no per-user data), never PASS.

Failing closed: a query that returns no series, more than one series, NaN or an infinite value, an HTTP
error, a Prometheus error answer or a timeout raises MeasurementError; so does an expected arm with no
request in the window. Nothing is ever read as zero.

Placeholders in a template are a fixed set (:data:`PLACEHOLDERS`), substituted by name, never through
``str.format``: ``{arm}``, ``{promotion_id}``, ``{stage}`` and ``{step}`` must sit inside a double-quoted
PromQL string and are escaped as its content; ``{window}`` (the range, e.g. ``300s``) must sit outside
quotes and is always a number of seconds. The router's metrics carry no promotion label: the default
queries measure what the router served in the window's time span, whichever promotion it was.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stagegate.connections.secrets import SecretRef
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.ports import ARMS, Measurement, MeasurementError, UnjudgeableGates, Window

#: Placeholders a template may use: label values (quoted, escaped) and the range (unquoted).
LABEL_PLACEHOLDERS = ("arm", "promotion_id", "stage", "step")
RANGE_PLACEHOLDERS = ("window",)
PLACEHOLDERS = LABEL_PLACEHOLDERS + RANGE_PLACEHOLDERS

_QUANTILE = (
    "1000 * histogram_quantile({q}, sum by (le) "
    '(rate(stagegate_request_latency_seconds_bucket{{arm="{{arm}}"}}[{{window}}])))'
)
#: The router's metrics (names fixed), one number per arm. Latencies in milliseconds, like latency_ms.
DEFAULT_QUERIES: dict[str, str] = {
    "requests_total": 'sum(increase(stagegate_requests_total{arm="{arm}"}[{window}]))',
    "errors_total": 'sum(increase(stagegate_request_errors_total{arm="{arm}"}[{window}]))',
    "error_rate": (
        'sum(rate(stagegate_request_errors_total{arm="{arm}"}[{window}]))'
        ' / sum(rate(stagegate_requests_total{arm="{arm}"}[{window}]))'
    ),
    "latency_p50_ms": _QUANTILE.format(q="0.5"),
    "latency_p95_ms": _QUANTILE.format(q="0.95"),
    "latency_p99_ms": _QUANTILE.format(q="0.99"),
}
#: The metric whose value says whether an arm had traffic in the window.
REQUESTS_METRIC = "requests_total"

#: The gate types that can judge arm-level scalars.
SCALAR_GATES = frozenset({"threshold"})
_WHY_NOT = {
    "guardrail": "its confidence bound is over per-user values; use a threshold gate on the same metric",
    "latency": "it compares quantiles of request-level samples; use a threshold gate on latency_p99_ms",
    "relative": "it compares per-user means of two arms",
    "sequential": "its always-valid test runs over per-user values",
    "srm": "it counts users per arm, and Prometheus counts requests",
}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """A Prometheus-style duration (``30s``, ``5m``, ``1h``) in seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a positive duration such as 30s, 5m or 1h")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _quoted_spans(template: str) -> list[tuple[int, int]]:
    """(start, end) of every double-quoted string in a PromQL template, backslash escapes honoured."""
    spans, start, i = [], None, 0
    while i < len(template):
        char = template[i]
        if start is not None and char == "\\":
            i += 2
            continue
        if char == '"':
            if start is None:
                start = i
            else:
                spans.append((start, i))
                start = None
        i += 1
    if start is not None:
        raise ValueError("unterminated double-quoted string")
    return spans


def check_template(template: str) -> None:
    """Refuse a template with an unknown placeholder, a label placeholder outside a double-quoted string,
    or ``{window}`` inside one (ValueError naming it)."""
    spans = _quoted_spans(template)
    for match in _PLACEHOLDER.finditer(template):
        name, pos = match.group(1), match.start()
        inside = any(a < pos < b for a, b in spans)
        if name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{name}}} (known: {', '.join(PLACEHOLDERS)})")
        if name in LABEL_PLACEHOLDERS and not inside:
            raise ValueError(f'{{{name}}} must be inside a double-quoted label value, e.g. arm="{{{name}}}"')
        if name in RANGE_PLACEHOLDERS and inside:
            raise ValueError(f"{{{name}}} is a range and must not be quoted, e.g. [{{{name}}}]")


def escape_label_value(value: str) -> str:
    """``value`` as the content of a double-quoted PromQL string: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute the fixed placeholders in ``template`` (already checked by :func:`check_template`);
    label values are escaped, the range is inserted as given (the caller formats it)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(name)
        value = values[name]
        return escape_label_value(value) if name in LABEL_PLACEHOLDERS else value

    return _PLACEHOLDER.sub(substitute, template)


@dataclass(frozen=True)
class AggregateMeasurement(Measurement):
    """A measurement of arm-level aggregates: arms with zero units, the numbers in ``scalars``."""

    scalars: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def evidence(
        self, allocation: Mapping[str, float] | None = None, look: int = 1, history: tuple[Evidence, ...] = ()
    ) -> Evidence:
        base = super().evidence(allocation, look, history)
        return replace(base, scalars={arm: dict(values) for arm, values in self.scalars.items()})


class PrometheusMetricSource:
    """Arm-level aggregates from a Prometheus server's HTTP API (module docstring)."""

    class Config(BaseModel):
        """``address``: the server's base URL (no password in it); ``queries``: metric name -> PromQL
        template, added to (or replacing entries of) :data:`DEFAULT_QUERIES` unless ``default_queries`` is
        false; ``interval``: the range ``{window}`` covers when a window has no start; ``timeout_seconds``:
        bounds each HTTP operation and Prometheus' own evaluation; ``arm_labels``: the ``arm`` label value of
        each stagegate arm (``shadow_label`` for the candidate on mirrored windows); ``bearer_token``: a
        secret reference, sent as ``Authorization: Bearer``."""

        model_config = ConfigDict(extra="forbid")

        address: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
        queries: dict[str, str] = Field(default_factory=dict)
        default_queries: bool = True
        interval: str = "5m"
        timeout_seconds: float = Field(default=10.0, gt=0, le=300)
        arm_labels: dict[str, str] = Field(default_factory=lambda: {CHAMPION: CHAMPION, CANDIDATE: CANDIDATE})
        shadow_label: str = "shadow"
        bearer_token: SecretRef | None = None

        @field_validator("queries")
        @classmethod
        def _templates(cls, queries: dict[str, str]) -> dict[str, str]:
            for name, template in queries.items():
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    raise ValueError(f"metric name {name!r} must be an identifier")
                try:
                    check_template(template)
                except ValueError as exc:
                    raise ValueError(f"query {name!r}: {exc}") from exc
            return queries

        @field_validator("interval")
        @classmethod
        def _interval(cls, interval: str) -> str:
            duration_seconds(interval)
            return interval

        @field_validator("arm_labels")
        @classmethod
        def _arms(cls, labels: dict[str, str]) -> dict[str, str]:
            missing = [arm for arm in ARMS if arm not in labels]
            if missing:
                raise ValueError(f"arm_labels needs a label value for {missing}")
            return labels

    def __init__(self, config: Config, token: str | None = None) -> None:
        self.config = config
        self.address = config.address.rstrip("/")
        self.queries = {**(DEFAULT_QUERIES if config.default_queries else {}), **config.queries}
        if REQUESTS_METRIC not in self.queries:
            raise ValueError(f"queries must define {REQUESTS_METRIC!r}: it tells whether an arm had traffic")
        self._token = token

    @classmethod
    def from_config(cls, config: Config, host: Any = None) -> PrometheusMetricSource:
        token = config.bearer_token.resolve() if config.bearer_token is not None else None
        return cls(config, token)

    # -- the port --------------------------------------------------------------------------------------

    def measure(self, window: Window, expect: Sequence[str] = ARMS) -> AggregateMeasurement:
        """Every configured metric for every arm in ``expect`` (MeasurementError on any failure)."""
        end = window.end or datetime.now(UTC)
        seconds = (
            (end - window.start).total_seconds()
            if window.start is not None
            else duration_seconds(self.config.interval)
        )
        common = {
            "promotion_id": window.promotion_id,
            "stage": window.stage,
            "window": f"{max(1, math.ceil(seconds))}s",
        }
        if window.step is not None:
            common["step"] = str(window.step)
        scalars: dict[str, dict[str, float]] = {}
        for arm in expect:
            label = self._label(arm, window)
            values = {**common, "arm": label}
            scalars[arm] = {}
            for metric, template in self.queries.items():
                try:
                    query = render(template, values)
                except KeyError as exc:
                    raise MeasurementError(
                        f"query {metric!r} uses {{{exc.args[0]}}}, which this window does not define "
                        "(a window over all steps has no {step})",
                        window=window,
                    ) from exc
                scalars[arm][metric] = self._instant(query, end, f"{metric} ({arm}, arm={label!r})", window)
            if scalars[arm][REQUESTS_METRIC] <= 0:
                raise MeasurementError(
                    f"no {arm} requests (arm={label!r}) in the window: {REQUESTS_METRIC} is "
                    f"{scalars[arm][REQUESTS_METRIC]:g}",
                    window=window,
                )
        empty = ArmSample(user_ids=np.empty(0, dtype=np.int64), metrics={})
        n_requests = round(sum(s[REQUESTS_METRIC] for s in scalars.values()))
        return AggregateMeasurement(
            window=window, arms=dict.fromkeys(expect, empty), n_requests=n_requests, scalars=scalars
        )

    def check_gates(self, gates: Iterable[Any]) -> None:
        """Refuse gates that cannot judge arm-level scalars (UnjudgeableGates naming each and why).

        Accepts gates or the policy's configured gates (``.gate``); a success metric's superiority twin is
        checked too. Only a gate of a type in :data:`SCALAR_GATES`, on a metric this source measures and on
        no segment, is accepted."""
        problems = []
        for entry in gates:
            for gate in (getattr(entry, "gate", entry), getattr(entry, "superiority", None)):
                if gate is None:
                    continue
                reason = self._unjudgeable(gate)
                if reason is not None:
                    problems.append(f"gate {gate.name!r} ({gate.type}): {reason}")
        if problems:
            raise UnjudgeableGates(
                "the prometheus metric source measures arm-level aggregates only, which these gates cannot "
                "judge: " + "; ".join(problems)
            )

    # -- helpers ---------------------------------------------------------------------------------------

    def _unjudgeable(self, gate: Any) -> str | None:
        kind = str(getattr(gate, "type", type(gate).__name__))
        config = getattr(gate, "config", None)
        if kind not in SCALAR_GATES:
            return _WHY_NOT.get(kind, "it is not a gate type that judges a single aggregate")
        metric, segment = getattr(config, "metric", None), getattr(config, "segment", None)
        if segment is not None:
            return f"segment {segment!r}: Prometheus has no per-user segments"
        if metric not in self.queries:
            return (
                f"metric {metric!r} is not one of the configured queries ({', '.join(sorted(self.queries))})"
            )
        return None

    def _label(self, arm: str, window: Window) -> str:
        if window.mirrored and arm == CANDIDATE:
            return self.config.shadow_label
        if arm not in self.config.arm_labels:
            raise MeasurementError(f"no arm label configured for arm {arm!r}", window=window)
        return self.config.arm_labels[arm]

    def _instant(self, query: str, at: datetime, what: str, window: Window) -> float:
        """One instant query: exactly one finite number, or MeasurementError naming ``what``."""
        params = urllib.parse.urlencode(
            {"query": query, "time": f"{at.timestamp():.3f}", "timeout": f"{self.config.timeout_seconds:g}s"}
        )
        request = urllib.request.Request(f"{self.address}/api/v1/query?{params}")
        if self._token is not None:
            request.add_header("Authorization", f"Bearer {self._token}")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise MeasurementError(
                f"{what}: Prometheus answered HTTP {exc.code}: {_error_of(exc)}; query: {query}",
                window=window,
            ) from exc
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            took = time.monotonic() - started
            raise MeasurementError(
                f"{what}: Prometheus at {self.address} did not answer ({exc}) after {took:.1f} s",
                window=window,
            ) from exc
        if body.get("status") != "success":
            raise MeasurementError(
                f"{what}: Prometheus error {body.get('error')!r}; query: {query}", window=window
            )
        data = body.get("data", {})
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            raw = result[1]
        elif kind == "vector":
            if not result:
                raise MeasurementError(
                    f"{what}: no data (the query returned no series); query: {query}", window=window
                )
            if len(result) > 1:
                raise MeasurementError(
                    f"{what}: {len(result)} series where one was expected (aggregate them with sum); "
                    f"query: {query}",
                    window=window,
                )
            raw = result[0]["value"][1]
        else:
            raise MeasurementError(
                f"{what}: a {kind} result where a number was expected; query: {query}", window=window
            )
        value = float(raw)
        if not math.isfinite(value):
            raise MeasurementError(
                f"{what}: the query returned {raw} (no traffic to divide by?); query: {query}", window=window
            )
        return value


def _error_of(exc: urllib.error.HTTPError) -> str:
    """Prometheus' own error message from an HTTP error answer, else its status line."""
    try:
        return str(json.loads(exc.read()).get("error") or exc.reason)
    except (ValueError, OSError):
        return str(exc.reason)
