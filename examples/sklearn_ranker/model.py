"""The packaged model: an MLflow "model from code" (this file is what ``log_model(python_model=<path>)``
stores and executes when the model is loaded). It depends on numpy, pandas and scikit-learn only, not on
stagegate: the model answers the ranking contract (docs/bring-your-own.md) and nothing else.

Input, one row per request: request_id (str), user_id (int), candidate_items (list of int), device, hour,
t, ... Output, one row per request: request_id, item_ids (best first, from candidate_items), scores.

The scorer is a logistic regression of "clicked" on item popularity, price, freshness and category, with
category x device and category x daypart interactions; the position of the logged impression is a feature
in training only (a standard de-biasing trick), so serving scores are position-free.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

FRESH_DAYS = 7.0
N_DAYPARTS = 4


def item_matrix(state: dict, t: np.ndarray, device: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """Scores ``(n_requests, n_items)`` of every item for every request: ``w . x(request, item) + b``."""
    w = state["weights"]
    n_cat = state["n_categories"]
    cat = state["category"]
    base = (
        w["pop_click"] * state["pop_click"]
        + w["pop_purchase"] * state["pop_purchase"]
        + w["log_price"] * state["log_price"]
        + w["category"][cat]
    )
    age = np.asarray(t, float)[:, None] - state["publish_day"][None, :]
    fresh = np.where(age >= 0, np.exp(-np.clip(age, 0, None) / FRESH_DAYS), 0.0)
    mobile = (np.asarray(device) == 1).astype(float)[:, None]
    daypart = np.clip(np.asarray(hour, int) // 6, 0, N_DAYPARTS - 1)
    cat_daypart = w["cat_daypart"].reshape(n_cat, N_DAYPARTS)[cat][:, daypart].T  # (n, n_items)
    return base[None, :] + w["fresh"] * fresh + mobile * w["cat_mobile"][cat][None, :] + cat_daypart


def rank(state: dict, frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Top ``k`` candidates per request by score (ties: the lower item id first)."""
    n_items = len(state["category"])
    n = len(frame)
    t = frame["t"].to_numpy(float) if "t" in frame else np.full(n, state["last_t"])
    device = frame["device"].to_numpy() if "device" in frame else np.zeros(n, int)
    hour = frame["hour"].to_numpy() if "hour" in frame else np.full(n, 12)
    scores = item_matrix(state, t, device, hour)
    allowed = np.zeros((n, n_items), dtype=bool)
    for i, candidates in enumerate(frame["candidate_items"]):
        ids = np.asarray(candidates, dtype=np.int64)
        allowed[i, ids[(ids >= 0) & (ids < n_items)]] = True
    masked = np.where(allowed, scores, -np.inf)
    # stable sort on -score: equal scores keep item-id order
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(masked, order, axis=1)
    item_ids, out_scores = [], []
    for i in range(n):
        keep = np.isfinite(top[i])
        item_ids.append(order[i][keep].astype(np.int64).tolist())
        out_scores.append(top[i][keep].astype(float).tolist())
    return pd.DataFrame(
        {"request_id": frame["request_id"].astype(str).to_numpy(), "item_ids": item_ids, "scores": out_scores}
    )


def save_state(state: dict, path: str) -> None:
    """The serving state as plain arrays in an .npz (no pickle: loading it cannot run code)."""
    arrays = {f"weights.{k}": np.asarray(v) for k, v in state["weights"].items()}
    for key in (
        "n_categories",
        "category",
        "publish_day",
        "log_price",
        "pop_click",
        "pop_purchase",
        "last_t",
    ):
        arrays[key] = np.asarray(state[key])
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_state(path: str) -> dict:
    """The inverse of :func:`save_state`; ``allow_pickle=False`` refuses an object array."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    state = {"weights": {}}
    for key, value in arrays.items():
        value = value[()] if value.ndim == 0 else value  # scalars were stored as 0-d arrays
        if key.startswith("weights."):
            state["weights"][key.split(".", 1)[1]] = value
        else:
            state[key] = value
    return state


class SklearnRanker(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.state = load_state(context.artifacts["state"])

    # no type hints: MLflow would derive a schema from them; the signature is given at log time
    def predict(self, context, model_input, params=None):
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        k = int((params or {}).get("k", 10))
        return rank(self.state, frame, k)


mlflow.models.set_model(SklearnRanker())
