"""Train the example ranker on a logged training set (Parquet, stagegate's impressions schema), log it with
``mlflow.pyfunc.log_model`` to the ranking contract and register it.

    # your own logs and MLflow:
    python -m examples.sklearn_ranker.train --training-log train.parquet --catalogue items.parquet \\
        --tracking-uri http://localhost:5000 --model recsys-ranker
    # a stagegate workspace (the simulator's logs, exported to Parquet first):
    python -m examples.sklearn_ranker.train --workspace "$STAGEGATE_HOME"

It prints the registered version; ``stagegate promote --model recsys-ranker --version <version>
--policy ...`` takes it from there. Nothing here imports stagegate except for the workspace shortcut
and the contract's signature (which you could equally write by hand: docs/bring-your-own.md).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from examples.sklearn_ranker.model import FRESH_DAYS, N_DAYPARTS, save_state

MODEL_FILE = Path(__file__).with_name("model.py")


def _lists(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    column = table.column(name).combine_chunks()
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(
        table.num_rows, -1
    )


def train(training_log: pa.Table, catalogue: pa.Table, seed: int = 0, c: float = 1.0) -> dict:
    """Fit the scorer on every logged impression slot (label: clicked); returns the model's state."""
    from sklearn.linear_model import LogisticRegression

    items_frame = catalogue.to_pandas().sort_values("item_id")
    n_items = len(items_frame)
    category = items_frame["category"].to_numpy(np.int64)
    n_cat = int(category.max()) + 1
    publish_day = items_frame["publish_day"].to_numpy(float)
    log_price = np.log1p(items_frame["price"].to_numpy(float))

    items = _lists(training_log, "items", np.int64)
    clicks = _lists(training_log, "clicks", bool)
    purchases = _lists(training_log, "purchases", bool)
    n, k = items.shape
    pop_click = np.log1p(np.bincount(items[clicks], minlength=n_items).astype(float))
    pop_purchase = np.log1p(np.bincount(items[purchases], minlength=n_items).astype(float))

    t = np.repeat(training_log.column("t").to_numpy().astype(float), k)
    mobile = np.repeat(training_log.column("device").to_numpy() == 1, k).astype(float)
    daypart = np.repeat(
        np.clip(training_log.column("hour").to_numpy().astype(int) // 6, 0, N_DAYPARTS - 1), k
    )
    flat = items.ravel()
    cat = category[flat]
    age = t - publish_day[flat]
    rows = np.arange(n * k)

    def onehot(codes: np.ndarray, size: int, weight: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros((n * k, size))
        out[rows, codes] = 1.0 if weight is None else weight
        return out

    x = np.hstack(
        [
            pop_click[flat, None],
            pop_purchase[flat, None],
            log_price[flat, None],
            np.where(age >= 0, np.exp(-np.clip(age, 0, None) / FRESH_DAYS), 0.0)[:, None],
            onehot(cat, n_cat),
            onehot(cat, n_cat, mobile),
            onehot(cat * N_DAYPARTS + daypart, n_cat * N_DAYPARTS),
            onehot(np.tile(np.arange(k), n), k),  # position: training only
        ]
    )
    y = clicks.ravel()
    clf = LogisticRegression(C=c, max_iter=500, random_state=seed).fit(x, y)
    w = clf.coef_.ravel()
    at = np.cumsum([0, 1, 1, 1, 1, n_cat, n_cat, n_cat * N_DAYPARTS])
    return {
        "weights": {
            "pop_click": w[at[0]],
            "pop_purchase": w[at[1]],
            "log_price": w[at[2]],
            "fresh": w[at[3]],
            "category": w[at[4] : at[5]],
            "cat_mobile": w[at[5] : at[6]],
            "cat_daypart": w[at[6] : at[7]],
        },
        "n_categories": n_cat,
        "category": category,
        "publish_day": publish_day,
        "log_price": log_price,
        "pop_click": pop_click,
        "pop_purchase": pop_purchase,
        "last_t": float(t.max()) if len(t) else 0.0,
        "sklearn": clf,
        "train_accuracy": float(clf.score(x, y)),
    }


def log_and_register(state: dict, model: str, experiment_id: str | None = None) -> str:
    """Log the model (code + state) with the contract's signature, register it; returns the version."""
    import mlflow

    from stagegate.contract import contract_signature

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.npz"
        save_state(state, str(path))  # arrays only: the fitted estimator object is not needed to serve
        with mlflow.start_run(experiment_id=experiment_id, run_name="train sklearn-ranker"):
            mlflow.log_metric("train_accuracy", state["train_accuracy"])
            info = mlflow.pyfunc.log_model(
                name="ranker",
                python_model=str(MODEL_FILE),
                artifacts={"state": str(path)},
                signature=contract_signature(),
                registered_model_name=model,
                pip_requirements=["mlflow", "numpy", "pandas", "scikit-learn"],
            )
    return str(info.registered_model_version)


def train_in_workspace(root: str | Path, model: str | None = None) -> str:
    """Export a stagegate workspace's training log and catalogue to Parquet (its OfflineData port), train
    on the files, register the model in the workspace's MLflow; returns the version."""
    from stagegate.adapters.offline import export_parquet
    from stagegate.runtime import Runtime, use_tracking
    from stagegate.workspace import Workspace

    rt = Runtime(Workspace.from_env(root))
    paths = export_parquet(rt.offline_data, Path(rt.workspace.root) / "export")
    state = train(pq.read_table(paths["training_log"]), pq.read_table(paths["catalogue"]))
    experiment_id = use_tracking(rt.workspace.mlflow_uri, rt.workspace.artifact_root)
    version = log_and_register(state, model or rt.manifest["model"], experiment_id)
    rt.registry.tag(model or rt.manifest["model"], version, status="registered", stage="registered")
    return version


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", help="a stagegate workspace (STAGEGATE_HOME)")
    parser.add_argument("--training-log", help="Parquet file of logged impressions (the training set)")
    parser.add_argument("--catalogue", help="Parquet file of the item catalogue")
    parser.add_argument("--tracking-uri", help="MLflow tracking and registry URI")
    parser.add_argument("--model", help="registered model name (default: the workspace's)")
    args = parser.parse_args(argv)
    if args.workspace:
        print(train_in_workspace(args.workspace, args.model))
        return
    if not (args.training_log and args.catalogue and args.model):
        parser.error("give --workspace, or --training-log, --catalogue and --model")
    import mlflow

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
        mlflow.set_registry_uri(args.tracking_uri)
    state = train(pq.read_table(args.training_log), pq.read_table(args.catalogue))
    print(log_and_register(state, args.model))


if __name__ == "__main__":
    main()
