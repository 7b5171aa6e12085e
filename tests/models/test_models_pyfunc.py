"""MLflow round trip of recipe models, logged from code with data-only state: every family gives back the
same slates and scores, bit for bit, through stagegate's loader and through mlflow.pyfunc.load_model, and
nothing in the logged model is a pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.models import load_recipe, parse_recipe, train
from tests.models.conftest import RECIPES
from tests.models.test_models_protocol import FAMILIES


@pytest.fixture
def tracking(tmp_path: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("models", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def _same_model(loaded, model, ctx) -> None:
    """Same slates and the same scores (exactly), and the serving attributes the world reads."""
    a_items, a_scores = model.recommend_with_scores(ctx, 10)
    b_items, b_scores = loaded.recommend_with_scores(ctx, 10)
    np.testing.assert_array_equal(b_items, a_items)
    np.testing.assert_array_equal(b_scores, a_scores)
    np.testing.assert_array_equal(loaded.scores(ctx), model.scores(ctx))
    assert type(loaded) is type(model) and loaded.name == model.name
    for attr in ("latency_ms_median", "error_rate", "recipe", "n_items"):
        assert getattr(loaded, attr, None) == getattr(model, attr, None), attr


ALL_RECIPES = sorted(RECIPES.glob("*.yaml")) + sorted((RECIPES / "zoo").glob("*.yaml"))


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_recipe_survives_the_data_only_state(path: Path, tiny, tmp_path: Path) -> None:
    from simulator.models.state import read_state, write_state

    model = train(load_recipe(path), tiny.logs, tiny.catalog)
    json_path, npz_path = write_state(model, {}, tmp_path)
    loaded, _ = read_state(json_path, npz_path)
    _same_model(loaded, model, tiny.logs.context)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_survives_the_data_only_state(name: str, tiny, tmp_path: Path) -> None:
    from simulator.models.state import read_state, write_state

    recipe = parse_recipe({**FAMILIES[name], "latency_ms_median": 7.5, "error_rate": 0.01}, name)
    model = train(recipe, tiny.logs, tiny.catalog)
    loaded, _ = read_state(*write_state(model, {}, tmp_path))
    _same_model(loaded, model, tiny.logs.context)
    assert loaded.error_rate == 0.01 and loaded.latency_ms_median == 7.5


def test_log_register_load_and_predict(tracking, tiny) -> None:
    import mlflow

    from simulator.models.pyfunc import load_ranker, load_recipe_artifact, log_ranker
    from stagegate.contract import check_version

    recipe = load_recipe(RECIPES / "better.yaml")  # reranker over a blend of mf, logistic and content
    model = train(recipe, tiny.logs, tiny.catalog)
    version = log_ranker(model, recipe, registered_model_name="recsys-ranker", catalog=tiny.catalog)
    assert version.name == "recsys-ranker" and str(version.version) == "1"
    assert version.tags["family"] == "reranker" and version.tags["recipe"] == "better"
    uri = f"models:/recsys-ranker/{version.version}"
    report = check_version("recsys-ranker", "1")
    assert report.ok and report.flavour == "recipe", report

    # stagegate's loader: the installed classes rebuilt from data
    ctx = tiny.logs.context
    _same_model(load_ranker(uri), model, ctx)
    assert load_recipe_artifact(uri) == recipe

    # MLflow's loader runs the stored code file, which gives the same ranker
    pyfunc = mlflow.pyfunc.load_model(uri)
    _same_model(pyfunc.unwrap_python_model().ranker, model, ctx)
    requests = pd.DataFrame(
        {"user_id": [1, 2, 3], "hour": [8, 13, 21], "device": [1, 0, 1], "recent_items": [[1, 2], [], [5]]}
    )
    out = pyfunc.predict(requests, params={"k": 5})
    assert list(out.columns) == ["user_id", "items"] and len(out) == 3
    assert all(len(items) == 5 and len(set(items)) == 5 for items in out["items"])


def test_the_logged_model_is_code_plus_data_no_pickle(tracking, tiny) -> None:
    import mlflow.artifacts
    import yaml

    from simulator.models.pyfunc import RECIPE_MODEL_CODE, log_ranker

    recipe = load_recipe(RECIPES / "popularity_only.yaml")
    log_ranker(train(recipe, tiny.logs, tiny.catalog), recipe, "recsys-ranker", catalog=tiny.catalog)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/recsys-ranker/1"))
    flavour = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    # a model from code: MLflow's code-model loader, no pickled python_model entry
    assert flavour["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavour
    assert (local / Path(flavour["model_code_path"]).name).read_text() == RECIPE_MODEL_CODE.read_text()
    assert set(flavour["artifacts"]) == {"recipe", "state", "arrays"}
    files = [p for p in local.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".pkl", ".pickle", ".cloudpickle"}]
    # an .npz is a zip of .npy files; none of them holds an object array (which would need pickle)
    with np.load(local / "artifacts" / "ranker.npz", allow_pickle=False) as data:
        assert all(not data[key].dtype.hasobject for key in data.files)
    json.loads((local / "artifacts" / "ranker.json").read_text())


class _Payload:
    """Unpickling this creates the marker file: what a crafted model would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_cloudpickled_version_is_refused_without_unpickling(
    tracking, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cloudpickled model (how older stagegate logged recipe models, or a crafted one): open-promotion's
    contract check names the problem, stagegate's loaders refuse it, and the pickle never runs."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from simulator.models.pyfunc import RecipeModelError, load_ranker
    from stagegate.contract import PICKLE_SWITCH, check_version
    from stagegate.models.loading import load_ranker as load_any

    monkeypatch.setenv(PICKLE_SWITCH, "false")  # what refuse_pickled_models() sets (restored afterwards)
    marker = tmp_path / "pwned"

    class Crafted(mlflow.pyfunc.PythonModel):
        def __init__(self) -> None:
            self.payload = _Payload(marker)

        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="ranker", python_model=Crafted(), registered_model_name="recsys-ranker", pip_requirements=[]
        )
    assert not marker.exists()
    version = str(info.registered_model_version)
    # untagged, served as a contract model: MLflow is told to refuse the pickle
    with pytest.raises(MlflowException, match="pickle is disallowed"):
        load_any(f"models:/recsys-ranker/{version}", {})
    assert not marker.exists()
    mlflow.MlflowClient().set_model_version_tag("recsys-ranker", version, "recipe", "champion")
    report = check_version("recsys-ranker", version)
    assert any(p.startswith("model: the pyfunc is a cloudpickled Python object") for p in report.problems)
    with pytest.raises(
        RecipeModelError, match=r"models:/recsys-ranker/1: tagged 'recipe'.*does not unpickle"
    ):
        load_ranker(f"models:/recsys-ranker/{version}")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda doc: doc["root"].update(family="os.system"), "unknown family 'os.system'"),
        (lambda doc: doc["root"]["attrs"].update(__class__={"value": "x"}), "attribute name '__class__'"),
        (lambda doc: doc["root"]["attrs"].update(name={"pickle": "x"}), "unknown entry 'pickle'"),
        (lambda doc: doc["root"]["attrs"].update(log_counts={"array": "a99"}), "array 'a99' is not in"),
        (lambda doc: doc.update(format_version=2), "state format version 2"),
    ],
)
def test_a_tampered_state_is_refused_naming_file_and_field(edit, reason: str, tiny, tmp_path: Path) -> None:
    from simulator.models.state import RecipeStateError, read_state, write_state

    model = train(parse_recipe({"family": "popularity"}), tiny.logs, tiny.catalog)
    json_path, npz_path = write_state(model, {}, tmp_path)
    doc = json.loads(json_path.read_text())
    edit(doc)
    json_path.write_text(json.dumps(doc))
    with pytest.raises(RecipeStateError, match=reason) as err:
        read_state(json_path, npz_path)
    assert str(json_path) in str(err.value)


def test_an_object_array_in_the_state_is_refused_not_unpickled(tiny, tmp_path: Path) -> None:
    from simulator.models.state import RecipeStateError, read_state, write_state

    marker = tmp_path / "pwned"
    model = train(parse_recipe({"family": "popularity"}), tiny.logs, tiny.catalog)
    json_path, npz_path = write_state(model, {}, tmp_path)
    crafted = np.empty(1, dtype=object)
    crafted[0] = _Payload(marker)
    np.savez(npz_path, a0=crafted)  # np.save pickles object arrays; np.load(allow_pickle=False) must refuse
    with pytest.raises(RecipeStateError, match=r"ranker\.npz: cannot read the model's arrays"):
        read_state(json_path, npz_path)
    assert not marker.exists()
