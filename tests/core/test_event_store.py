"""The event store and promotion ledger, on a SQLite file and on the machine's real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stagegate.events.metrics import arm_samples
from stagegate.events.store import EventStore
from stagegate.logs import RequestContext, ServedBatch
from stagegate.verdict import Outcome, Verdict


def fake_batch(n: int = 200, k: int = 10, n_items: int = 50, seed: int = 0, t0: float = 0.0) -> ServedBatch:
    rng = np.random.default_rng(seed)
    ctx = RequestContext(
        request_id=np.arange(n, dtype=np.int64) + int(t0 * 1e6),
        t=t0 + np.sort(rng.random(n)) / 24,
        user_id=rng.integers(0, n // 4, n),
        hour=rng.integers(0, 24, n).astype(np.int8),
        device=rng.integers(0, 2, n).astype(np.int8),
        user_segment=rng.integers(0, 3, n).astype(np.int8),
        recent_items=np.full((n, 5), -1, dtype=np.int32),
        in_stock=rng.random(n_items) > 0.1,
        item_age_days=rng.uniform(0, 30, n_items),
    )
    clicks = rng.random((n, k)) < 0.05
    purchases = clicks & (rng.random((n, k)) < 0.2)
    return ServedBatch(
        context=ctx,
        arm=(ctx.user_id % 5 == 0).astype(np.int8),
        items=np.argsort(rng.random((n, n_items)), axis=1)[:, :k].astype(np.int32),
        pscore=rng.uniform(0.1, 1.0, (n, k)),
        clicks=clicks,
        purchases=purchases,
        revenue=(purchases * 20.0).sum(axis=1),
        latency_ms=rng.lognormal(3.5, 0.3, n),
        error=rng.random(n) < 0.01,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> EventStore:
    if request.param == "sqlite":
        return EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    return EventStore(request.getfixturevalue("postgres_url"))


def test_events_round_trip_and_per_user_aggregates(store: EventStore) -> None:
    batch = fake_batch()
    pid = store.open_promotion(
        model="m", version="2", policy_path="p.yaml", policy={"model": "m"}, champion_version="1"
    )
    assert store.append_batch(batch, promotion_id=pid, stage="canary", step=1, versions=("1", "2")) == batch.n
    frame = store.load_events(pid, "canary")
    assert len(frame) == batch.n
    assert set(frame["model_version"]) == {"1", "2"}
    arms, mixed = arm_samples(frame)
    assert mixed == 0
    total_revenue = sum(a.metrics["revenue"].sum() for a in arms.values())
    assert total_revenue == pytest.approx(batch.revenue.sum())
    assert sum(a.metrics["requests"].sum() for a in arms.values()) == batch.n
    assert arms["candidate"].n_users == len(np.unique(batch.context.user_id[batch.arm == 1]))


def test_ledger_records_transitions_and_verdicts_and_refuses_after_the_end(store: EventStore) -> None:
    pid = store.open_promotion(model="m", version="2", policy_path="p.yaml", policy={}, champion_version=None)
    store.transition(pid, "offline", "entering offline", stage="offline")
    store.record_verdicts(
        pid, "offline", 0, 1, [(Verdict("g", Outcome.FAIL, "too low", statistic=float("nan")), "rollback")]
    )
    store.transition(pid, "rejected_pending", "offline: too low")
    store.transition(pid, "rejected", "offline: too low")
    states = [t["to_state"] for t in store.transitions(pid)]
    assert states == ["registered", "offline", "rejected_pending", "rejected"]
    verdicts = store.verdicts(pid)
    assert verdicts.loc[0, "outcome"] == "FAIL" and pd.isna(verdicts.loc[0, "statistic"])
    assert store.promotion(pid)["state"] == "rejected"
    assert store.promotions("m", open_only=True) == []
    with pytest.raises(RuntimeError, match="already ended"):
        store.transition(pid, "canary", "zombie")
