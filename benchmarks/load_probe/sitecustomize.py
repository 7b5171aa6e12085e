"""Loaded by every Python process started with this folder on PYTHONPATH (benchmarks/load.py puts it
there for the promote flow runs on the worker): wall time spent waiting on the Prefect API and in MLflow
client calls, written at exit to ``$STAGEGATE_PROBE_DIR/<pid>.json``.

- Prefect: every ``httpx`` request (sync and async) to the host and port of ``$PREFECT_API_URL``.
- MLflow: every public method of ``mlflow.MlflowClient``, counted once at the outermost call (a method that
  calls another is not counted twice), and the fluent calls that go through it.
Threads overlap, so the two sums may exceed the process's wall time in a process that calls from several
threads at once; benchmarks/load.py reports them against the summed wall time of the flow processes.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import threading
import time
from urllib.parse import urlsplit

_DIR = os.environ.get("STAGEGATE_PROBE_DIR")
_STARTED = time.monotonic()
_TOTALS = {"prefect_s": 0.0, "prefect_calls": 0, "mlflow_s": 0.0, "mlflow_calls": 0}
_LOCK = threading.Lock()
_DEPTH = threading.local()


def _add(kind: str, seconds: float) -> None:
    with _LOCK:
        _TOTALS[f"{kind}_s"] += seconds
        _TOTALS[f"{kind}_calls"] += 1


def _install() -> None:
    import httpx

    api = urlsplit(os.environ.get("PREFECT_API_URL", ""))
    target = (api.hostname, api.port)

    def is_prefect(request: httpx.Request) -> bool:
        return (request.url.host, request.url.port) == target

    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    @functools.wraps(sync_send)
    def send(self: httpx.Client, request: httpx.Request, *args: object, **kwargs: object) -> httpx.Response:
        started = time.monotonic()
        try:
            return sync_send(self, request, *args, **kwargs)
        finally:
            if is_prefect(request):
                _add("prefect", time.monotonic() - started)

    @functools.wraps(async_send)
    async def asend(self: httpx.AsyncClient, request: httpx.Request, *args: object, **kwargs: object):
        started = time.monotonic()
        try:
            return await async_send(self, request, *args, **kwargs)
        finally:
            if is_prefect(request):
                _add("prefect", time.monotonic() - started)

    httpx.Client.send, httpx.AsyncClient.send = send, asend

    from mlflow.tracking.client import MlflowClient

    def timed(method):
        @functools.wraps(method)
        def call(*args: object, **kwargs: object) -> object:
            depth = getattr(_DEPTH, "n", 0)
            _DEPTH.n = depth + 1
            started = time.monotonic()
            try:
                return method(*args, **kwargs)
            finally:
                _DEPTH.n = depth
                if depth == 0:
                    _add("mlflow", time.monotonic() - started)

        return call

    for name in dir(MlflowClient):
        attr = getattr(MlflowClient, name)
        if (
            not name.startswith("_")
            and callable(attr)
            and not isinstance(attr, (staticmethod, classmethod, type))
        ):
            setattr(MlflowClient, name, timed(attr))


def _write() -> None:
    totals = {**_TOTALS, "wall_s": time.monotonic() - _STARTED, "pid": os.getpid()}
    with open(os.path.join(_DIR, f"{os.getpid()}.json"), "w", encoding="utf-8") as out:
        json.dump(totals, out)


if _DIR:
    try:
        _install()
        atexit.register(_write)
    except Exception as exc:  # a probe must never stop the process it measures
        print(f"load probe not installed: {exc!r}")
