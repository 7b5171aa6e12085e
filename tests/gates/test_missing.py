"""Missing values are never zero (gates/missing.py): a NULL outcome makes that user's value NaN in the
metric source, and every gate counts such users: ERROR by default, left out and reported while under the
gate's ``max_missing_share``. The defect behind it: NULL revenue in half the canary's events was summed as
zero by pandas, and the candidate was promoted with "every stage passed"."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from gates.missing import drop_missing
from stagegate.events.metrics import arm_samples
from stagegate.events.store import EventStore
from stagegate.evidence import CANDIDATE, CHAMPION, Evidence
from stagegate.plugins import build_gate
from stagegate.verdict import Outcome
from tests.core.test_event_store import fake_batch
from tests.gates.conformance import make_evidence
from tests.gates.test_conformance import EXAMPLES


def _with_nan(evidence: Evidence, arm: str, metric: str, share: float) -> tuple[Evidence, np.ndarray]:
    """``evidence`` with ``metric`` NaN for the first ``share`` of ``arm``'s users, and that mask."""
    sample = evidence.arms[arm]
    values = np.array(sample.metrics[metric], dtype=float)
    mask = np.arange(values.size) < int(share * values.size)
    values[mask] = np.nan
    changed = dataclasses.replace(sample, metrics={**sample.metrics, metric: values})
    return dataclasses.replace(evidence, arms={**evidence.arms, arm: changed}), mask


PER_USER = {
    name: spec for name, spec in EXAMPLES.items() if spec.get("metric") not in (None, "latency_ms")
}  # gates that read per-user arrays (latency reads request series; srm reads user counts)


@pytest.mark.parametrize("type_name", sorted(PER_USER))
def test_any_missing_value_is_an_error_by_default(type_name: str) -> None:
    spec = PER_USER[type_name]
    metric = {"error_rate": "errors"}.get(spec["metric"], spec["metric"])
    evidence, mask = _with_nan(make_evidence(), CANDIDATE, metric, 0.01)
    verdict = build_gate(spec).evaluate(evidence)
    assert verdict.outcome is Outcome.ERROR, verdict
    assert f"{int(mask.sum())} of {mask.size} candidate users have no value" in verdict.message, (
        verdict.message
    )


@pytest.mark.parametrize("type_name", sorted(PER_USER))
def test_under_the_limit_missing_users_are_left_out_and_reported(type_name: str) -> None:
    spec = {**PER_USER[type_name], "max_missing_share": 0.05}
    metric = {"error_rate": "errors"}.get(spec["metric"], spec["metric"])
    evidence, mask = _with_nan(make_evidence(), CANDIDATE, metric, 0.04)
    gate = build_gate(spec)
    verdict = gate.evaluate(evidence)
    # the same verdict as on the evidence without those users, plus what was left out
    cand = evidence.arms[CANDIDATE]
    kept = dataclasses.replace(
        cand,
        user_ids=cand.user_ids[~mask],
        metrics={k: np.asarray(v)[~mask] for k, v in cand.metrics.items()},
        segments={k: np.asarray(v)[~mask] for k, v in cand.segments.items()},
        pre_period={k: np.asarray(v)[~mask] for k, v in cand.pre_period.items()},
    )
    expected = gate.evaluate(dataclasses.replace(evidence, arms={**evidence.arms, CANDIDATE: kept}))
    assert verdict.outcome is expected.outcome is not Outcome.ERROR, verdict
    assert verdict.statistic == expected.statistic and verdict.n == expected.n
    assert verdict.details["missing_users"] == {CHAMPION: 0, CANDIDATE: int(mask.sum())}
    assert f"left out: {int(mask.sum())} of {mask.size} candidate" in verdict.message
    # just above the limit: ERROR naming the share and the limit
    over, _ = _with_nan(make_evidence(), CANDIDATE, metric, 0.06)
    refused = gate.evaluate(over)
    assert refused.outcome is Outcome.ERROR and "max_missing_share of 5.0%" in refused.message


def test_paired_arms_lose_a_user_missing_in_either() -> None:
    evidence = dataclasses.replace(make_evidence(n=400, share=0.5), paired=True)
    champ = evidence.arms[CHAMPION]
    values = np.array(champ.metrics["revenue_per_user"])
    values[[3, 7]] = np.nan
    evidence = dataclasses.replace(
        evidence,
        arms={
            **evidence.arms,
            CHAMPION: dataclasses.replace(champ, metrics={**champ.metrics, "revenue_per_user": values}),
        },
    )
    cleaned, report = drop_missing(evidence, "revenue_per_user", limit=0.1)
    assert report is not None and report.missing == {CHAMPION: 2, CANDIDATE: 2}
    assert {a.n_users for a in cleaned.arms.values()} == {198}
    assert not np.isnan(cleaned.arms[CHAMPION].metrics["revenue_per_user"]).any()


def test_infinite_values_are_malformed_not_missing() -> None:
    evidence = make_evidence()
    cand = evidence.arms[CANDIDATE]
    values = np.array(cand.metrics["revenue_per_user"])
    values[0] = np.inf
    evidence = dataclasses.replace(
        evidence,
        arms={
            **evidence.arms,
            CANDIDATE: dataclasses.replace(cand, metrics={**cand.metrics, "revenue_per_user": values}),
        },
    )
    spec = {**EXAMPLES["sequential"], "max_missing_share": 0.5}
    verdict = build_gate(spec).evaluate(evidence)
    assert verdict.outcome is Outcome.ERROR and "NaN or infinite" in verdict.message


def test_null_revenue_in_half_the_canary_events_is_never_summed_as_zero(tmp_path: Path) -> None:
    """The defect as it happened, through the real event store: half the candidate's events lose their
    revenue (NULL in SQL). The per-user sums are NaN for those users, not smaller numbers, and the canary's
    revenue gate says ERROR instead of judging a candidate whose revenue looks lower or equal."""
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    pid = store.open_promotion(
        model="m", version="2", policy_path="p.yaml", policy={"model": "m"}, champion_version="1"
    )
    batch = fake_batch(n=2000, n_items=60, seed=3)
    store.append_batch(batch, promotion_id=pid, stage="canary", step=1, versions=("1", "2"))
    clean_arms, _ = arm_samples(store.load_events(pid, "canary"))
    with store.engine.begin() as conn:
        hit = conn.execute(
            text(
                "UPDATE events SET revenue = NULL WHERE promotion_id = :p AND arm = 1 AND request_id % 2 = 0"
            ),
            {"p": pid},
        ).rowcount
    assert hit > 0
    frame = store.load_events(pid, "canary")
    arms, _ = arm_samples(frame)
    cand = arms[CANDIDATE].metrics["revenue_per_user"]
    nulls = frame[frame["arm"] == 1].groupby("user_id")["revenue"].apply(lambda s: s.isna().any())
    assert np.isnan(cand).sum() == int(nulls.sum()) > 0
    # users with every outcome recorded keep their sums; the champion is untouched
    ok = ~np.isnan(cand)
    assert np.array_equal(cand[ok], clean_arms[CANDIDATE].metrics["revenue_per_user"][ok])
    assert np.array_equal(
        arms[CHAMPION].metrics["revenue_per_user"], clean_arms[CHAMPION].metrics["revenue_per_user"]
    )
    assert np.array_equal(arms[CANDIDATE].metrics["clicks"], clean_arms[CANDIDATE].metrics["clicks"])
    evidence = Evidence(stage="canary", arms=arms, allocation={CHAMPION: 0.8, CANDIDATE: 0.2})
    verdict = build_gate(EXAMPLES["sequential"]).evaluate(evidence)
    assert verdict.outcome is Outcome.ERROR and "have no value for revenue_per_user" in verdict.message
