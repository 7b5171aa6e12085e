"""The ``prometheus`` metric source on the real serving path: `stagegate serve` (a process) answers requests
split between the champion and a candidate that fails some of them and is slow on others; a real Prometheus
server scrapes its /metrics every half second; the metric source's per-arm error rates and latency
quantiles, read back through PromQL, match what the router answered (the truth, counted from the
responses)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from stagegate.adapters.prometheus import PrometheusMetricSource
from stagegate.evidence import CANDIDATE, CHAMPION
from stagegate.ports import MeasurementError, Window
from stagegate.traffic import Split
from tests.integrations.prometheus_server import prometheus
from tests.router.conftest import TOKEN, Registry, ask, auth
from tests.router.test_serve import ServeProcess, _args, _env

USERS = 240


def scraped(address: str, series: str, at_least: int, timeout: float = 60.0) -> None:
    """Wait until Prometheus holds ``at_least`` samples of ``series`` (its first scrape comes up to a few
    seconds after it is ready)."""
    deadline = time.monotonic() + timeout
    query = f"count_over_time({series}[5m])"
    while time.monotonic() < deadline:
        result = httpx.get(f"{address}/api/v1/query", params={"query": query}).json()["data"]["result"]
        if result and min(float(r["value"][1]) for r in result) >= at_least:
            return
        time.sleep(0.25)
    raise AssertionError(f"prometheus at {address} did not scrape {series} {at_least} times in {timeout}s")


def test_error_rate_and_latency_per_arm_as_the_router_answered(registry: Registry, tmp_path: Path) -> None:
    server = ServeProcess(_args(registry, tmp_path / "split.json"), _env(STAGEGATE_ROUTER_TOKEN=TOKEN))
    try:
        target = server.url.removeprefix("http://")
        with (
            prometheus(tmp_path, target, interval="500ms") as address,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            split = Split(champion="1", candidate="2", candidate_weight=0.5)
            assert client.put("/admin/split", json=split.model_dump(), headers=auth()).status_code == 200
            scraped(address, "stagegate_requests_total", at_least=3)  # every series at zero, seen
            start = datetime.now(UTC)
            asked = {CHAMPION: 0, CANDIDATE: 0}
            failed = {CHAMPION: 0, CANDIDATE: 0}
            for user in range(USERS):
                # the candidate (v2) fails on fail- ids (the router answers with the champion and counts
                # an error of the candidate) and takes 0.4 s on slow- ids; the champion does neither
                kind = "fail" if user % 5 == 0 else "slow" if user % 7 == 0 else "ok"
                body = ask(client, f"{kind}-{user}", user).json()
                arm = CANDIDATE if body["arm"] == "candidate" else CHAMPION
                asked[arm] += 1
                failed[arm] += arm == CANDIDATE and kind == "fail"
            end = datetime.now(UTC) + timedelta(seconds=1)
            time.sleep(2.5)  # the last requests are scraped
            source = PrometheusMetricSource.from_config(
                PrometheusMetricSource.Config.model_validate({"address": address, "timeout_seconds": 5})
            )
            measurement = source.measure(Window("p-1", "canary", 1, start, end), (CHAMPION, CANDIDATE))
            # a window before the router served anyone has no requests: an error, never a zero
            with pytest.raises(MeasurementError, match=r"requests_total .*: no data"):
                source.measure(
                    Window("p-1", "canary", 1, start - timedelta(hours=2), start - timedelta(hours=1)),
                    (CHAMPION, CANDIDATE),
                )
    finally:
        server.stop()

    assert min(asked.values()) > USERS // 4 and failed[CANDIDATE] > 10
    for arm in (CHAMPION, CANDIDATE):
        scalars = measurement.scalars[arm]
        # rate() extrapolates each series to the window's edges on its own (Prometheus limits it near a
        # counter's zero), so even the ratio is close to the truth, not equal to it
        truth = failed[arm] / asked[arm]
        assert scalars["error_rate"] == pytest.approx(truth, rel=0.03, abs=1e-9), (arm, scalars, truth)
        assert scalars["requests_total"] == pytest.approx(asked[arm], rel=0.1), (arm, scalars, asked)
    assert measurement.scalars[CHAMPION]["error_rate"] == 0.0
    # one candidate request in seven or so takes 0.4 s: its p99 is there, the champion's p50 is fast
    assert measurement.scalars[CANDIDATE]["latency_p99_ms"] > 300
    assert measurement.scalars[CHAMPION]["latency_p50_ms"] < 100
    print(f"router truth {asked} requests, {failed} errors; prometheus {measurement.scalars}")
