"""A plain-Python ranker to the ranking contract, logged as an MLflow "model from code" for the router's
tests. Its behaviour comes from the logged ``model_config``: ``mode`` is ``low`` (lowest item id first) or
``high`` (highest first); with ``hooks`` on, a request whose id starts with ``fail-`` makes predict raise
and one starting with ``slow-`` is answered after ``delay`` seconds (a failing or slow candidate)."""

from __future__ import annotations

import time

import mlflow
import pandas as pd


class TestRanker(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        config = context.model_config or {}
        self.mode = config.get("mode", "low")
        self.hooks = bool(config.get("hooks", False))
        self.delay = float(config.get("delay", 0.0))

    def predict(self, context, model_input, params=None):
        if self.hooks:
            ids = [str(r) for r in model_input["request_id"]]
            if any(r.startswith("fail-") for r in ids):
                raise RuntimeError("this candidate fails on fail- requests")
            if any(r.startswith("slow-") for r in ids):
                time.sleep(self.delay)
        k = int((params or {}).get("k", 10))
        ids, scores = [], []
        for candidates in model_input["candidate_items"]:
            ranked = sorted({int(i) for i in candidates}, reverse=self.mode != "low")[:k]
            ids.append(ranked)
            # non-increasing scores, best first
            scores.append([float(len(ranked) - j) for j in range(len(ranked))])
        return pd.DataFrame(
            {"request_id": model_input["request_id"].astype(str), "item_ids": ids, "scores": scores}
        )


mlflow.models.set_model(TestRanker())
