"""A real Prometheus server (Debian's /usr/bin/prometheus, `make integration-deps`) scraping one target, for
the tests of the ``prometheus`` metric source (tests/integrations/test_prometheus.py against the exporter,
tests/router/test_prometheus_scrape.py against `stagegate serve`)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, deadline: float, proc: subprocess.Popen) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in time")


@contextmanager
def prometheus(work: Path, target: str, interval: str = "1s") -> Iterator[str]:
    """Prometheus scraping ``target`` (host:port) every ``interval``; yields its address (http://...)."""
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is not installed: run `make integration-deps`")
    (work / "prometheus.yml").write_text(
        f"global: {{scrape_interval: {interval}, scrape_timeout: {interval}, "
        f"evaluation_interval: {interval}}}\n"
        "scrape_configs:\n"
        f"  - job_name: router\n    static_configs: [{{targets: ['{target}']}}]\n",
        encoding="utf-8",
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = f"http://127.0.0.1:{port}"
        _wait_ready(f"{address}/-/ready", time.monotonic() + 30, proc)
        yield address
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
