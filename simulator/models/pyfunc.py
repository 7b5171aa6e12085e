"""MLflow packaging of recipe models: a pyfunc "model from code" that answers request tables with top-k
item lists, its fitted state stored as data.

``log_ranker`` logs a trained ranker with ``mlflow.pyfunc.log_model(name=..., python_model=<path of
simulator/models/recipe_model.py>, artifacts={...})``: MLflow stores a copy of that file, which imports the
installed ``simulator`` package, and three data artifacts: the recipe (YAML), the model tree (JSON) and its
arrays (``.npz``, read with ``allow_pickle=False``; simulator/models/state.py). Nothing is cloudpickled,
so loading the model unpickles nothing.

``load_ranker`` (the ``recipe`` flavour's loader, what stagegate serves a version tagged ``recipe`` with)
does not even run the stored copy of the code file: it downloads the data artifacts and rebuilds the ranker
with the installed package's classes. ``mlflow.pyfunc.load_model`` of the same version (another tool, the
router) runs the stored file, which gives the same slates.

MLflow is imported inside the functions: it takes about 2 s to import and the CLI must start fast.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stagegate.logs import DEVICES, SEGMENTS, RequestContext

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities.model_registry import ModelVersion

    from simulator.models.recipe import Recipe
    from stagegate.models.base import Ranker

ARTIFACT_PATH = "ranker"
REQUEST_COLUMNS = ("user_id", "hour", "device", "user_segment", "t", "recent_items", "request_id")


class CatalogSnapshot:
    """What the packaged model needs of the catalogue to build a context: publish days and stock."""

    def __init__(self, publish_day: np.ndarray, in_stock: np.ndarray, t: float) -> None:
        self.publish_day = np.asarray(publish_day, dtype=float)
        self.in_stock = np.asarray(in_stock, dtype=bool)
        self.t = float(t)

    @classmethod
    def from_frame(cls, catalog: pd.DataFrame, t: float | None = None) -> CatalogSnapshot:
        frame = catalog.sort_values("item_id")
        publish = frame["publish_day"].to_numpy(dtype=float)
        now = float(t) if t is not None else float(max(publish.max(), 0.0))
        return cls(publish, frame["stock"].to_numpy() > 0, now)


def _codes(values: pd.Series, names: tuple[str, ...], column: str) -> np.ndarray:
    """Integer codes from either codes or names (e.g. device 1 or "mobile")."""
    if values.dtype == object or str(values.dtype).startswith(("string", "str")):
        lookup = {name: i for i, name in enumerate(names)}
        try:
            return np.array([lookup[v] if isinstance(v, str) else int(v) for v in values], dtype=np.int8)
        except KeyError as err:
            raise ValueError(
                f"column {column!r}: unknown value {err.args[0]!r} (expected one of {names})"
            ) from None
    return values.to_numpy(dtype=np.int8)


def context_from_frame(
    frame: pd.DataFrame, snapshot: CatalogSnapshot, history_len: int = 10
) -> RequestContext:
    """A RequestContext from a request table; only ``user_id`` is required (see REQUEST_COLUMNS)."""
    if "user_id" not in frame.columns:
        raise ValueError(f"request table needs a 'user_id' column (have {list(frame.columns)})")
    n = len(frame)
    t = frame["t"].to_numpy(dtype=float) if "t" in frame.columns else np.full(n, snapshot.t)
    recent = np.full((n, history_len), -1, dtype=np.int32)
    if "recent_items" in frame.columns:
        for i, items in enumerate(frame["recent_items"]):
            if items is None or (np.isscalar(items) and not isinstance(items, str)):
                continue
            row = np.asarray(list(items), dtype=np.int64)[:history_len]
            recent[i, : len(row)] = row
    t_ref = float(np.max(t)) if n else snapshot.t
    published = snapshot.publish_day <= t_ref
    return RequestContext(
        request_id=frame["request_id"].to_numpy(dtype=np.int64)
        if "request_id" in frame.columns
        else np.arange(n),
        t=t,
        user_id=frame["user_id"].to_numpy(dtype=np.int64),
        hour=frame["hour"].to_numpy(dtype=np.int8)
        if "hour" in frame.columns
        else np.full(n, 12, dtype=np.int8),
        device=_codes(frame["device"], DEVICES, "device")
        if "device" in frame.columns
        else np.zeros(n, np.int8),
        user_segment=(
            _codes(frame["user_segment"], SEGMENTS, "user_segment")
            if "user_segment" in frame.columns
            else np.zeros(n, np.int8)
        ),
        recent_items=recent,
        in_stock=snapshot.in_stock & published,
        item_age_days=np.where(published, t_ref - snapshot.publish_day, np.inf),
    )


def predict_frame(ranker: Ranker, snapshot: CatalogSnapshot, k: int, model_input: Any, params: Any) -> Any:
    """Top-k item lists for a request table (columns: see REQUEST_COLUMNS; params: k): what ``predict`` of
    the packaged model (simulator/models/recipe_model.py) answers."""
    import pandas as pd

    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    k = int((params or {}).get("k", k))
    ctx = context_from_frame(frame, snapshot)
    items = np.asarray(ranker.recommend(ctx, k))
    return pd.DataFrame({"user_id": ctx.user_id, "items": [row.tolist() for row in items]})


def _signature(k: int) -> Any:
    """Request table in (only user_id required; device and segment as codes), item lists out, param k."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec("long", "user_id"),
            ColSpec("long", "hour", required=False),
            ColSpec("long", "device", required=False),
            ColSpec("long", "user_segment", required=False),
            ColSpec("double", "t", required=False),
            ColSpec(Array("long"), "recent_items", required=False),
            ColSpec("long", "request_id", required=False),
        ]
    )
    outputs = Schema([ColSpec("long", "user_id"), ColSpec(Array("long"), "items")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", "long", k)]))


RECIPE_MODEL_CODE = Path(__file__).with_name("recipe_model.py")  # shipped in the package (setuptools)
#: The data artifacts of a recipe model, by their name in the pyfunc flavour's ``artifacts``.
STATE_ARTIFACT, ARRAYS_ARTIFACT, RECIPE_ARTIFACT = "state", "arrays", "recipe"


class RecipeModelError(RuntimeError):
    """A version tagged ``recipe`` that stagegate will not load; the message names it and the reason."""


def _snapshot_extra(snapshot: CatalogSnapshot, k: int) -> dict[str, Any]:
    return {"publish_day": snapshot.publish_day, "in_stock": snapshot.in_stock, "t": snapshot.t, "k": int(k)}


def read_recipe_model(json_path: Path, npz_path: Path) -> tuple[Ranker, CatalogSnapshot, int]:
    """The ranker, catalogue snapshot and default k saved by :func:`log_ranker` (data only)."""
    from simulator.models.state import RecipeStateError, read_state

    ranker, extra = read_state(json_path, npz_path)
    try:
        snapshot = CatalogSnapshot(extra["publish_day"], extra["in_stock"], float(extra["t"]))
        k = int(extra["k"])
    except (KeyError, TypeError, ValueError) as err:
        raise RecipeStateError(
            f"{json_path}: extra: the catalogue snapshot is incomplete ({err!r})"
        ) from None
    if snapshot.publish_day.shape != snapshot.in_stock.shape:
        raise RecipeStateError(f"{json_path}: extra: publish_day and in_stock differ in length")
    return ranker, snapshot, k


def log_ranker(
    ranker: Ranker,
    recipe: Recipe,
    registered_model_name: str,
    catalog: pd.DataFrame | None = None,
    k: int = 10,
    tags: dict[str, str] | None = None,
) -> ModelVersion:
    """Log ``ranker`` as a pyfunc model from code with its state and ``recipe`` as data artifacts, register
    it, return the ModelVersion.

    Uses the active MLflow run if there is one, else a short run named after the recipe. ``catalog`` (the
    public catalogue) lets the packaged model build contexts on its own; without it, all items are assumed
    published and in stock. Version tags record the recipe's family, label and name.
    """
    import mlflow
    import pandas as pd

    from simulator.models.state import write_state

    if catalog is not None:
        snapshot = CatalogSnapshot.from_frame(catalog)
    else:
        n_items = int(getattr(ranker, "n_items", 0))
        if n_items <= 0:
            raise ValueError("log_ranker needs the catalog when the ranker does not expose n_items")
        snapshot = CatalogSnapshot(np.full(n_items, -1.0), np.ones(n_items, dtype=bool), 0.0)
    signature = _signature(k)

    with tempfile.TemporaryDirectory() as tmp:
        recipe_path = Path(tmp) / f"{recipe.name or 'recipe'}.yaml"
        recipe_path.write_text(recipe.to_yaml())
        state_path, arrays_path = write_state(ranker, _snapshot_extra(snapshot, k), Path(tmp) / "state")  # type: ignore[arg-type]
        own_run = mlflow.active_run() is None
        run = mlflow.start_run(run_name=f"log-{recipe.name}") if own_run else mlflow.active_run()
        try:
            info = mlflow.pyfunc.log_model(
                name=ARTIFACT_PATH,
                python_model=str(RECIPE_MODEL_CODE),  # a model from code: MLflow stores the file, no pickle
                artifacts={
                    RECIPE_ARTIFACT: str(recipe_path),
                    STATE_ARTIFACT: str(state_path),
                    ARRAYS_ARTIFACT: str(arrays_path),
                },
                registered_model_name=registered_model_name,
                signature=signature,
                input_example=pd.DataFrame({"user_id": [0, 1], "hour": [9, 20], "device": [0, 1]}),
                # explicit requirements: inferring them would re-load the model in a subprocess (slow)
                pip_requirements=["stagegate", "numpy", "pandas", "pydantic", "pyyaml", "scipy"],
            )
        finally:
            if own_run and run is not None:
                mlflow.end_run()
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    all_tags = {"recipe": recipe.name, "family": recipe.family, "label": str(recipe.label or "purchase")}
    all_tags.update(tags or {})
    for key, value in all_tags.items():
        client.set_model_version_tag(registered_model_name, version, key, value)
    return client.get_model_version(registered_model_name, version)


def load_ranker(model_uri: str) -> Ranker:
    """The Ranker of a recipe model (e.g. ``models:/recsys-ranker/3``), rebuilt from its data artifacts by
    the installed package: neither the stored code file nor any pickle is run.

    Raises RecipeModelError naming the version when it is not a data-only recipe model, e.g. one logged
    as a cloudpickled object before recipe models were logged from code: stagegate refuses to unpickle it.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from simulator.models.state import STATE_ARRAYS, STATE_JSON, RecipeStateError

    try:
        # only the two state files: the model's code file and MLmodel are not needed to rebuild it
        json_path = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri}/artifacts/{STATE_JSON}")
        )
        npz_path = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri}/artifacts/{STATE_ARRAYS}")
        )
    except (MlflowException, OSError) as err:
        raise RecipeModelError(
            f"{model_uri}: tagged 'recipe' but has no data-only model state (artifacts/{STATE_JSON}, "
            f"artifacts/{STATE_ARRAYS}): it was probably logged as a cloudpickled object by an older "
            "stagegate, and stagegate does not unpickle models; register it again "
            f"(`stagegate candidates register RECIPE`) ({type(err).__name__})"
        ) from None
    try:
        ranker, _, _ = read_recipe_model(json_path, npz_path)
    except RecipeStateError as err:
        raise RecipeModelError(f"{model_uri}: {err}") from None
    return ranker


def load_recipe_artifact(model_uri: str) -> Recipe:
    """The recipe that was logged with a model (its ``recipe`` artifact)."""
    import mlflow.artifacts
    import yaml

    from simulator.models.recipe import parse_recipe

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    for path in sorted((local / "artifacts").glob("*.yaml")):
        return parse_recipe(yaml.safe_load(path.read_text()), str(path))
    raise FileNotFoundError(f"no recipe artifact in {model_uri}")
