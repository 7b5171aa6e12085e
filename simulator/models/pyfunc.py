"""MLflow packaging of rankers: a pyfunc model that answers request tables with top-k item lists.

``log_ranker`` logs a trained ranker as an MLflow pyfunc model (MLflow 3: ``mlflow.pyfunc.log_model(name=...,
python_model=..., registered_model_name=...)``) with its recipe YAML as an artifact, registers it and returns
the ModelVersion; ``load_ranker`` gives back the Ranker (``load_model(uri).unwrap_python_model()``), which is
what the simulated world serves. The environment that loads the model needs the ``stagegate`` package.

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


def _python_model_base() -> type:
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


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


def make_pyfunc(ranker: Ranker, snapshot: CatalogSnapshot, k: int = 10) -> Any:
    """An instance of the pyfunc wrapper class (built lazily so that importing this module stays cheap)."""
    return _pyfunc_class()(ranker, snapshot, k)


_CLASS_CACHE: dict[str, type] = {}


def _pyfunc_class() -> type:
    if "cls" in _CLASS_CACHE:
        return _CLASS_CACHE["cls"]
    base = _python_model_base()

    class RankerPyfunc(base):  # type: ignore[misc, valid-type]
        """mlflow.pyfunc.PythonModel around a Ranker: request table in, top-k item lists out."""

        def __init__(self, ranker: Ranker, snapshot: CatalogSnapshot, k: int = 10) -> None:
            self.ranker = ranker
            self.snapshot = snapshot
            self.k = k

        # no type hints on predict: MLflow would try (and fail) to derive a schema from them
        def predict(self, context, model_input, params=None):
            """Top-k item lists for a request table (columns: see REQUEST_COLUMNS; params: k)."""
            import pandas as pd

            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            k = int((params or {}).get("k", self.k))
            ctx = context_from_frame(frame, self.snapshot)
            items = np.asarray(self.ranker.recommend(ctx, k))
            return pd.DataFrame({"user_id": ctx.user_id, "items": [row.tolist() for row in items]})

    RankerPyfunc.__module__ = __name__
    RankerPyfunc.__qualname__ = "RankerPyfunc"
    globals()["RankerPyfunc"] = RankerPyfunc  # picklable by reference: simulator.models.pyfunc.RankerPyfunc
    _CLASS_CACHE["cls"] = RankerPyfunc
    return RankerPyfunc


def __getattr__(name: str) -> Any:
    # unpickling a logged model looks the class up by name; build it on demand
    if name == "RankerPyfunc":
        return _pyfunc_class()
    raise AttributeError(name)


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


def log_ranker(
    ranker: Ranker,
    recipe: Recipe,
    registered_model_name: str,
    catalog: pd.DataFrame | None = None,
    k: int = 10,
    tags: dict[str, str] | None = None,
) -> ModelVersion:
    """Log ``ranker`` as a pyfunc model with ``recipe`` as an artifact, register it, return the ModelVersion.

    Uses the active MLflow run if there is one, else a short run named after the recipe. ``catalog`` (the
    public catalogue) lets the packaged model build contexts on its own; without it, all items are assumed
    published and in stock. Version tags record the recipe's family, label and name.
    """
    import mlflow
    import pandas as pd

    if catalog is not None:
        snapshot = CatalogSnapshot.from_frame(catalog)
    else:
        n_items = int(getattr(ranker, "n_items", 0))
        if n_items <= 0:
            raise ValueError("log_ranker needs the catalog when the ranker does not expose n_items")
        snapshot = CatalogSnapshot(np.full(n_items, -1.0), np.ones(n_items, dtype=bool), 0.0)
    python_model = make_pyfunc(ranker, snapshot, k)
    signature = _signature(k)

    with tempfile.TemporaryDirectory() as tmp:
        recipe_path = Path(tmp) / f"{recipe.name or 'recipe'}.yaml"
        recipe_path.write_text(recipe.to_yaml())
        own_run = mlflow.active_run() is None
        run = mlflow.start_run(run_name=f"log-{recipe.name}") if own_run else mlflow.active_run()
        try:
            info = mlflow.pyfunc.log_model(
                name=ARTIFACT_PATH,
                python_model=python_model,
                artifacts={"recipe": str(recipe_path)},
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
    """The Ranker of a logged pyfunc model (e.g. ``models:/recsys-ranker@champion``).

    A stagegate recipe model gives back the ranker it wraps; any other pyfunc model (one that meets the
    ranking contract, stagegate.contract) is served through stagegate.models.external.ExternalRanker,
    which checks every answer.
    """
    import mlflow.pyfunc

    from stagegate.models.external import ExternalRanker

    loaded = mlflow.pyfunc.load_model(model_uri)
    try:
        wrapper = loaded.unwrap_python_model()
    except Exception:  # not a python_model flavour (e.g. a model logged by another library's flavour)
        wrapper = None
    if wrapper is not None and type(wrapper).__name__ == "RankerPyfunc" and hasattr(wrapper, "ranker"):
        return wrapper.ranker
    return ExternalRanker(loaded, name=model_uri)


def load_recipe_artifact(model_uri: str) -> Recipe:
    """The recipe that was logged with a model (its ``recipe`` artifact)."""
    import mlflow.artifacts
    import yaml

    from simulator.models.recipe import parse_recipe

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    for path in sorted((local / "artifacts").glob("*.yaml")):
        return parse_recipe(yaml.safe_load(path.read_text()), str(path))
    raise FileNotFoundError(f"no recipe artifact in {model_uri}")
