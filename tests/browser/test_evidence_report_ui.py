"""The evidence report as a release manager opens it: built from a realistic synthetic ledger (two canary
steps, two sequential gates, one of them with the very wide first interval an always-valid confidence
sequence starts with), opened in headless Chromium from its single HTML file. Checks that it rendered
(headings, tables, every figure decoded with a non-zero natural width, markup in a gate message shown as
text and never run) and keeps screenshots of the page and of each figure in
``$STAGEGATE_TEST_OUTPUT/evidence-report/`` (default ``test-output/evidence-report/``)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
import pytest

from stagegate.events.store import EventStore
from stagegate.evidence_report import build_report
from stagegate.verdict import Outcome, Verdict
from tests.browser.chromium import chromium
from tests.ops.servers import OUTPUT, RunningStack
from tests.ops.synthetic import served, write_events

SHOTS = OUTPUT / "evidence-report"
HOSTILE = "<script>alert('gate')</script><img src=x onerror=alert('img')>"

POLICY = {
    "model": "recsys-ranker",
    "stages": {
        "shadow": {"min_requests": 500, "gates": [{"type": "threshold", "metric": "out_of_stock_share"}]},
        "canary": {
            "steps": [{"weight": 20, "min_users": 200}, {"weight": 50, "min_users": 500}],
            "gates": [
                {"type": "sequential", "metric": "revenue_per_user", "method": "always_valid", "mde": 0.10},
                {"type": "sequential", "metric": "purchases_per_user", "method": "always_valid", "mde": 0.10},
                {"type": "guardrail", "metric": "error_rate", "max": 0.01},
            ],
        },
        "rollout": {"bake": "12h"},
    },
}


def realistic_promotion(store: EventStore, version: str = "7") -> str:
    """Shadow, a 20% and a 50% canary step of four looks each, rollout; confidence sequences that shrink
    like 1/sqrt(users), the first purchases look at +-450% (a handful of buyers)."""
    pid = store.open_promotion(
        model="recsys-ranker",
        version="7",
        policy_path="policies/demo.yaml",
        policy=POLICY,
        champion_version=str(int(version) - 1),
    )
    write_events(store, served(pid, "shadow", 0, n=600, weight=0, t0=30.0, hours=8, seed=1, shadow=True))
    write_events(store, served(pid, "canary", 1, n=1200, weight=0.2, t0=30.4, hours=48, seed=2))
    write_events(store, served(pid, "canary", 2, n=2000, weight=0.5, t0=32.4, hours=48, seed=3))
    write_events(store, served(pid, "rollout", 0, n=800, weight=1.0, t0=34.4, hours=12, seed=4))
    store.record_verdicts(
        pid,
        "shadow",
        0,
        1,
        [(Verdict("threshold:out_of_stock_share", Outcome.PASS, "ok", statistic=0.02), None)],
    )
    rng = np.random.default_rng(5)
    for look in range(1, 9):
        step = 1 if look <= 4 else 2
        users = 150 * look if step == 1 else 600 * (look - 4)
        entries = []
        for metric, scale, first in (("revenue_per_user", 0.9, None), ("purchases_per_user", 1.1, 4.5)):
            est = 0.02 + rng.normal(0, 0.2 / np.sqrt(users / 100))
            half = first if (first and look == 1) else scale / np.sqrt(users / 60)
            outcome = Outcome.PASS if est - half > -0.10 else Outcome.INCONCLUSIVE
            message = f"{metric} change {est:+.2%} (look {look})"
            if metric == "purchases_per_user" and look == 8:
                message += f" {HOSTILE}"
            entries.append(
                (
                    Verdict(
                        f"sequential:{metric}",
                        outcome,
                        message,
                        metric=metric,
                        statistic=est,
                        threshold=0.0,
                        n=2 * users,
                        ci_low=est - half,
                        ci_high=est + half,
                    ),
                    None,
                )
            )
        entries.append(
            (
                Verdict(
                    "guardrail:error_rate", Outcome.PASS, "within 1%", metric="error_rate", statistic=0.002
                ),
                None,
            )
        )
        store.record_verdicts(pid, "canary", step, look, entries)
    return pid


def test_the_report_renders_in_chromium_and_is_kept_as_screenshots(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    report = build_report(store, realistic_promotion(store), title="Evidence final: recsys-ranker v7")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in [*SHOTS.glob("report-*.png"), *SHOTS.glob("figure-*.png")]:
        old.unlink()
    page_file = SHOTS / "report.html"
    page_file.write_text(report.html, encoding="utf-8")
    print(f"evidence report screenshots: {SHOTS}")

    with chromium(tmp_path / "profile", width=1300, height=900) as context:
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(page_file.as_uri(), wait_until="load")
        assert page.title() == "Evidence final: recsys-ranker v7"
        assert page.locator("h1").inner_text() == "Evidence final: recsys-ranker v7"
        headings = page.locator("h2").all_inner_texts()
        assert "Sequential gates over time" in headings and "Per-segment metrics per ramp step" in headings
        assert any(h.startswith("Pooled over ramp steps") for h in headings)
        assert page.locator("pre").count() == 0
        # verdicts (shadow, canary, rollout has none), ramp summary, 3 step tables, pooled: all real tables
        assert page.locator("table").count() >= 7
        assert page.locator("table th", has_text="revenue/user change").count() >= 3
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(images) == len(report.figures) == 4, images
        for alt, complete, width, height in images:
            assert complete and width > 300 and height > 150, (alt, width, height)
        # markup in a gate's message is text on the page, and nothing ran
        assert page.get_by_text(HOSTILE, exact=False).count() == 1
        assert page.locator("td img").count() == 0 and dialogs == []

        page.screenshot(path=str(SHOTS / "report-top.png"))
        page.screenshot(path=str(SHOTS / "report-full.png"), full_page=True)
        for i, image in enumerate(page.locator("img").all()):
            name = re.sub(r"[^a-z0-9]+", "-", (image.get_attribute("alt") or f"figure-{i}").lower()).strip(
                "-"
            )
            image.scroll_into_view_if_needed()
            image.screenshot(path=str(SHOTS / f"figure-{i + 1}-{name}.png"))
        page.locator("h3", has_text="canary step 2").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "report-segments-step-2.png"))
    shots = sorted(p.name for p in [*SHOTS.glob("report-*.png"), *SHOTS.glob("figure-*.png")])
    assert len(shots) == 3 + len(report.figures), shots
    assert all((SHOTS / name).stat().st_size > 10_000 for name in shots)


@pytest.mark.slow
def test_the_mlflow_parent_run_shows_the_key_evidence(stack: RunningStack, tmp_path: Path) -> None:
    """The session stack's MLflow server and UI: two promotions of one model logged as the flow does
    (parent run, key evidence, outcome, final report); the parent run's page lists the effect metrics
    (it used to say "No metrics recorded") and the run list can filter on them. Screenshots kept."""
    from stagegate.evidence_report import log_report
    from stagegate.tracking import PromotionTracker

    model = f"evidence-ui-{uuid.uuid4().hex[:6]}"
    tracker = PromotionTracker(stack.mlflow, model)
    runs: dict[str, str] = {}
    for version, outcome in (("7", "promoted"), ("8", "rolled_back")):
        store = EventStore(f"sqlite:///{tmp_path / f'events-{version}.db'}")
        pid = realistic_promotion(store, version=version)
        run_id = tracker.start_promotion(
            model=model, version=version, promotion_id=pid, policy=POLICY, policy_path="policies/demo.yaml"
        )
        tracker.log_key_evidence(run_id, store.verdicts(pid))
        log_report(build_report(store, pid), tracker.client, run_id, "evidence/final")
        tracker.finish_promotion(run_id, outcome, "test")
        runs[outcome] = run_id
    found = tracker.client.search_runs([tracker.experiment_id], filter_string="metrics.promoted = 1")
    assert [r.info.run_id for r in found] == [runs["promoted"]]

    SHOTS.mkdir(parents=True, exist_ok=True)
    base = stack.mlflow.rstrip("/")
    with chromium(tmp_path / "profile", width=1500, height=1000) as context:
        page = context.new_page()
        page.goto(f"{base}/#/experiments/{tracker.experiment_id}/runs/{runs['promoted']}")
        page.get_by_text("canary.revenue_per_user.effect", exact=True).first.wait_for(timeout=30_000)
        assert page.get_by_text("No metrics recorded").count() == 0
        metrics_heading = page.get_by_text(re.compile(r"^Metrics \(\d+\)$")).first
        metrics_heading.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "mlflow-parent-run.png"))
        page.get_by_text("canary.revenue_per_user.effect", exact=True).first.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "mlflow-parent-run-metrics.png"))
        # the run list, filtered on the outcome metric: the comparison the metrics are there for
        page.goto(f"{base}/#/experiments/{tracker.experiment_id}/runs")
        try:
            page.get_by_role("link", name=f"promote {model} v8").first.wait_for(timeout=30_000)
            search = page.get_by_placeholder(re.compile("metrics")).first
            search.fill("metrics.promoted = 1")
            search.press("Enter")
            page.get_by_text(re.compile(r"^1 matching run")).first.wait_for(timeout=30_000)
            assert page.get_by_role("link", name=f"promote {model} v7").count() >= 1
        finally:
            page.wait_for_timeout(1000)  # the run table fills in after its first paint
            page.screenshot(path=str(SHOTS / "mlflow-run-list.png"))
    print(f"MLflow screenshots: {sorted(str(p) for p in SHOTS.glob('mlflow-*.png'))}")
