"""MLflow bookkeeping for a promotion: one parent run, one nested run per stage.

Each stage run holds the stage's metrics (gate statistics per look), its verdict table, and any evidence
artifacts; the parent run holds the policy used and the final outcome. The client API with explicit run
ids is used (not the fluent active-run API) because Prefect may run stage code in worker threads.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stagegate.decision import Judged


def _metric_key(name: str) -> str:
    # MLflow metric names allow alphanumerics, _ - . / and spaces; gate names contain ':' and '@'.
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", name)


class PromotionTracker:
    def __init__(self, tracking_uri: str, model: str, artifact_root: Path | None = None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        name = f"stagegate/{model}"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
        else:
            # A tracking server decides where artifacts go (e.g. S3); only a local store needs a folder here.
            local = not tracking_uri.startswith(("http://", "https://"))
            location = (artifact_root / "promotions").as_uri() if artifact_root and local else None
            self.experiment_id = self.client.create_experiment(name, artifact_location=location)

    def start_promotion(
        self, *, model: str, version: str, promotion_id: str, policy: Mapping[str, Any], policy_path: str
    ) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"promote {model} v{version}",
            tags={
                "stagegate.promotion_id": promotion_id,
                "stagegate.model": model,
                "stagegate.version": version,
            },
        )
        run_id = run.info.run_id
        self.client.log_dict(run_id, dict(policy), "policy.json")
        self.client.log_param(run_id, "policy_path", policy_path)
        self.client.log_param(run_id, "version", version)
        return run_id

    def start_stage(self, parent_run_id: str, stage: str) -> str:
        parent = self.client.get_run(parent_run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=stage,
            tags={
                "mlflow.parentRunId": parent_run_id,
                "stagegate.stage": stage,
                "stagegate.promotion_id": parent.data.tags.get("stagegate.promotion_id", ""),
            },
        )
        return run.info.run_id

    def log_look(self, run_id: str, judged: Sequence[Judged], step: int) -> None:
        self.log_metrics(run_id, {item.verdict.gate: item.verdict.statistic for item in judged}, step=step)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], step: int = 0) -> None:
        """Finite values only, in one batch (one store write, not one per metric)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(_metric_key(key), float(value), now, step)
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def finish_stage(self, run_id: str, verdict_rows: pd.DataFrame, decision: str, reason: str) -> None:
        if not verdict_rows.empty:
            self.client.log_table(run_id, data=verdict_rows, artifact_file="verdicts.json")
        self.client.set_tag(run_id, "stagegate.decision", decision)
        self.client.set_tag(run_id, "stagegate.reason", reason[:5000])
        self.client.set_terminated(run_id, "FINISHED" if decision == "advance" else "FAILED")

    def log_json(self, run_id: str, data: Any, path: str) -> None:
        self.client.log_text(run_id, json.dumps(data, indent=2, default=str), path)

    def finish_promotion(self, run_id: str, outcome: str, reason: str) -> None:
        self.client.set_tag(run_id, "stagegate.outcome", outcome)
        self.client.set_tag(run_id, "stagegate.reason", reason[:5000])
        self.client.set_terminated(run_id, "FINISHED" if outcome == "promoted" else "FAILED")
