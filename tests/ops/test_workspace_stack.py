"""`stagegate up` binds the workspace: every command uses the stack without exports, the stack serves the
registry and ledger that were there before `up`, what is done while up is there after `down`, and a stack
that is down or hung is reported in a few seconds (stagegate/stack.py bind_to_stack)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.ops.servers import CLI, _log_contract_mlmodel

pytestmark = pytest.mark.slow

MODEL = "ws-ranker"


def _run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _register_embedded(root: Path) -> None:
    """v1 of MODEL in the workspace's own registry (sqlite:///<root>/mlflow.db), as before any `up`."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    experiment = client.create_experiment("train", artifact_location=(root / "mlartifacts").as_uri())
    run = client.create_run(experiment).info.run_id
    _log_contract_mlmodel(client, run, root)
    client.create_model_version(MODEL, f"runs:/{run}/model", run_id=run)


def test_the_stack_serves_the_workspace_and_down_leaves_it_embedded(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from stagegate.stack import Stack, bind_to_stack, free_port
    from stagegate.workspace import Workspace

    root = tmp_path / "ws"
    root.mkdir()
    _register_embedded(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "STAGEGATE_"))}
    env |= {"STAGEGATE_HOME": str(root), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    assert _run(env, "approvers", "add", "alice").returncode == 0  # the embedded ledger
    ports = {"prefect": free_port(), "mlflow": free_port()}
    up = _run(
        env,
        *("up", "--only", "prefect", "--only", "mlflow", "--no-deploy", "--sqlite"),
        *("--prefect-port", str(ports["prefect"]), "--mlflow-port", str(ports["mlflow"])),
        timeout=240,
    )
    stack = Stack(Workspace(root))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"registry: {root / 'mlflow.db'}, ledger: {root / 'events.db'}" in up.stdout, up.stdout
        assert "--postgres" in up.stderr  # on SQLite it says what to use instead

        # no exports: the commands of this workspace use the stack, an explicit variable wins
        bound: dict[str, str] = {"STAGEGATE_HOME": str(root)}
        assert bind_to_stack(bound).state == "up"
        assert bound["PREFECT_API_URL"] == f"http://127.0.0.1:{ports['prefect']}/api"
        assert bound["STAGEGATE_MLFLOW_URI"] == f"http://127.0.0.1:{ports['mlflow']}"
        mine = {"STAGEGATE_HOME": str(root), "PREFECT_API_URL": "http://127.0.0.1:1/api"}
        assert bind_to_stack(mine).state == "up" and mine["PREFECT_API_URL"] == "http://127.0.0.1:1/api"

        # the model registered before `up` is served by the stack's MLflow; so is the ledger's approver
        status = _run(env, "status", "--model", MODEL, "--json")
        assert status.returncode == 0, status.stderr
        assert [v["version"] for v in json.loads(status.stdout)["versions"]] == ["1"], status.stdout
        assert "alice" in _run(env, "approvers", "list").stdout
        # what is done while up: a version and an artifact through the server, an approver in the ledger
        server = MlflowClient(
            tracking_uri=bound["STAGEGATE_MLFLOW_URI"], registry_uri=bound["STAGEGATE_MLFLOW_URI"]
        )
        run = server.create_run(server.create_experiment("while-up")).info.run_id
        server.log_text(run, "while up", "note.txt")
        _log_contract_mlmodel(server, run, tmp_path)
        server.create_model_version(MODEL, f"runs:/{run}/model", run_id=run)
        assert _run(env, "approvers", "add", "bob").returncode == 0

        # a hung server is reported in seconds, not after the client's retries
        prefect_pid = stack.pid("prefect")
        assert prefect_pid is not None
        os.killpg(prefect_pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            hung = _run(env, "promotions", "list", timeout=60)
            assert time.monotonic() - started < 20
            assert hung.returncode == 2 and "does not answer within 2s" in hung.stderr, hung.stderr
        finally:
            os.killpg(prefect_pid, signal.SIGCONT)

        # recorded but down (its processes gone, as after a reboot): one line, then embedded
        mlflow_pid = stack.pid("mlflow")
        assert mlflow_pid is not None
        os.killpg(mlflow_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while stack.pid("mlflow") is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        fallen = _run(env, "approvers", "list", timeout=60)
        assert fallen.returncode == 0 and "bob" in fallen.stdout, fallen.stderr
        assert "is down (mlflow not running); running embedded" in fallen.stderr
        assert len(fallen.stderr.strip().splitlines()) == 1, fallen.stderr
    finally:
        down = _run(env, "down")
    assert down.returncode == 0 and f"embedded again: registry {root / 'mlflow.db'}" in down.stdout, (
        down.stdout
    )
    assert not stack.state_path.exists() and (stack.root / "stack.last.json").exists()

    # after `down`: embedded, silent, and everything done while up is there
    after = _run(env, "status", "--model", MODEL, "--json")
    assert after.returncode == 0 and "stack" not in after.stderr, after.stderr
    assert [v["version"] for v in json.loads(after.stdout)["versions"]] == ["1", "2"], after.stdout
    embedded = MlflowClient(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", registry_uri=f"sqlite:///{root / 'mlflow.db'}"
    )
    assert Path(embedded.download_artifacts(run, "note.txt", str(tmp_path))).read_text() == "while up"
    assert str(root / "mlartifacts") in embedded.get_run(run).info.artifact_uri
    assert {"alice", "bob"} <= set(_run(env, "approvers", "list").stdout.split())


def test_registry_on_postgres_is_refused_while_the_workspace_holds_one(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    _register_embedded(root)
    env = {**os.environ, "STAGEGATE_HOME": str(root)}
    env.pop("STAGEGATE_POSTGRES_URL", None)
    started = time.monotonic()
    up = _run(
        env, "up", "--postgres", "postgresql://postgres@127.0.0.1:5432/postgres", "--registry-on-postgres"
    )
    assert up.returncode == 1 and "hold 1 registered models" in up.stderr, up.stderr
    assert time.monotonic() - started < 30
    assert not (root / "stack" / "pids").exists() or not list((root / "stack" / "pids").iterdir())


def test_a_postgres_that_is_down_is_reported_in_seconds(tmp_path: Path) -> None:
    from stagegate.stack import free_port

    env = {**os.environ, "STAGEGATE_HOME": str(tmp_path)}
    started = time.monotonic()
    up = _run(env, "up", "--postgres", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    assert up.returncode == 1 and "is not usable" in up.stderr, up.stderr
    assert time.monotonic() - started < 30
