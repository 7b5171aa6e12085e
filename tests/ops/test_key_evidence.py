"""The promotion's parent run in MLflow carries the key effects, the verdicts and the outcome, so that
MLflow's run list can compare promotions: checked against a real SQLite-backed tracking store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from stagegate.events.store import EventStore
from stagegate.tracking import PromotionTracker, key_evidence, mlflow_key
from tests.ops.synthetic import POLICY, fake_promotion


def test_names_are_ones_mlflow_accepts() -> None:
    assert mlflow_key("canary", "revenue_per_user", "effect") == "canary.revenue_per_user.effect"
    assert mlflow_key("stagegate.verdict", "canary/monitor", "guardrail:error_rate") == (
        "stagegate.verdict.canary.monitor.guardrail.error_rate"
    )
    assert mlflow_key("offline", "relative:ndcg@10") == "offline.relative.ndcg_10"
    assert mlflow_key("canary", "sequential:ctr[cold_start]") == "canary.sequential.ctr_cold_start_"
    assert mlflow_key("..", "a//b", "<script>") == "a.b._script_"  # nothing a path normalisation changes
    assert len(mlflow_key("x" * 400)) == 250


def test_key_evidence_takes_each_gates_latest_look(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    metrics, tags = key_evidence(store.verdicts(fake_promotion(store)))
    # the sequential gate's last look is 0.01 with -0.03 to 0.05 (tests/ops/synthetic.py)
    assert metrics["canary.revenue_per_user.effect"] == pytest.approx(0.01)
    assert metrics["canary.revenue_per_user.effect_low"] == pytest.approx(-0.03)
    assert metrics["canary.revenue_per_user.effect_high"] == pytest.approx(0.05)
    assert metrics["canary.sequential.revenue_per_user.looks"] == 4
    assert metrics["canary.guardrail.error_rate.statistic"] == pytest.approx(0.001)
    assert "canary.guardrail.error_rate.ci_low" not in metrics  # not measured: not logged as NaN
    assert tags == {
        "stagegate.verdict.canary.sequential.revenue_per_user": "PASS",
        "stagegate.verdict.canary.guardrail.error_rate": "PASS",
    }


def test_two_effect_gates_on_one_metric_keep_their_own_names() -> None:
    frame = pd.DataFrame(
        [
            {"stage": "canary", "gate": g, "outcome": "PASS", "statistic": s, "ci_low": None, "ci_high": None}
            for g, s in (("sequential:ctr", 0.1), ("relative:ctr", 0.2), ("sequential:ctr", 0.3))
        ]
    )
    metrics, _ = key_evidence(frame)
    assert metrics["canary.sequential.ctr.statistic"] == pytest.approx(0.3)
    assert metrics["canary.relative.ctr.statistic"] == pytest.approx(0.2)
    assert metrics["canary.sequential.ctr.looks"] == 2
    assert not any(k.endswith(".effect") for k in metrics)


def test_the_parent_run_carries_effects_verdicts_and_outcome(tmp_path: Path) -> None:
    tracker = PromotionTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "recsys-ranker", tmp_path / "art")
    runs = {}
    for version, outcome in (("2", "promoted"), ("3", "rolled_back")):
        store = EventStore(f"sqlite:///{tmp_path / f'events-{version}.db'}")  # one open promotion per model
        pid = fake_promotion(store, version=version)
        run_id = tracker.start_promotion(
            model="recsys-ranker", version=version, promotion_id=pid, policy=POLICY, policy_path="p.yaml"
        )
        tracker.log_key_evidence(run_id, store.verdicts(pid))
        tracker.finish_promotion(run_id, outcome, "because")
        runs[outcome] = run_id

    run = tracker.client.get_run(runs["promoted"])
    assert run.data.metrics["canary.revenue_per_user.effect"] == pytest.approx(0.01)
    assert run.data.metrics["canary.revenue_per_user.effect_low"] == pytest.approx(-0.03)
    assert run.data.metrics["promoted"] == 1.0 and run.data.metrics["outcome.promoted"] == 1.0
    assert run.data.metrics["outcome.rolled_back"] == 0.0
    assert run.data.tags["stagegate.verdict.canary.sequential.revenue_per_user"] == "PASS"
    assert run.data.tags["stagegate.outcome"] == "promoted"
    # what the run list does: filter and order promotions by these columns
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string="metrics.promoted = 0 and "
        "tags.`stagegate.verdict.canary.guardrail.error_rate` = 'PASS'",
    )
    assert [r.info.run_id for r in found] == [runs["rolled_back"]]
    ordered = tracker.client.search_runs(
        [tracker.experiment_id], order_by=["metrics.`canary.revenue_per_user.effect` DESC"]
    )
    assert len(ordered) == 2


def test_a_reconciled_promotion_gets_the_same_key_evidence(tmp_path: Path) -> None:
    """A promotion whose process died is closed by reconcile: its parent run gets the verdicts too."""
    from types import SimpleNamespace

    from stagegate.reconcile import Reconciled, _finish_run

    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    tracker = PromotionTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "recsys-ranker", tmp_path / "art")
    pid = fake_promotion(store)
    run_id = tracker.start_promotion(
        model="recsys-ranker", version="2", promotion_id=pid, policy=POLICY, policy_path="p.yaml"
    )
    rt = SimpleNamespace(events=store, tracker=lambda model: tracker)
    row = {"id": pid, "model": "recsys-ranker", "mlflow_run_id": run_id}
    result = Reconciled(pid, "recsys-ranker", "2", "canary", "rolled_back", "owner died", ledger_closed=True)
    _finish_run(rt, row, result)
    run = tracker.client.get_run(run_id)
    assert run.data.metrics["canary.revenue_per_user.effect"] == pytest.approx(0.01)
    assert run.data.metrics["promoted"] == 0.0 and run.data.metrics["outcome.rolled_back"] == 1.0
    assert run.data.tags["stagegate.verdict.canary.guardrail.error_rate"] == "PASS"
    assert run.data.tags["stagegate.outcome"] == "rolled_back"
