"""Fixtures of the router tests: a real local MLflow registry (SQLite) holding small pyfunc versions that
meet the ranking contract, and a real router served by uvicorn on a free loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MODEL = "router-test-ranker"
TOKEN = "test-admin-token-0123456789abcdef"
MODEL_FILE = Path(__file__).with_name("ranker_model.py")
#: version -> behaviour (tests/router/ranker_model.py); 1 is the champion alias, 2 the candidate alias,
#: which fails on request ids starting with fail- and takes 0.4 s on those starting with slow-
VERSIONS = {"1": {"mode": "low"}, "2": {"mode": "high", "hooks": True, "delay": 0.4}}


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    model: str = MODEL


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """An MLflow registry with four versions of MODEL; aliases champion -> 1, candidate -> 2."""
    import mlflow

    from stagegate.contract import contract_signature

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("router-tests", artifact_location=(root / "artifacts").as_uri())
    for version, config in VERSIONS.items():
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.pyfunc.log_model(
                name="ranker",
                python_model=str(MODEL_FILE),
                model_config=config,
                signature=contract_signature(),
                registered_model_name=MODEL,
                pip_requirements=["mlflow", "pandas"],
            )
        assert str(info.registered_model_version) == version
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "candidate", "2")
    return Registry(uri)


class RunningRouter:
    """A router (stagegate.router.app) served by uvicorn in a thread on a free loopback port."""

    def __init__(self, config: Any, token: str = TOKEN) -> None:
        import uvicorn

        from stagegate.router.app import build_router, create_app

        self.router = build_router(config, token)
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.router),
                host="127.0.0.1",
                port=0,
                log_level="warning",
                access_log=False,
                lifespan="on",
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="router-under-test", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the router did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """A clean shutdown (the lifespan flushes the request log)."""
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the router did not stop"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ask(client: Any, request_id: str, user_id: int, items: list[int] | None = None, k: int = 3) -> Any:
    return client.post(
        "/recommend",
        json={
            "request_id": request_id,
            "user_id": user_id,
            "candidate_items": items or [5, 1, 9, 3, 7],
            "k": k,
            "context": {"device": 1, "hour": 9},
        },
    )


@pytest.fixture
def router_config(registry: Registry, tmp_path: Path) -> Any:
    from stagegate.router.config import RouterConfig

    def make(**overrides: Any) -> RouterConfig:
        options: dict[str, Any] = {
            "model": registry.model,
            "tracking_uri": registry.tracking_uri,
            "state": str(tmp_path / "split.json"),
            "queue_size": 2,
            "timeout_seconds": 0.25,
            "max_body_bytes": 4096,
        }
        options.update(overrides)
        return RouterConfig(**options)

    return make


@pytest.fixture
def running(router_config: Any) -> Iterator[RunningRouter]:
    server = RunningRouter(router_config())
    yield server
    server.stop()
