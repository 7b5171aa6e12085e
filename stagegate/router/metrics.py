"""The router's Prometheus metrics. The names are a contract (a Prometheus MetricSource adapter reads
them): ``stagegate_requests_total{arm}``, ``stagegate_request_errors_total{arm}``,
``stagegate_request_latency_seconds{arm}`` (histogram of the model call) and
``stagegate_shadow_dropped_total``; ``arm`` is ``champion``, ``candidate`` or ``shadow``.

Each router owns its registry (not prometheus-client's global one), so two routers in one process (tests)
count separately."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ARMS = ("champion", "candidate", "shadow")
# sub-millisecond to seconds: a model call is typically a few ms; the timeout is well under 10 s
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "stagegate_requests", "Requests by the arm that was asked", ["arm"], registry=self.registry
        )
        self.errors = Counter(
            "stagegate_request_errors",
            "Failed, timed-out or contract-breaking model calls by arm",
            ["arm"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stagegate_request_latency_seconds",
            "Model call latency by arm",
            ["arm"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "stagegate_shadow_dropped",
            "Shadow requests dropped because the queue was full",
            registry=self.registry,
        )
        self.record_queue = Gauge(
            "stagegate_record_queue_depth", "Request records waiting to be written", registry=self.registry
        )
        self.record_errors = Counter(
            "stagegate_record_errors", "Request records the writer could not store", registry=self.registry
        )
        for arm in ARMS:  # present from the start, so a scrape sees every series at zero
            self.requests.labels(arm=arm)
            self.errors.labels(arm=arm)
            self.latency.labels(arm=arm)

    def render(self) -> bytes:
        return generate_latest(self.registry)
