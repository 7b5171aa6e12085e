"""``stagegate judge serve`` as a user runs it: a real process serving on a free port, and refusals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from typer.testing import CliRunner

from stagegate.cli import app
from tests.judge.conftest import ARGO_HEADERS, POLICY, write_files

ROOT = Path(__file__).resolve().parents[2]
STAGEGATE = Path(sys.executable).with_name("stagegate")


def test_serve_answers_over_http_and_stops(tmp_path, world) -> None:
    world.add_day("shop.recs", 0, lift=1.0)
    policy, connections = write_files(tmp_path, world.url)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    process = subprocess.Popen(
        [
            str(STAGEGATE),
            "judge",
            "serve",
            "--policy",
            str(policy),
            "--connections",
            str(connections),
            "--state",
            state,
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "STAGEGATE_HOME": str(tmp_path / "home")},
    )
    try:
        port, seen, deadline = None, [], time.monotonic() + 45
        while port is None:
            assert time.monotonic() < deadline, f"judge did not start: {seen}"
            line = process.stderr.readline()
            assert line or process.poll() is None, f"judge exited: {seen}"
            seen.append(line)
            match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            health = http.get("/healthz").json()
            # The window ends at the wall clock: every event of the test world is in it.
            answer = http.get("/argo/v1/shop/recs?revision=r1&step=0&weight=50", headers=ARGO_HEADERS)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert health["stage"] == "canary" and health["rule"] == "any_harm"
    assert answer.status_code == 200 and answer.json()["verdict"] == "INCONCLUSIVE"  # 1 day of evidence
    assert answer.json()["look"] == 1
    assert process.returncode == 0


def test_serve_refuses_what_it_cannot_judge_with(tmp_path, world) -> None:
    policy, connections = write_files(tmp_path, world.url)
    runner = CliRunner()
    base = ["judge", "serve", "--policy", str(policy), "--connections", str(connections)]

    no_stage = runner.invoke(app, [*base, "--stage", "shadow"])
    assert no_stage.exit_code == 2 and "stages.shadow" in no_stage.output

    no_url = tmp_path / "no-url.yaml"
    no_url.write_text(yaml.safe_dump({"version": 1, "metrics": {"type": "events"}}))
    workspace = runner.invoke(app, ["judge", "serve", "--policy", str(policy), "--connections", str(no_url)])
    assert workspace.exit_code == 2 and "metrics.url" in workspace.output

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"version": 1, "metrics": {"type": "prometheus-typo"}}))
    typo = runner.invoke(app, ["judge", "serve", "--policy", str(policy), "--connections", str(unknown)])
    assert typo.exit_code == 2 and "metrics.type" in typo.output and "prometheus-typo" in typo.output

    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text(yaml.safe_dump({**POLICY, "stages": {"canary": {"steps": [], "gates": []}}}))
    invalid = runner.invoke(
        app, ["judge", "serve", "--policy", str(bad_policy), "--connections", str(connections)]
    )
    assert invalid.exit_code == 2 and "bad.yaml" in invalid.output
