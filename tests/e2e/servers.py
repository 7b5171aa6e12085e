"""Real servers the fault tests stop and start on purpose: a Prefect server (on a PostgreSQL database of its
own) that can be killed and restarted on the same port and database, and `stagegate promote` run against
it in a subprocess. (tests/ops/servers.py runs the whole stack, which these tests do not need.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stagegate.stack import QUIET, free_port, http_ok

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


class PrefectServer:
    """`prefect server start` on a free port; ``kill()`` ends it as a crash would (SIGKILL to its group),
    ``start()`` brings it back on the same port and database."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root, self.port = root, free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            **QUIET,
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url.replace("+psycopg", "+asyncpg"),
            "PREFECT_UI_STATIC_DIRECTORY": str(root / "prefect-ui"),
            "PREFECT_API_URL": "",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 150.0) -> float:
        """Start it and wait until /api/health answers; the seconds that took."""
        started = time.monotonic()
        self.starts += 1
        log = (self.root / f"prefect-server-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while time.monotonic() - started < timeout:
            if http_ok(f"{self.api}/health"):
                return time.monotonic() - started
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"the Prefect server did not become healthy: see {log.name}")

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # the group of the server this test started
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None


def promote_process(workspace_root: Path, api: str, version: str, policy: Path, log: Path, model: str) -> Any:
    """`stagegate promote` in its own process group against the Prefect server at ``api``."""
    env = {**os.environ, "STAGEGATE_HOME": str(workspace_root), "PREFECT_API_URL": api}
    env["PYTHONFAULTHANDLER"] = "1"
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "stagegate.cli", "promote"),
            *("--model", model, "--version", version, "--policy", str(policy)),
        ],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (a process this test started) if it still runs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout:g}s")
