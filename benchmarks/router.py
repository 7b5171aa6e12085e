"""Benchmark: the router (stagegate serve) at a steady request rate with shadow on, against calling the
model directly, its throughput at saturation, and its request log against the requests sent.

1. A fresh MLflow registry (SQLite, in a temporary directory) holds two versions of a small ranker to the
   contract (tests/router/ranker_model.py: champion ``low``, candidate ``high``); ``stagegate serve`` runs
   as its own process on a free loopback port with the split ``champion 1, candidate 2, weight 0,
   shadow on`` and ``--shadow-share 1`` (every request mirrored).
2. Direct: the champion loaded in this process, called through the router's own call path
   (``stagegate.router.models.predict_sync``: contract frame, predict, contract check) ``--direct`` times
   before and after the load; its p50 / p99.
3. Steady load: an open-loop async httpx generator sends ``--rate`` requests/s for ``--duration`` s (each
   request at its scheduled time, whether or not earlier ones came back), 2 000 users, 50 candidate items,
   k = 10; end-to-end p50 / p99 / max. Added latency = router - direct at the same quantile.
4. Saturation: ``--concurrency`` closed-loop clients for ``--saturation-seconds`` s; completed requests/s.
5. The router is stopped with SIGTERM (its lifespan flushes the log); rows of the request log with
   ``arm != 'shadow'`` are counted against the requests answered, shadow rows against the mirrors not
   dropped (``stagegate_shadow_dropped_total``).

Usage: ``python benchmarks/router.py [--rate 200] [--duration 60] [--json out.json]`` (``make bench-router``).
The load generator shares the machine with the router: on 2 cores, it takes a good part of one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILE = ROOT / "tests" / "router" / "ranker_model.py"
MODEL = "bench-ranker"
TOKEN = "bench-admin-token-" + os.urandom(8).hex()
N_USERS = 2000
N_ITEMS = 50


def make_registry(root: Path) -> str:
    import mlflow

    from stagegate.contract import contract_signature

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("bench", artifact_location=(root / "artifacts").as_uri())
    for config in ({"mode": "low"}, {"mode": "high"}):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.pyfunc.log_model(
                name="ranker",
                python_model=str(MODEL_FILE),
                model_config=config,
                signature=contract_signature(),
                registered_model_name=MODEL,
                pip_requirements=["mlflow", "pandas"],
            )
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "candidate", "2")
    return uri


def body(i: int) -> dict[str, Any]:
    rng = np.random.default_rng(i)
    return {
        "request_id": f"bench-{i}",
        "user_id": int(rng.integers(N_USERS)),
        "candidate_items": rng.choice(1000, N_ITEMS, replace=False).tolist(),
        "k": 10,
        "context": {"device": int(rng.integers(2)), "hour": int(rng.integers(24))},
    }


def quantiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "n": len(ms),
    }


def direct(uri: str, n: int) -> dict[str, float]:
    """The champion called in this process through the router's call path."""
    import mlflow

    from stagegate.router.models import Loaded, _accepts_k, predict_sync
    from stagegate.router.schemas import RecommendRequest

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    loaded = Loaded("1", model, _accepts_k(model))
    requests = [RecommendRequest.model_validate(body(i)) for i in range(n)]
    for r in requests[:50]:
        predict_sync(loaded, r, 10)
    times = []
    for r in requests:
        start = time.perf_counter()
        predict_sync(loaded, r, 10)
        times.append(time.perf_counter() - start)
    return quantiles(times)


class Router:
    def __init__(self, uri: str, root: Path) -> None:
        env = {**os.environ, "STAGEGATE_ROUTER_TOKEN": TOKEN}
        self.state = root / "split.json"
        args = [
            "serve",
            "--model",
            MODEL,
            "--tracking-uri",
            uri,
            "--state",
            str(self.state),
            "--port",
            "0",
            "--shadow-share",
            "1",
            "--queue-size",
            "1000",
            "--timeout",
            "2",
        ]
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("stagegate")), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url: str | None = None
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(180)
        if self.url is None:
            raise SystemExit("stagegate serve did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


async def steady(url: str, rate: float, duration: float, max_in_flight: int) -> dict[str, Any]:
    """Open loop: request ``i`` is sent at ``t0 + i / rate`` whether or not earlier ones came back. Tasks
    are created at their due time (a pool of thousands of waiting tasks would make the client, not the
    router, the bottleneck); a request due while ``max_in_flight`` are outstanding is not sent and
    counted as ``skipped`` (the router fell behind)."""
    import httpx

    latencies: list[float] = []
    errors = skipped = 0
    in_flight: set[asyncio.Task] = set()
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
        for i in range(20):  # warm up the connection and the server
            await client.post("/recommend", json=body(10_000_000 + i))

        async def one(payload: dict[str, Any]) -> None:
            nonlocal errors
            start = time.perf_counter()
            try:
                response = await client.post("/recommend", json=payload)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

        n = int(rate * duration)
        payloads = [body(i) for i in range(n)]
        t0 = time.perf_counter() + 0.2
        lateness = []
        for i, payload in enumerate(payloads):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lateness.append(-delay)
            if len(in_flight) >= max_in_flight:
                skipped += 1
                continue
            task = asyncio.create_task(one(payload))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
    return {
        "latencies": latencies,
        "errors": errors,
        "skipped": skipped,
        "sent": n - skipped + 20,
        "generator_late_p99_ms": float(np.percentile(lateness, 99) * 1000) if lateness else 0.0,
    }


async def saturate(url: str, concurrency: int, seconds: float, offset: int) -> tuple[float, int]:
    import httpx

    done = 0
    counter = iter(range(offset, offset + 10_000_000))
    stop_at = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                response = await client.post("/recommend", json=body(next(counter)))
                if response.status_code == 200:
                    done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done / elapsed, done


def scrape(url: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name.endswith("_total"):
                out[f"{s.name}{{{s.labels.get('arm', '')}}}"] = s.value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--direct", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--saturation-seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import httpx

    with tempfile.TemporaryDirectory(prefix="stagegate-bench-router-") as tmp:
        root = Path(tmp)
        uri = make_registry(root)
        router = Router(uri, root)
        try:
            split = {"champion": "1", "candidate": "2", "candidate_weight": 0.0, "shadow": True}
            r = httpx.put(
                f"{router.url}/admin/split", json=split, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            r.raise_for_status()
            direct_before = direct(uri, args.direct)
            load = asyncio.run(steady(router.url, args.rate, args.duration, args.max_in_flight))
            direct_after = direct(uri, args.direct)
            throughput, sent_sat = asyncio.run(
                saturate(router.url, args.concurrency, args.saturation_seconds, 20_000_000)
            )
            time.sleep(2.0)  # let the shadow queue drain before the final scrape
            counters = scrape(router.url)
        finally:
            router.stop()
        from sqlalchemy import create_engine, text

        engine = create_engine(f"sqlite:///{root / 'split-events.db'}")
        with engine.connect() as conn:
            served_rows = conn.execute(
                text("SELECT count(*) FROM router_requests WHERE arm != 'shadow'")
            ).scalar()
            shadow_rows = conn.execute(
                text("SELECT count(*) FROM router_requests WHERE arm = 'shadow'")
            ).scalar()
        engine.dispose()

    routed = quantiles(load["latencies"])
    d50 = min(direct_before["p50_ms"], direct_after["p50_ms"])
    d99 = min(direct_before["p99_ms"], direct_after["p99_ms"])
    answered = load["sent"] - load["errors"] + sent_sat
    result = {
        "load_average_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "steady": {
            "rate": args.rate,
            "duration_s": args.duration,
            "sent": load["sent"],
            "errors": load["errors"],
            "skipped": load["skipped"],
            "generator_late_p99_ms": load["generator_late_p99_ms"],
            **routed,
        },
        "direct_before": direct_before,
        "direct_after": direct_after,
        "added_p50_ms": routed["p50_ms"] - d50,
        "added_p99_ms": routed["p99_ms"] - d99,
        "saturation": {"concurrency": args.concurrency, "requests_per_s": throughput, "sent": sent_sat},
        "log": {
            "requests_answered": answered,
            "rows_served": served_rows,
            "rows_shadow": shadow_rows,
            "shadow_dropped": counters.get("stagegate_shadow_dropped_total{}", 0.0),
            "shadow_requests": counters.get("stagegate_requests_total{shadow}", 0.0),
        },
        "counters": counters,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
