"""How often an approval (POST /flow_runs/{id}/resume, as the Prefect UI's Resume form sends it, with no
retry) fails with 503 while other processes write to the same Prefect server: SQLite vs PostgreSQL.

Each configuration starts the stack's Prefect server alone (stagegate.stack, free port, fresh database),
starts LOADERS processes that each run flows with many tasks (what a promotion and the guardrail monitor
write: flow and task runs, states, logs, events), and meanwhile pauses and resumes APPROVALS flow runs over
raw HTTP, counting the statuses. Usage: python benchmarks/prefect_db_locks.py [sqlite] [postgres]
(needs PostgreSQL at $STAGEGATE_TEST_PG or postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LOADERS = 4
APPROVALS = 60
PG = os.environ.get("STAGEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres").replace(
    "postgresql+psycopg://", "postgresql://"
)

LOAD = """
import sys
from prefect import flow, task, get_run_logger

@task
def look(i: int) -> int:
    get_run_logger().info("look %s", i)
    return i

@flow
def load() -> None:
    look.map(range(40)).result()  # concurrent task runs, as a stage's looks and the monitor's checks

deadline = float(sys.argv[1])
import time
while time.time() < deadline:
    load()
"""


SCHEMA = {
    "title": "ApprovalInput",
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": ["approve", "reject"]},
        "approver": {"type": "string"},
        "reason": {"type": "string"},
    },
    "required": ["decision", "approver"],
}


def _send(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def measure(kind: str) -> dict:
    from stagegate.stack import Stack, StackConfig, free_port
    from stagegate.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix=f"sg-locks-{kind}-"))
    stack = Stack(Workspace(root))
    prefix = f"sgbench_{uuid.uuid4().hex[:6]}"
    config = StackConfig(
        ports={"prefect": free_port(), "mlflow": 0, "s3": 0},
        postgres_url=PG if kind == "postgres" else None,
        components=("prefect",),
        deploy=False,
        db_prefix=prefix,
    )
    state = stack.up(config)
    api = state["urls"]["prefect_api"]
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(root / "client-home")}
    flow_id = _json(f"{api}/flows/", {"name": "approval-probe"})["id"]
    statuses: Counter[int] = Counter()  # per approval: the first failure, else the resume's status
    writes: Counter[int] = Counter()  # every preparatory write
    loaders = []
    try:
        deadline = time.time() + 300
        loaders = [
            subprocess.Popen(
                [sys.executable, "-c", LOAD, str(deadline)],
                env=env,
                stdout=(root / f"loader-{n}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for n in range(LOADERS)
        ]
        load_filter = {"flows": {"name": {"any_": ["load"]}}, "limit": 200}
        wait_until = time.monotonic() + 120  # the loaders import Prefect and start writing
        while len(_json(f"{api}/flow_runs/filter", load_filter)) < LOADERS and time.monotonic() < wait_until:
            time.sleep(1)
        started = time.monotonic()
        for i in range(APPROVALS):
            # every request as the UI sends it: once, no retry; a 503 anywhere fails that approval
            code, created = _send(f"{api}/flow_runs/", {"flow_id": flow_id, "name": f"probe-{i}"})
            writes[code] += 1
            if code != 201:
                statuses[code] += 1
                continue
            run = created["id"]
            # what pause_flow_run(wait_for_input=ApprovalInput) leaves: a schema input and a keyset
            keyset = {"schema": "approval-schema", "response": "approval-response"}
            details = {"pause_key": "approval", "run_input_keyset": keyset, "pause_reschedule": False}
            steps = [
                (f"flow_runs/{run}/set_state", {"state": {"type": "RUNNING", "name": "Running"}}),
                (f"flow_runs/{run}/input", {"key": "approval-schema", "value": json.dumps(SCHEMA)}),
                (
                    f"flow_runs/{run}/set_state",
                    {"state": {"type": "PAUSED", "name": "Paused", "state_details": details}},
                ),
            ]
            codes = [_send(f"{api}/{path}", body)[0] for path, body in steps]
            writes.update(codes)
            if any(c >= 500 for c in codes):
                statuses[max(codes)] += 1
                continue
            answer = {"run_input": {"decision": "approve", "approver": "alice", "reason": f"probe {i}"}}
            statuses[_send(f"{api}/flow_runs/{run}/resume", answer)[0]] += 1  # the UI's Resume, no retry
        elapsed = time.monotonic() - started
        loaded = len(_json(f"{api}/flow_runs/filter", load_filter))
    finally:
        for p in loaders:
            p.kill()
            p.wait()
        log = stack.log_path("prefect").read_text(errors="replace")
        stack.down()
        if kind == "postgres":
            _drop(prefix)
    return {
        "database": kind,
        "approvals": APPROVALS,
        "statuses": dict(statuses),
        "failed_503": statuses.get(503, 0),
        "writes": dict(writes),
        "locked_in_log": log.count("database is locked"),
        "seconds": round(elapsed, 1),
        "load_flow_runs": loaded,
        "loader_log": str(root / "loader-0.log"),
    }


def _drop(prefix: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{prefix}_prefect" WITH (FORCE)'))
    engine.dispose()


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_API_LOG_RETRYABLE_ERRORS", "true")  # the server logs each 503's cause
    for kind in sys.argv[1:] or ["sqlite", "postgres"]:
        print(json.dumps(measure(kind)), flush=True)
