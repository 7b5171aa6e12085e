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


def mlflow_key(*parts: str) -> str:
    """A metric or tag name MLflow accepts, from parts joined by dots (``canary``, ``revenue_per_user``).

    MLflow allows letters, digits, ``_ - . /`` and spaces (and ``:`` outside Windows), at most 250
    characters, and refuses a name that a path normalisation would change (``a//b``, ``./a``). Gate names
    hold ``:`` and ``@`` and stages ``/`` (``canary/monitor``): within a part, ``:`` and ``/`` become dots
    and anything else outside ``[0-9A-Za-z_-]`` an underscore, so names are the same on every platform
    and the run list can sort and compare them."""
    cleaned = []
    for part in parts:
        text = re.sub(r"[:/]", ".", str(part))
        text = re.sub(r"[^0-9A-Za-z_.\-]", "_", text)
        text = re.sub(r"\.{2,}", ".", text).strip(".")
        if text:
            cleaned.append(text)
    return ".".join(cleaned)[:250].rstrip(".") or "_"


#: Gate types whose statistic is the candidate's change against the champion (the others' is a level).
EFFECT_GATES = ("sequential", "relative")
OUTCOMES = ("promoted", "rolled_back", "rejected", "aborted")


def key_evidence(verdicts: pd.DataFrame) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics and tags that let MLflow's run list compare promotions, from the ledger's verdicts.

    Per stage and gate, from its latest look: for an effect gate (sequential, relative) named
    ``type:metric``, ``<stage>.<metric>.effect`` and its interval ``.effect_low`` / ``.effect_high`` (the
    unit the gate reports: a relative change as a fraction by default); for any other gate
    ``<stage>.<gate>.statistic`` (and ``.ci_low`` / ``.ci_high`` when measured); ``<stage>.<gate>.looks``.
    A stage's two effect gates on the same metric fall back to the gate's name, so no value overwrites
    another. Tags: ``stagegate.verdict.<stage>.<gate>`` = the outcome (PASS, FAIL, INCONCLUSIVE, ERROR).
    Names go through :func:`mlflow_key`."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if verdicts.empty:
        return metrics, tags
    last = verdicts.groupby(["stage", "gate"], sort=False).tail(1)
    looks = verdicts.groupby(["stage", "gate"], sort=False).size()

    def effect_metric(gate: str) -> str | None:
        kind, _, metric = gate.partition(":")
        return metric if kind in EFFECT_GATES and metric else None

    named = [(row.stage, effect_metric(str(row.gate))) for row in last.itertuples()]
    taken = pd.Series([n for n in named if n[1] is not None]).value_counts()
    for row in last.itertuples():
        stage, gate = str(row.stage), str(row.gate)
        metric = effect_metric(gate)
        if metric is not None and taken.get((stage, metric), 0) == 1:
            names = {"statistic": (stage, metric, "effect"), "ci_low": (stage, metric, "effect_low")}
            names["ci_high"] = (stage, metric, "effect_high")
        else:
            names = {col: (stage, gate, col) for col in ("statistic", "ci_low", "ci_high")}
        for col, key in names.items():
            value = getattr(row, col)
            if value is not None and pd.notna(value) and math.isfinite(float(value)):
                metrics[mlflow_key(*key)] = float(value)
        metrics[mlflow_key(stage, gate, "looks")] = float(looks[(row.stage, row.gate)])
        tags[mlflow_key("stagegate.verdict", stage, gate)] = str(row.outcome)
    return metrics, tags


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

    def log_key_evidence(self, run_id: str, verdicts: pd.DataFrame) -> None:
        """The verdicts' key effects (metrics) and outcomes (tags) on the promotion's parent run
        (:func:`key_evidence`), so promotions can be compared in MLflow's run list, not only opened."""
        from mlflow.entities import Metric, RunTag

        metrics, tags = key_evidence(verdicts)
        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, 0) for key, value in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow's limits per log_batch call
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])
        runtags = [RunTag(key, value) for key, value in tags.items()]
        for i in range(0, len(runtags), 100):
            self.client.log_batch(run_id, tags=runtags[i : i + 100])

    def finish_promotion(self, run_id: str, outcome: str, reason: str) -> None:
        """The outcome as a tag (``stagegate.outcome``) and as numbers MLflow can sort and average:
        ``promoted`` 1 or 0 and one ``outcome.<name>`` indicator per known outcome."""
        numbers = {"promoted": 1.0 if outcome == "promoted" else 0.0}
        numbers |= {f"outcome.{name}": 1.0 if outcome == name else 0.0 for name in OUTCOMES}
        if outcome not in OUTCOMES:
            numbers[mlflow_key("outcome", outcome)] = 1.0
        self.log_metrics(run_id, numbers)
        self.client.set_tag(run_id, "stagegate.outcome", outcome)
        self.client.set_tag(run_id, "stagegate.reason", reason[:5000])
        self.client.set_terminated(run_id, "FINISHED" if outcome == "promoted" else "FAILED")
