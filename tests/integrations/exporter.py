"""A stand-in for the router's /metrics: the router's metric names with a known truth, for Prometheus to
scrape in tests/integrations/test_prometheus.py.

Run as ``python exporter.py``: serves on a free loopback port, prints ``PORT <n>`` on its first line, then
every ``TICK`` seconds adds ``PER_TICK`` requests to each live arm. The truth is deterministic:

- error rate: exactly one request in ``ERROR_EVERY[arm]`` fails (champion 1 in 50 = 2%, candidate 1 in 20
  = 5%);
- latency: uniform on ``LATENCY[arm]`` seconds, emitted as the evenly spaced quantiles of that uniform
  distribution in a scrambled order, so every scrape interval holds a near-uniform sample; the histogram's
  buckets are 5 ms wide, within which histogram_quantile's linear interpolation is exact for a uniform.
- the ``shadow`` arm's series exist at zero and never move (so rate() of them is 0 and a ratio is NaN).
"""

from __future__ import annotations

import sys
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

TICK = 0.05
PER_TICK = 10
ERROR_EVERY = {"champion": 50, "candidate": 20}
LATENCY = {"champion": (0.010, 0.110), "candidate": (0.020, 0.220)}
BUCKETS = tuple(round(0.005 * i, 3) for i in range(1, 61))  # 5 ms .. 300 ms
CYCLE = 997  # prime: the spacing of the emitted quantiles


def true_quantile(arm: str, q: float) -> float:
    low, high = LATENCY[arm]
    return low + q * (high - low)


def main() -> None:
    registry = CollectorRegistry()
    requests = Counter("stagegate_requests", "requests served", ["arm"], registry=registry)
    errors = Counter("stagegate_request_errors", "requests that failed", ["arm"], registry=registry)
    latency = Histogram(
        "stagegate_request_latency_seconds", "serving latency", ["arm"], buckets=BUCKETS, registry=registry
    )
    for arm in (*ERROR_EVERY, "shadow"):  # every series exists from the start, at zero
        requests.labels(arm=arm)
        errors.labels(arm=arm)
        latency.labels(arm=arm)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(f"PORT {server.server_port}", flush=True)
    served = 0
    while True:
        for _ in range(PER_TICK):
            served += 1
            # A stride coprime with CYCLE visits every quantile once per cycle, spread over the cycle.
            q = (((served * 389) % CYCLE) + 0.5) / CYCLE
            for arm, every in ERROR_EVERY.items():
                requests.labels(arm=arm).inc()
                if served % every == 0:
                    errors.labels(arm=arm).inc()
                latency.labels(arm=arm).observe(true_quantile(arm, q))
        time.sleep(TICK)


if __name__ == "__main__":
    sys.exit(main())
