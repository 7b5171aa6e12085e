"""MLflow round trip: log and register a trained ranker with its recipe, load it back, serve it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.models import load_recipe, train
from tests.models.conftest import RECIPES


@pytest.fixture
def tracking(tmp_path: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("models", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    yield
    mlflow.set_tracking_uri(None)


def test_log_register_load_and_predict(tracking, tiny) -> None:
    import mlflow

    from simulator.models.pyfunc import load_ranker, load_recipe_artifact, log_ranker

    recipe = load_recipe(RECIPES / "champion.yaml")
    model = train(recipe, tiny.logs, tiny.catalog)
    version = log_ranker(model, recipe, registered_model_name="recsys-ranker", catalog=tiny.catalog)
    assert version.name == "recsys-ranker" and str(version.version) == "1"
    assert version.tags["family"] == "reranker" and version.tags["recipe"] == "champion"

    uri = f"models:/recsys-ranker/{version.version}"
    loaded = load_ranker(uri)
    ctx = tiny.logs.context
    np.testing.assert_array_equal(loaded.recommend(ctx, 10), model.recommend(ctx, 10))
    assert load_recipe_artifact(uri) == recipe

    requests = pd.DataFrame(
        {"user_id": [1, 2, 3], "hour": [8, 13, 21], "device": [1, 0, 1], "recent_items": [[1, 2], [], [5]]}
    )
    out = mlflow.pyfunc.load_model(uri).predict(requests, params={"k": 5})
    assert list(out.columns) == ["user_id", "items"] and len(out) == 3
    assert all(len(items) == 5 and len(set(items)) == 5 for items in out["items"])
