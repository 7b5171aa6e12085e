"""The README's people-in-the-loop block, run exactly as written on a fresh workspace: only RUN (the id the
promotion prints) and alice's token (which `approvers add` prints) are substituted; the ports come from
the environment (STAGEGATE_*_PORT) so as not to collide with other servers on this machine; the Prefect
server's database goes to this machine's PostgreSQL, which `up` finds by itself. Before the block's
`stagegate down`, a release manager approves a third promotion in the Prefect UI (headless Chromium)
while its guardrail monitor runs on the stack's worker and a second promotion, of another model, is in
progress."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser.test_approval_ui import answer_in_ui, browser  # noqa: F401 -- the fixture
from tests.ops.servers import (
    PG_ADMIN_URL,
    REPO,
    RunningStack,
    cli,
    finish,
    log_tail,
    make_promo,
    paused_run,
    start_promotion,
)

pytestmark = pytest.mark.slow

CANARY = {  # tests/ops/test_monitor.py's: a canary carrying traffic, watched while the approval waits
    "canary": {
        "steps": [{"weight": 50}],
        "gates": [{"type": "guardrail", "metric": "error_rate", "max": 0.02, "on_fail": "rollback"}],
    },
    "rollout": {"bake": "0s"},
}


def readme_block() -> list[str]:
    """The command lines of the README's "With people in the loop" block (comments dropped by shlex)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index("With people in the loop") :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if shlex.split(line, comments=True)]


def _api(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _running_monitor(api: str, promotion_id: str) -> dict | None:
    body = {"deployments": {"name": {"any_": ["guardrail-monitor"]}}, "limit": 50}
    runs = [
        r
        for r in _api(f"{api}/flow_runs/filter", body)
        if r["parameters"].get("promotion_id") == promotion_id
    ]
    return next((r for r in runs if r["state_type"] == "RUNNING"), None)


def _drop_databases(state: dict) -> None:
    from sqlalchemy import create_engine, text

    names = [
        url.rsplit("/", 1)[1] for url in state.get("databases", {}).values() if url.startswith("postgresql")
    ]
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def test_the_readme_block_then_an_approval_in_the_ui_under_load(
    tmp_path: Path,
    browser: object,  # noqa: F811
) -> None:
    from stagegate.stack import Stack, free_port
    from stagegate.workspace import Workspace

    lines = readme_block()
    assert [shlex.split(line, comments=True)[:2] for line in lines][:3] == [
        ["stagegate", "world"],
        ["stagegate", "candidates"],
        ["stagegate", "up"],
    ]
    assert not any("PREFECT_API_URL" in line or "STAGEGATE_MLFLOW_URI" in line for line in lines)
    ws = tmp_path / "ws"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_API", "STAGEGATE_", "MLFLOW_TRACKING"))
    }
    env |= {
        "PATH": f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}",
        "STAGEGATE_HOME": str(ws),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "STAGEGATE_PREFECT_PORT": str(free_port()),
        "STAGEGATE_MLFLOW_PORT": str(free_port()),
        "STAGEGATE_S3_PORT": str(free_port(grpc_too=True)),
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    stack = Stack(Workspace(ws))
    run_id = token = None
    approvals = 0
    promote_started = 0.0
    promote: subprocess.Popen | None = None
    promote_log = tmp_path / "promote.log"
    timings: dict[str, float] = {}
    state: dict = {}
    try:
        for line in lines:
            argv = shlex.split(line, comments=True)
            if argv[0] == "export":  # alice's shell
                key, value = argv[1].split("=", 1)
                env[key] = token if value == "sgt_..." else value
                continue
            argv = [token if a == "sgt_..." and token else a for a in argv]  # RUN: at its approve
            name = " ".join(argv[1:3])
            if argv[1] == "down":
                assert promote is not None and promote.wait(timeout=240) == 0, log_tail_of(promote_log)
                state = stack.state()
                timings["ui approval under load"] = _approve_in_the_ui_under_load(
                    tmp_path, ws, state, browser
                )
            started = time.monotonic()
            if argv[1] == "promote":  # it waits for alice: the rest of the block runs meanwhile
                promote_started = started
                promote = subprocess.Popen(
                    argv, env=env, cwd=str(REPO), stdout=promote_log.open("wb"), stderr=subprocess.STDOUT
                )
                continue
            if argv[1] == "approve":  # alice answers once promote says it waits (and its run is paused)
                assert promote is not None
                approvals += 1
                pattern = r"stagegate approve ([0-9a-f-]{36})"
                deadline = time.monotonic() + 420
                while len(re.findall(pattern, log_tail_of(promote_log, 0))) < approvals:
                    assert promote.poll() is None and time.monotonic() < deadline, log_tail_of(promote_log)
                    time.sleep(0.5)
                run_id = re.findall(pattern, log_tail_of(promote_log, 0))[-1]
                argv = [run_id if a == "RUN" else a for a in argv]
                # the run is on the stack's Prefect server (the UI's), not a temporary one
                _wait_paused(stack.state()["urls"]["prefect_api"], "recsys-ranker", promote, promote_log)
                timings[f"promote until approval {approvals}"] = time.monotonic() - promote_started
                started = time.monotonic()
            done = subprocess.run(argv, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
            timings[name] = time.monotonic() - started
            assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            if argv[1] == "up":
                assert f"registry: {ws / 'mlflow.db'}, ledger: {ws / 'events.db'}" in done.stdout, done.stdout
                # nothing configured: the machine's PostgreSQL answers, the Prefect server goes there
                assert "PostgreSQL answers at" in done.stdout, done.stdout
                assert stack.state()["databases"]["prefect"].startswith("postgresql+asyncpg://")
            if argv[1:3] == ["approvers", "add"]:
                token = done.stdout.strip().splitlines()[-1]
                assert token.startswith("sgt_"), done.stdout
            if argv[1] == "approve":
                assert "recorded: " in done.stdout and ": approved" in done.stdout, done.stdout
            if argv[1] == "down":
                assert "embedded again" in done.stdout, done.stdout
    finally:
        state = state or stack.state()
        if promote is not None and promote.poll() is None:
            promote.kill()
        stack.down()
        if state:
            _drop_databases(state)
    print("README block timings (s):", {k: round(v, 1) for k, v in timings.items()})
    # after `down`: embedded, on the registry and ledger the stack served
    status = subprocess.run(
        ["stagegate", "status", "--model", "recsys-ranker", "--json"],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0 and "stack" not in status.stderr, status.stderr
    data = json.loads(status.stdout)
    assert [p["state"] for p in data["promotions"]] == ["promoted"], data["promotions"]
    champion = [v for v in data["versions"] if "champion" in v["aliases"]]
    assert [v["version"] for v in champion] == ["2"], data["versions"]


def log_tail_of(path: Path, chars: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:] if chars else text


def _wait_paused(api: str, model: str, promote: subprocess.Popen, log: Path, timeout: float = 60) -> str:
    body = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}, "limit": 200}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in _api(f"{api}/flow_runs/filter", body):
            if run["parameters"].get("model") == model:
                return run["id"]
        assert promote.poll() is None, log_tail_of(log)
        time.sleep(0.5)
    raise AssertionError(f"no paused run of {model} on {api}:\n{log_tail_of(log)}")


def _approve_in_the_ui_under_load(tmp_path: Path, ws: Path, state: dict, context: object) -> float:
    """On the README's stack: promotion A pauses before rollout with its canary watched by the guardrail
    monitor (the guardrail-monitor deployment, on the worker); promotion B, of another model, is in
    progress; a release manager approves A in the Prefect UI. Returns the seconds it took."""
    rs = RunningStack(ws, state, None, "")
    base = tmp_path / "load"
    base.mkdir()
    a = make_promo(base, rs, approvers=["release-manager"], stages=CANARY)
    b = make_promo(base, rs, approvers=["release-manager"])
    a.env |= {"STAGEGATE_MONITOR": "deployment", "STAGEGATE_MONITOR_INTERVAL": "1", "PYTHONPATH": str(REPO)}
    a.process = subprocess.Popen(
        [sys.executable, "-m", "tests.ops.paused_canary", a.model, str(a.policy), "0.0"],
        env={**a.env, "PATH": f"{REPO / '.venv' / 'bin'}:{a.env.get('PATH', '')}"},
        cwd=str(a.root),
        stdout=(a.root / "promote.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    start_promotion(b)
    started = time.monotonic()
    try:
        run_a = paused_run(rs, a, timeout=120)
        run_b = paused_run(rs, b, timeout=120)
        promotion_a = a.runtime().events.promotions(a.model)[0]["id"]
        deadline = time.monotonic() + 60
        while _running_monitor(rs.api, promotion_a) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _running_monitor(rs.api, promotion_a), "the guardrail monitor of A is not running"
        assert b.process is not None and b.process.poll() is None, log_tail(b)
        answer_in_ui(
            context,
            rs,
            run_a,
            approve=True,
            reason="evidence read in the UI under load",
            name="readme-approve",
            token=a.tokens["release-manager"],
        )
        assert finish(a, timeout=120) == 0, log_tail(a)
        out = (a.root / "promote.log").read_text(errors="replace")
        answer = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        assert answer["approved"] is True and answer["approver"] == "release-manager", answer
        assert "503" not in out and "database is locked" not in out, out[-3000:]
        took = time.monotonic() - started
        done = cli(
            b, "approve", run_b, "--approver", "release-manager", "--token", b.tokens["release-manager"]
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert finish(b) == 0, log_tail(b)
        return took
    finally:
        for promo in (a, b):
            if promo.process is not None and promo.process.poll() is None:
                promo.process.kill()
