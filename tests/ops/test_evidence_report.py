"""The evidence report: verdict tables per stage, sequential plot, traffic ramp, per-segment metrics."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
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


# -- the sequential figure -----------------------------------------------------------------------------------

SPIKY = [(0.3, 6.0, 1), (0.05, 0.4, 1), (0.02, 0.2, 1), (0.01, 0.12, 2), (0.015, 0.07, 2), (0.01, 0.04, 2)]


def spiky_history() -> pd.DataFrame:
    """Six looks of one sequential gate: a +-600% first interval (a few users), then the usual shrinking."""
    return pd.DataFrame(
        [
            {
                "stage": "canary",
                "gate": "sequential:revenue_per_user",
                "metric": "revenue_per_user",
                "statistic": est,
                "ci_low": est - half,
                "ci_high": est + half,
                "threshold": -0.01,
                "step": step,
                "look": look,
                "outcome": "PASS" if est - half > -0.05 else "INCONCLUSIVE",
            }
            for look, (est, half, step) in enumerate(SPIKY, start=1)
        ]
    )


def test_one_spike_does_not_flatten_the_other_looks() -> None:
    from stagegate.evidence_report import sequential_figure, sequential_plot

    history = spiky_history()
    spec = {"type": "sequential", "metric": "revenue_per_user", "mde": 0.05, "harm_margin": 0.01}
    fig = sequential_plot(history, "canary", "sequential:revenue_per_user", spec, {("canary", 1): 5.0})
    ax = fig.axes[0]
    ymin, ymax = ax.get_ylim()
    # in %: the range is set by the ordinary looks and the boundaries, not by the +-600% spike
    assert -60 < ymin < -5 and 5 < ymax < 60 and ymax - ymin < 120, (ymin, ymax)
    for est, half, _ in SPIKY[1:]:  # every later interval is drawn whole, and big enough to read
        assert ymin <= 100 * (est - half) and 100 * (est + half) <= ymax
    assert 100 * 2 * SPIKY[-1][1] / (ymax - ymin) > 0.05
    clipped = [line.get_gid() for line in ax.get_lines() if (line.get_gid() or "").startswith("clipped")]
    assert sorted(clipped) == ["clipped-bottom", "clipped-top"]  # only the spike, at both ends
    texts = [t.get_text() for t in ax.texts]
    assert "+630%" in texts and "-570%" in texts  # the clipped ends say how far they go
    levels = {
        round(float(line.get_ydata()[0]), 6) for line in ax.get_lines() if len(set(line.get_ydata())) == 1
    }
    assert {0.0, -5.0, -1.0} <= levels  # no change, non-inferiority margin, harm boundary
    assert ax.get_ylabel() == "relative change in revenue_per_user (%)"
    assert "step 1 (5%)" in [t.get_text() for t in ax.texts] and "step 2" in [t.get_text() for t in ax.texts]
    import matplotlib.pyplot as plt

    plt.close(fig)
    png = sequential_figure(history, "canary", "sequential:revenue_per_user", spec)
    assert png is not None and png.startswith(PNG)


def test_the_axis_range_is_robust_and_always_holds_the_latest_interval() -> None:
    from stagegate.evidence_report import sequential_axis_range

    low = np.array([-900.0, -8.0, -6.0, -20.0])
    high = np.array([900.0, 9.0, 7.0, 4.0])
    lo, hi = sequential_axis_range(low, high, np.array([0.0, 0.5, 0.5, -8.0]), [0.0, -5.0])
    assert -30 < lo < -20 and 9 < hi < 15  # the last look (-20 to 4) is in, the spike out
    # a history with no spike is shown whole
    lo, hi = sequential_axis_range(np.array([-30.0, -10.0]), np.array([30.0, 10.0]), np.zeros(2), [0.0])
    assert lo < -30 and hi > 30


# -- the HTML report -----------------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")


def test_the_html_report_is_rendered_html_with_inline_figures_and_escaped_text(store: EventStore) -> None:
    from stagegate.verdict import Outcome, Verdict

    pid = fake_promotion(store)
    hostile = Verdict(
        "threshold:<b>bold</b>",
        Outcome.FAIL,
        "<script>alert('gate')</script> | a pipe",
        metric="<img src=x onerror=alert(1)>",
        statistic=1.0,
        threshold=0.5,
    )
    store.record_verdicts(pid, "rollout", 0, 1, [(hostile, None)])
    report = build_report(store, pid, title="Evidence <i>x</i>", note="note with <script>bad()</script>")
    page = _Page()
    page.feed(report.html)
    assert "pre" not in page.tags and "script" not in page.tags and "b" not in page.tags
    assert page.tags.count("table") >= 5 and "h1" in page.tags and "h2" in page.tags and "h3" in page.tags
    assert len(page.images) == len(report.figures)
    for src in page.images:  # self-contained: every figure inline
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert "&lt;script&gt;alert(" in report.html and "&lt;script&gt;bad()" in report.html
    assert "threshold:&lt;b&gt;bold&lt;/b&gt;" in report.html
    assert "<title>Evidence &lt;i&gt;x&lt;/i&gt;</title>" in report.html
    assert "| a pipe" not in report.html  # a pipe in a cell does not break the table


# -- per-step segment tables --------------------------------------------------------------------------------


def _rows(stage: str, step: int, users: range, arm: int, revenue: float) -> list[dict]:
    return [
        {
            "stage": stage,
            "step": step,
            "t": 0.0,
            "user_id": u,
            "user_segment": u % 3,
            "device": u % 2,
            "arm": arm,
            "error": False,
            "n_clicks": 1,
            "n_purchases": 0,
            "revenue": revenue,
            "n_out_of_stock": 0,
            "shadow_n_out_of_stock": None,
        }
        for u in users
    ]


def simpson_traffic() -> pd.DataFrame:
    """Two canary steps where the candidate is +10% in each, but -41% pooled: step 1 (20%) spends more,
    most candidate users come from step 2, and users 2-4 move from champion to candidate at the change."""
    return pd.DataFrame(
        _rows("canary", 1, range(2, 10), 0, 10.0)
        + _rows("canary", 1, range(0, 2), 1, 11.0)
        + _rows("canary", 2, range(5, 10), 0, 2.0)
        + _rows("canary", 2, range(0, 5), 1, 2.2)
    )


def test_segment_tables_are_per_step_and_the_pooled_one_can_disagree() -> None:
    from stagegate.evidence_report import segment_metrics_by_step

    traffic = simpson_traffic()
    by_step = segment_metrics_by_step(traffic, {("canary", 1): 20.0, ("canary", 2): 50.0})
    everyone = by_step[by_step["segment"] == "all users"].set_index(["step", "arm"])
    assert everyone.loc[(1, "champion"), "users"] == 8 and everyone.loc[(1, "candidate"), "users"] == 2
    assert everyone.loc[(2, "champion"), "users"] == 5 and everyone.loc[(2, "candidate"), "users"] == 5
    assert everyone.loc[(1, "champion"), "revenue/user"] == pytest.approx(10.0)
    assert everyone.loc[(1, "candidate"), "revenue/user"] == pytest.approx(11.0)
    assert everyone.loc[(2, "candidate"), "revenue/user"] == pytest.approx(2.2)
    assert everyone.loc[(1, "candidate"), "revenue/user change"] == pytest.approx(0.10)
    assert everyone.loc[(2, "candidate"), "revenue/user change"] == pytest.approx(0.10)
    assert np.isnan(everyone.loc[(1, "champion"), "revenue/user change"])
    assert everyone.loc[(1, "candidate"), "weight"] == 20.0
    assert everyone.loc[(2, "candidate"), "candidate share"] == pytest.approx(0.5)
    assert everyone.loc[(1, "candidate"), "candidate share"] == pytest.approx(0.2)
    # a segment within a step: cold_start (user % 3 == 0) at step 2: champion 6 and 9, candidate 0 and 3
    cold = by_step[(by_step["segment"] == "cold_start") & (by_step["step"] == 2)].set_index("arm")
    assert cold.loc["champion", "users"] == 2 and cold.loc["candidate", "users"] == 2

    pooled = segment_metrics(traffic)
    pooled_all = pooled[pooled["segment"] == "all users"].set_index("arm")
    assert pooled_all.loc["champion", "users"] == 8  # users 5-9 are in both steps: counted once
    assert pooled_all.loc["champion", "revenue/user"] == pytest.approx((8 * 10 + 5 * 2) / 8)
    assert pooled_all.loc["candidate", "revenue/user"] == pytest.approx((2 * 11 + 5 * 2.2) / 5)
    assert pooled_all.loc["candidate", "revenue/user"] < pooled_all.loc["champion", "revenue/user"]


def test_the_report_shows_each_step_and_labels_the_pooled_table(store: EventStore) -> None:
    pid = fake_promotion(store)
    report = build_report(store, pid)
    md = report.markdown
    assert "### canary step 1" in md and "### canary step 2" in md and "### rollout bake" in md
    assert "5% of users planned for the candidate" in md and "50% of users planned" in md
    assert "Pooled over ramp steps of unequal weight" in md and "can disagree with the" in md
    assert md.index("### canary step 2") < md.index("Pooled over ramp steps")
    steps = report.tables["segments"]
    assert set(zip(steps["stage"], steps["step"], strict=True)) == {
        ("canary", 1),
        ("canary", 2),
        ("rollout", 0),
    }
    assert set(report.tables["segments-pooled"]["stage"]) == {"canary"}  # rollout has one step: no pooling
