"""The evidence report: verdict tables per stage, sequential plot, traffic ramp, per-segment metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagegate.events.store import EventStore
from stagegate.evidence_report import build_report, log_report, segment_metrics, traffic_ramp
from tests.ops.synthetic import fake_promotion

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(f"sqlite:///{tmp_path / 'events.db'}")


def test_report_has_every_part(store: EventStore) -> None:
    pid = fake_promotion(store)
    report = build_report(store, pid, links={"MLflow run": "http://mlflow/run"})
    md = report.markdown
    assert "### canary" in md and "sequential:revenue_per_user" in md and "guardrail:error_rate" in md
    assert "[MLflow run](http://mlflow/run)" in md
    seq = [n for n in report.figures if n.startswith("sequential-canary")]
    assert seq, report.figures.keys()
    for name in [*seq, "traffic-ramp.png", "segments-revenue.png"]:
        assert report.figures[name].startswith(PNG) and len(report.figures[name]) > 5000, name
        assert f"]({name})" in md
    assert "data:image/png;base64," in report.html
    # the verdict table shows each gate's latest look and how many looks it took
    canary = report.tables["verdicts-canary"].set_index("gate")
    assert canary.loc["sequential:revenue_per_user", "looks"] == 4
    assert canary.loc["sequential:revenue_per_user", "statistic"] == pytest.approx(0.01)


def test_ramp_follows_the_split(store: EventStore) -> None:
    pid = fake_promotion(store)
    from stagegate.evidence_report import load_traffic_events

    ramp = traffic_ramp(load_traffic_events(store, pid))
    by_stage = ramp.groupby("stage")["candidate_share"].mean()
    assert by_stage["shadow"] == pytest.approx(1.0)  # every request mirrored
    assert by_stage["canary"] < 0.6 and by_stage["rollout"] == pytest.approx(1.0)
    first_canary = ramp[ramp["stage"] == "canary"].iloc[0]["candidate_share"]
    assert first_canary < 0.15  # the 5% step comes first
    assert list(ramp["hours"]) == sorted(ramp["hours"])


def test_segment_metrics_are_per_user_and_per_arm(store: EventStore) -> None:
    pid = fake_promotion(store)
    from stagegate.evidence_report import load_traffic_events

    frame = load_traffic_events(store, pid)
    seg = segment_metrics(frame)
    canary_all = seg[(seg["stage"] == "canary") & (seg["segment"] == "all users")].set_index("arm")
    rows = frame[(frame["stage"] == "canary") & (frame["arm"] == 1)]
    assert canary_all.loc["candidate", "users"] == rows["user_id"].nunique()
    assert canary_all.loc["candidate", "revenue/user"] == pytest.approx(
        rows["revenue"].sum() / rows["user_id"].nunique()
    )
    assert {"cold_start", "light", "heavy", "desktop", "mobile"} <= set(seg["segment"])
    assert "shadow" not in set(seg["stage"])  # nobody saw the candidate in shadow


def test_empty_promotion_says_so(store: EventStore) -> None:
    pid = store.open_promotion(
        model="m", version="2", policy_path="p", policy={"stages": {}}, champion_version=None
    )
    report = build_report(store, pid)
    assert "No gate has judged yet" in report.markdown and "No live traffic yet" in report.markdown
    assert report.figures == {}


def test_log_report_to_mlflow(store: EventStore, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    pid = fake_promotion(store)
    report = build_report(store, pid)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp).info.run_id
    paths = log_report(report, client, run, "evidence/before-rollout")
    listed = {a.path for a in client.list_artifacts(run, "evidence/before-rollout")}
    assert set(paths) == listed
    assert "evidence/before-rollout/traffic-ramp.png" in listed
    assert "evidence/before-rollout/report.html" in listed


def test_the_approval_form_table_shows_each_gates_effect_interval_and_n(store: EventStore) -> None:
    from stagegate.evidence_report import effect_table, latest_verdicts, markdown_table

    pid = fake_promotion(store)
    verdicts = store.verdicts(pid)
    latest = latest_verdicts(verdicts)["canary"]
    table = effect_table(latest)
    assert list(table.columns) == ["gate", "outcome", "effect", "interval", "n", "looks"]
    md = markdown_table(table)
    assert " to " in md  # at least one gate measured an interval
    last = verdicts[verdicts["stage"] == "canary"].groupby("gate").tail(1).set_index("gate")
    for gate, row in last.iterrows():
        line = next(x for x in md.splitlines() if x.startswith(f"| {gate} |"))
        if row["ci_low"] == row["ci_low"]:  # an interval was measured: the form shows it
            assert f"{row['ci_low']:.4g} to" in line, line
        if row["n"] == row["n"] and row["n"] is not None:
            assert f"| {float(row['n']):.4g} |" in line or f"| {int(row['n'])} |" in line, line
