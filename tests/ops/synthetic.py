"""A synthetic promotion in the ledger: served requests per stage and gate verdicts per look.

Rows are written straight into the event store's tables, so these tests need no world and no model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import insert

from stagegate.events.store import EventStore, events
from stagegate.verdict import Outcome, Verdict

POLICY = {
    "model": "recsys-ranker",
    "stages": {
        "canary": {
            "steps": [{"weight": 5}, {"weight": 50}],
            "gates": [
                {"type": "sequential", "metric": "revenue_per_user", "mde": 0.05, "harm_margin": 0.0},
                {"type": "guardrail", "metric": "error_rate", "max": 0.01, "on_fail": "rollback"},
            ],
        },
        "rollout": {"bake": "0s"},
    },
}


def served(
    promotion_id: str,
    stage: str,
    step: int,
    *,
    n: int,
    weight: float,
    t0: float,
    hours: float,
    seed: int,
    candidate_error: float = 0.0,
    shadow: bool = False,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 5000, n)
    arm = ((users * 2654435761) % 1000 < weight * 1000).astype(int)
    clicks = rng.poisson(0.3, n)
    error = np.where(arm == 1, rng.random(n) < candidate_error, rng.random(n) < 1e-4)
    frame = pd.DataFrame(
        {
            "promotion_id": promotion_id,
            "stage": stage,
            "step": step,
            "request_id": np.arange(n),
            "t": t0 + np.sort(rng.random(n)) * hours / 24.0,
            "user_id": users,
            "user_segment": users % 3,
            "device": users % 2,
            "hour": rng.integers(0, 24, n),
            "arm": arm,
            "model_version": np.where(arm == 1, "2", "1"),
            "latency_ms": rng.gamma(4.0, 10.0, n),
            "error": error,
            "items": "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]",
            "n_clicks": clicks,
            "n_purchases": rng.binomial(clicks, 0.1),
            "revenue": rng.binomial(clicks, 0.1) * rng.gamma(2.0, 20.0, n),
            "n_out_of_stock": rng.binomial(10, 0.01, n),
            "min_pscore": 0.1,
        }
    )
    if shadow:
        frame["shadow_items"] = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
        frame["shadow_n_out_of_stock"] = rng.binomial(10, 0.01, n)
        frame["arm"] = 0
    return frame


def write_events(store: EventStore, frame: pd.DataFrame) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(events), frame.to_dict(orient="records"))


def fake_promotion(store: EventStore, *, champion: str = "1", version: str = "2") -> str:
    """A promotion through shadow, two canary steps (four sequential looks) and rollout."""
    pid = store.open_promotion(
        model="recsys-ranker",
        version=version,
        policy_path="policies/x.yaml",
        policy=POLICY,
        champion_version=champion,
    )
    write_events(store, served(pid, "shadow", 0, n=800, weight=0, t0=30.0, hours=8, seed=1, shadow=True))
    write_events(store, served(pid, "canary", 1, n=800, weight=0.05, t0=30.4, hours=8, seed=2))
    write_events(store, served(pid, "canary", 2, n=1600, weight=0.5, t0=30.8, hours=8, seed=3))
    write_events(store, served(pid, "rollout", 0, n=800, weight=1.0, t0=31.2, hours=4, seed=4))
    for look, (est, half) in enumerate([(0.02, 0.2), (0.01, 0.12), (0.015, 0.07), (0.01, 0.04)], start=1):
        step = 1 if look <= 2 else 2
        outcome = Outcome.PASS if est - half > -0.05 else Outcome.INCONCLUSIVE
        seq = Verdict(
            "sequential:revenue_per_user",
            outcome,
            f"look {look}",
            metric="revenue_per_user",
            statistic=est,
            threshold=0.0,
            n=400 * look,
            ci_low=est - half,
            ci_high=est + half,
        )
        guard = Verdict(
            "guardrail:error_rate",
            Outcome.PASS,
            "error rate within 1%",
            metric="error_rate",
            statistic=0.001,
            threshold=0.01,
            n=200 * look,
        )
        store.record_verdicts(pid, "canary", step, look, [(seq, None), (guard, None)])
    return pid
