"""A tracking server that does not answer is reported as down within seconds (stagegate.registry
check_reachable), never, after MLflow's minutes of retries, as "the model does not exist"."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagegate.registry import PROBE_SECONDS, Registry, RegistryDown
from stagegate.stack import free_port


def test_a_down_tracking_server_is_reported_down_not_missing() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    registry = Registry(url)
    started = time.monotonic()
    with pytest.raises(RegistryDown, match=f"MLflow at {url} does not answer"):
        registry.get_version("recsys-ranker", "2")
    with pytest.raises(RegistryDown):
        registry.versions("recsys-ranker")
    assert time.monotonic() - started < 2 * PROBE_SECONDS + 2


def test_a_local_store_needs_no_probe(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(LookupError, match="does not exist") as refused:
        registry.get_version("recsys-ranker", "2")
    assert not isinstance(refused.value, RegistryDown)


def test_promote_against_a_down_server_exits_2_within_seconds(tmp_path: Path) -> None:
    from stagegate.cli import app

    env = {"STAGEGATE_HOME": str(tmp_path / "ws"), "STAGEGATE_MLFLOW_URI": f"http://127.0.0.1:{free_port()}"}
    policy = Path(__file__).resolve().parents[2] / "policies" / "demo.yaml"
    started = time.monotonic()
    done = CliRunner().invoke(
        app, ["promote", "--model", "recsys-ranker", "--version", "2", "--policy", str(policy)], env=env
    )
    assert done.exit_code == 2, done.output
    assert "does not answer" in done.output and "Traceback" not in done.output
    assert time.monotonic() - started < 30  # MLflow's own retries took 250 s
