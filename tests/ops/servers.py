"""Real servers for the ops and browser tests: one stack per test session, a webhook receiver, workspaces.

The stack (SeaweedFS, Prefect server, MLflow server, a process worker with the deployments of
infra/prefect.yaml) runs on free ports, on PostgreSQL databases made for this session (dropped at the
end), with a fresh PREFECT_HOME. Both tests/ops and tests/browser use the same one: whichever asks first
starts it, the session's end stops it (see the conftest files). Its logs are copied to test-output/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("STAGEGATE_TEST_OUTPUT", REPO / "test-output"))
CLI = [sys.executable, "-m", "stagegate.cli"]
PG_ADMIN_URL = os.environ.get("STAGEGATE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@dataclass
class RunningStack:
    root: Path
    state: dict[str, Any]
    stack: Any
    db_prefix: str

    @property
    def api(self) -> str:
        return self.state["urls"]["prefect_api"]

    @property
    def ui(self) -> str:
        return self.state["urls"]["prefect_ui"]

    @property
    def mlflow(self) -> str:
        return self.state["urls"]["mlflow"]

    @property
    def s3(self) -> str:
        return self.state["urls"]["s3"]


_STACK: RunningStack | None = None
_STACK_ERROR: BaseException | None = None
_LOCK = threading.Lock()


def get_stack() -> RunningStack:
    """The session's stack, started on first use."""
    global _STACK, _STACK_ERROR
    with _LOCK:
        if _STACK is not None:
            return _STACK
        if _STACK_ERROR is not None:
            raise RuntimeError(f"the test stack failed to start earlier: {_STACK_ERROR}")
        from stagegate.stack import Stack, StackConfig, free_port
        from stagegate.workspace import Workspace

        root = Path(tempfile.mkdtemp(prefix="stagegate-stack-"))
        prefix = f"sgtest_{uuid.uuid4().hex[:8]}"
        stack = Stack(Workspace.from_env(root))
        ports = {"prefect": free_port(), "mlflow": free_port(), "s3": free_port(grpc_too=True)}
        try:
            state = stack.up(
                StackConfig(
                    ports=ports,
                    postgres_url=PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"),
                    registry_on_postgres=True,  # one registry for many workspaces, artifacts in S3
                    db_prefix=prefix,
                )
            )
        except BaseException as exc:
            _STACK_ERROR = exc
            _keep_logs(root)
            _drop_databases(prefix)
            raise
        _STACK = RunningStack(root, state, stack, prefix)
        return _STACK


def shutdown_stack() -> None:
    global _STACK
    with _LOCK:
        if _STACK is None:
            return
        running, _STACK = _STACK, None
    running.stack.down()
    _keep_logs(running.root)
    _drop_databases(running.db_prefix)
    shutil.rmtree(running.root, ignore_errors=True)


def _keep_logs(root: Path) -> None:
    logs = root / "stack" / "logs"
    if logs.exists():
        target = OUTPUT / "ops" / "stack-logs"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(logs, target)


def _drop_databases(prefix: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in (f"{prefix}_prefect", f"{prefix}_mlflow", f"{prefix}_events"):
                conn.execute(
                    text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    except Exception:
        pass
    finally:
        engine.dispose()


# -- a webhook receiver -------------------------------------------------------------------------------------


class Receiver:
    """A local HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                try:
                    received.append(json.loads(body or b"null"))
                except ValueError:
                    received.append({"raw": body.decode(errors="replace")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self, promotion_id: str | None = None) -> list[str]:
        return [
            r.get("kind") or r.get("payload", {}).get("kind")
            for r in self.received
            if promotion_id is None
            or promotion_id in (r.get("promotion_id"), r.get("payload", {}).get("promotion_id"))
        ]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in list(self.received) if predicate(r)]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"nothing matching arrived within {timeout}s; got {self.received}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port_url() -> str:
    """A URL where nothing listens (a port that was free a moment ago)."""
    from stagegate.stack import free_port

    return f"http://127.0.0.1:{free_port()}/hook"


# -- workspaces with a registered model --------------------------------------------------------------------


@dataclass
class Promo:
    """A workspace with model ``model`` (v1 champion, v2 candidate) and a policy for it."""

    root: Path
    model: str
    policy: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    tokens: dict[str, str] = field(default_factory=dict)  # each approver's token (stagegate.identity)

    def runtime(self) -> Any:
        from stagegate.registry import Registry
        from stagegate.runtime import Runtime
        from stagegate.workspace import Workspace

        rt = Runtime(Workspace(self.root))
        rt.__dict__["registry"] = Registry(self.env["STAGEGATE_MLFLOW_URI"])  # not this process's env
        return rt


ROLLOUT_APPROVAL = {"rollout": {"bake": "0s", "approval": "before"}}


def make_promo(
    base: Path,
    stack: RunningStack,
    *,
    approvers: list[str],
    timeout: str = "120s",
    stages: dict[str, Any] | None = None,
    mlflow: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Promo:
    """Register ``<model>`` v1 (champion) and v2 in MLflow (the stack's server unless ``mlflow``)."""
    import yaml
    from mlflow import MlflowClient

    from simulator.traffic import FileTrafficController
    from stagegate.traffic import Split

    model = f"m-{uuid.uuid4().hex[:8]}"
    root = base / model
    root.mkdir(parents=True)
    (root / "data").mkdir()
    mlflow_uri = mlflow or stack.mlflow
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    client.create_registered_model(model)
    experiment = client.create_experiment(f"train-{model}")
    for _ in (1, 2):
        run = client.create_run(experiment).info.run_id
        client.log_text(run, "placeholder: these tests never load the model", "model/README")
        _log_contract_mlmodel(client, run, root)
        client.create_model_version(model, f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias(model, "champion", "1")
    FileTrafficController(root / "traffic.json").set_split(Split(champion="1"))
    policy = root / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "model": model,
                "approvals": {"approvers": approvers, "timeout": timeout},
                "stages": stages or ROLLOUT_APPROVAL,
            }
        ),
        encoding="utf-8",
    )
    env = {
        **os.environ,
        **stack.state["env"],
        "STAGEGATE_HOME": str(root),
        "STAGEGATE_MLFLOW_URI": mlflow_uri,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_LOGGING_LEVEL": "INFO",
        **(extra_env or {}),
    }
    env.pop("STAGEGATE_EVENTS_URL", None)  # each workspace keeps its own ledger (SQLite)
    from stagegate.events.store import EventStore
    from stagegate.identity import issue_token

    ledger = EventStore(f"sqlite:///{root / 'events.db'}")
    return Promo(root, model, policy, env, tokens={name: issue_token(ledger, name) for name in approvers})


def start_promotion(promo: Promo) -> subprocess.Popen:
    """`stagegate promote` in a subprocess (its output goes to <workspace>/promote.log)."""
    log = (promo.root / "promote.log").open("ab")
    promo.process = subprocess.Popen(
        [*CLI, "promote", "--model", promo.model, "--version", "2", "--policy", str(promo.policy)],
        env=promo.env,
        cwd=str(promo.root),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return promo.process


def paused_run(stack: RunningStack, promo: Promo, timeout: float = 90.0) -> str:
    """The id of the promote flow run of ``promo`` once it is PAUSED."""
    import urllib.request

    deadline = time.monotonic() + timeout
    body = json.dumps({"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}, "limit": 200}).encode()
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{stack.api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            for run in json.loads(response.read()):
                if run.get("parameters", {}).get("model") == promo.model:
                    return run["id"]
        if promo.process is not None and promo.process.poll() is not None:
            raise AssertionError(f"promotion ended before pausing:\n{log_tail(promo)}")
        time.sleep(0.5)
    raise AssertionError(f"no paused promote run for {promo.model} within {timeout}s:\n{log_tail(promo)}")


def log_tail(promo: Promo, lines: int = 60) -> str:
    path = promo.root / "promote.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def finish(promo: Promo, timeout: float = 90.0) -> int:
    assert promo.process is not None
    try:
        return promo.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        promo.process.kill()
        raise AssertionError(f"promotion did not finish within {timeout}s:\n{log_tail(promo)}") from None


def cli(promo: Promo, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        env=promo.env,
        cwd=str(promo.root),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _log_contract_mlmodel(client: object, run: str, scratch: Path) -> None:
    """An MLmodel file that declares the ranking contract's signature (stagegate.contract): promotions open
    only for versions that meet it, and these tests never load the model itself."""
    from mlflow.models import Model

    from stagegate.contract import contract_signature

    folder = scratch / f"mlmodel-{run}"
    folder.mkdir()
    Model(run_id=run, artifact_path="model", signature=contract_signature()).save(str(folder / "MLmodel"))
    client.log_artifact(run, str(folder / "MLmodel"), "model")
