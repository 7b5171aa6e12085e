"""`stagegate up` / `down`: the local stack's servers answer, MLflow keeps artifacts in SeaweedFS's S3,
the deployments of infra/prefect.yaml exist, and `down` stops exactly what `up` started."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.ops.servers import CLI, RunningStack

pytestmark = pytest.mark.slow


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode(errors="replace")


def test_every_component_is_healthy_with_its_ui(stack: RunningStack) -> None:
    status = stack.stack.status()
    assert all(s["healthy"] for s in status.values()), status
    assert "<html" in _get(stack.ui).lower()  # the Prefect UI
    assert "<html" in _get(stack.mlflow).lower()  # the MLflow UI
    body = json.dumps({}).encode()
    request = urllib.request.Request(
        f"{stack.api}/deployments/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        names = {d["name"] for d in json.loads(response.read())}
    assert {"promote", "guardrail-monitor"} <= names
    assert stack.state["databases"]["prefect"].startswith("postgresql+asyncpg://")
    # pid files and logs live in the workspace
    for name in ("s3", "prefect", "mlflow", "worker"):
        assert (stack.root / "stack" / "pids" / f"{name}.pid").exists()
        assert (stack.root / "stack" / "logs" / f"{name}.log").stat().st_size > 0


def test_mlflow_artifacts_land_in_seaweedfs(stack: RunningStack) -> None:
    import boto3
    from mlflow import MlflowClient

    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3,
        aws_access_key_id="any",
        aws_secret_access_key="any",
        region_name="us-east-1",
    )
    s3.put_object(Bucket="stagegate-mlflow", Key="probe/hello.txt", Body=b"hello")
    assert s3.get_object(Bucket="stagegate-mlflow", Key="probe/hello.txt")["Body"].read() == b"hello"

    client = MlflowClient(tracking_uri=stack.mlflow)  # the client has no S3 keys: the server proxies
    experiment = client.create_experiment(f"s3-probe-{os.getpid()}")
    run = client.create_run(experiment).info.run_id
    client.log_text(run, "evidence", "evidence/report.md")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="stagegate-mlflow", Prefix="artifacts/")["Contents"]]
    assert any(k.endswith(f"{run}/artifacts/evidence/report.md") for k in keys), keys
    assert client.download_artifacts(run, "evidence/report.md")


def test_up_and_down_from_the_command_line(tmp_path: Path) -> None:
    from stagegate.stack import Stack, free_port
    from stagegate.workspace import Workspace

    port = free_port(grpc_too=True)
    env = {**os.environ, "STAGEGATE_HOME": str(tmp_path)}
    up = subprocess.run(
        [*CLI, "up", "--only", "s3", "--s3-port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    stack = Stack(Workspace(tmp_path))
    try:
        assert f"S3 endpoint  http://127.0.0.1:{port}" in up.stdout and "export STAGEGATE_HOME=" in up.stdout
        pid = stack.pid("s3")
        assert pid is not None and _get(f"http://127.0.0.1:{port}/stagegate-mlflow") is not None
        from stagegate.stack import bind_to_stack

        bound: dict[str, str] = {"STAGEGATE_HOME": str(tmp_path)}
        assert bind_to_stack(bound).state == "up" and "PREFECT_API_URL" not in bound  # no Prefect started
        again = subprocess.run(
            [*CLI, "up", "--only", "s3", "--s3-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 1 and "already running here: s3" in again.stderr  # never a second copy
        down = subprocess.run([*CLI, "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0 and "stopped: s3" in down.stdout, down.stdout + down.stderr
    finally:
        stack.down()  # a failed assertion must not leave the server running (no-op after `down`)
    assert stack.pid("s3") is None and not (tmp_path / "stack" / "pids" / "s3.pid").exists()
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/")
