"""A small world with a ranker trained outside stagegate (examples/sklearn_ranker) registered in it, and a
version whose signature breaks the ranking contract: built once, copied per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.setup import MODEL, init_workspace
from tests.workspaces import private_copy


def _log_breaking_version(root: Path) -> str:
    """The example model logged with a signature that breaks the contract in three named ways."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    from examples.sklearn_ranker.train import MODEL_FILE
    from stagegate.runtime import use_tracking
    from stagegate.workspace import Workspace

    ws = Workspace.from_env(root)
    experiment_id = use_tracking(ws.mlflow_uri, ws.artifact_root)
    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "request_id"), ColSpec("long", "user_id")]),
        outputs=Schema([ColSpec(Array("double"), "items")]),
    )
    state = root / "state.pkl"
    state.write_bytes(b"not used: the version is refused before it is loaded")
    with mlflow.start_run(experiment_id=experiment_id, run_name="breaking"):
        info = mlflow.pyfunc.log_model(
            name="ranker",
            python_model=str(MODEL_FILE),
            artifacts={"state": str(state)},
            signature=signature,
            registered_model_name=MODEL,
            pip_requirements=["mlflow"],
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="session")
def byo_seeded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("sklearn")
    from examples.sklearn_ranker.train import train_in_workspace

    root = tmp_path_factory.mktemp("byo") / "ws"
    info = init_workspace(size="small", root=root, seed=11)
    versions = {"sklearn": train_in_workspace(root), "breaking": _log_breaking_version(root)}
    return {"root": root, "info": info, "versions": versions}


@pytest.fixture
def byo_workspace(byo_seeded: dict, tmp_path: Path) -> Iterator[dict]:
    """A private copy of the seeded workspace, with STAGEGATE_HOME pointing at it."""
    with private_copy(byo_seeded, tmp_path) as copy:
        yield copy
