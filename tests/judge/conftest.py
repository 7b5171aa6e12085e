"""A real event store filled with per-user events whose truth the test sets, and judges over it.

Each simulated day ``d`` brings ``users_per_day`` new users, split between champion (arm 0) and candidate
(arm 1) by the canary weight; each makes a few requests that day, each request buying with probability
``purchase_p`` (times ``lift`` on the candidate) for an exponential amount. ``lift < 1`` is a harmful
candidate, ``lift > 1`` a better one. Timestamps are simulated days (the events adapter's ``t``), so the
judge's clock is ``SIM_EPOCH + days``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stagegate.judge.app import create_app
from stagegate.judge.config import load_setup
from stagegate.judge.looks import Judge
from stagegate.judge.state import JudgeState
from stagegate.ports import SIM_EPOCH

#: The canary stage the tests judge: any_harm, an always-valid revenue gate, SRM and an error guardrail.
POLICY = {
    "model": "judge-test",
    "stages": {
        "canary": {
            "steps": [{"weight": 50, "min_users": 100}],
            "decision": {"rule": "any_harm"},
            "gates": [
                {"type": "srm", "p_value": 0.001, "min_users": 50},
                {
                    "type": "sequential",
                    "metric": "revenue_per_user",
                    "method": "always_valid",
                    "mde": 0.10,
                    "min_users": 50,
                    "consecutive_error_limit": 1,
                },
                {"type": "guardrail", "metric": "error_rate", "max": 0.05},
            ],
        }
    },
}


@dataclass
class FakeClock:
    """The judge's clock in simulated days (the test moves it)."""

    days: float = 0.0

    def now(self) -> datetime:
        return SIM_EPOCH + timedelta(days=self.days)


def day_events(
    promotion: str,
    day: int,
    *,
    lift: float,
    users_per_day: int = 300,
    weight: float = 0.5,
    purchase_p: float = 0.3,
    seed: int = 0,
    stage: str = "canary",
    step: int = 0,
) -> pd.DataFrame:
    """The event rows of one day: new users, a few requests each, the candidate's truth set by ``lift``."""
    rng = np.random.default_rng([seed, day])
    first_user = 1_000_000 * (seed + 1) + day * users_per_day
    users = np.arange(first_user, first_user + users_per_day)
    arm = (rng.random(users_per_day) < weight).astype(int)
    per_user = rng.poisson(2.0, users_per_day) + 1
    user = np.repeat(users, per_user)
    arms = np.repeat(arm, per_user)
    n = len(user)
    p = np.where(arms == 1, purchase_p * lift, purchase_p)
    bought = rng.random(n) < p
    revenue = np.where(bought, rng.exponential(20.0, n), 0.0)
    return pd.DataFrame(
        {
            "promotion_id": promotion,
            "stage": stage,
            "step": step,
            "request_id": np.arange(n) + day * 10_000_000 + seed * 100_000,
            "t": day + rng.uniform(0.0, 0.999, n),
            "user_id": user,
            "user_segment": 1,
            "device": 0,
            "hour": 12,
            "arm": arms,
            "model_version": np.where(arms == 1, "2", "1"),
            "latency_ms": rng.gamma(4.0, 10.0, n),
            "error": rng.random(n) < 0.002,
            "items": json.dumps(list(range(10))),
            "n_clicks": bought.astype(int) + (rng.random(n) < 0.3),
            "n_purchases": bought.astype(int),
            "revenue": revenue,
            "n_out_of_stock": 0,
            "min_pscore": 0.05,
        }
    )


class EventWorld:
    """The event store the MetricSource reads, written day by day."""

    def __init__(self, url: str) -> None:
        from stagegate.events.store import EventStore

        self.url = url
        self.store = EventStore(url)

    def add_day(self, promotion: str, day: int, **kwargs: object) -> int:
        from sqlalchemy import insert

        from stagegate.events.store import events

        frame = day_events(promotion, day, **kwargs)  # type: ignore[arg-type]
        with self.store.engine.begin() as conn:
            conn.execute(insert(events), frame.to_dict(orient="records"))
        return len(frame)

    def break_queries(self) -> None:
        """Make every later query fail for real: the events table is gone."""
        from sqlalchemy import text

        with self.store.engine.begin() as conn:
            conn.execute(text("DROP TABLE events"))


def write_files(folder: Path, events_url: str, policy: dict | None = None) -> tuple[Path, Path]:
    policy_file = folder / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy or POLICY, sort_keys=False))
    connections = folder / "connections.yaml"
    connections.write_text(yaml.safe_dump({"version": 1, "metrics": {"type": "events", "url": events_url}}))
    return policy_file, connections


JudgeFactory = Callable[..., tuple[Judge, object]]


@pytest.fixture
def world(tmp_path: Path) -> EventWorld:
    return EventWorld(f"sqlite:///{tmp_path / 'events.db'}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_judge(tmp_path: Path, world: EventWorld, clock: FakeClock) -> Iterator[JudgeFactory]:
    """``make_judge(state_url=None)`` -> (Judge, ASGI app): a fresh judge process over the same files."""
    policy_file, connections = write_files(tmp_path, world.url)
    opened: list[JudgeState] = []

    def factory(state_url: str | None = None) -> tuple[Judge, object]:
        setup = load_setup(policy_file, "canary", connections)
        state = JudgeState(state_url or f"sqlite:///{tmp_path / 'judge.db'}")
        opened.append(state)
        judge = Judge(setup, state, now=clock.now)
        return judge, create_app(judge)

    yield factory
    for state in opened:
        state.dispose()


# Argo Rollouts' web provider sends a plain GET with the template's headers; Go's net/http adds these
# (argoproj/argo-rollouts metricproviders/webmetric/webmetric.go: Method "GET", headers from the metric).
ARGO_HEADERS = {"User-Agent": "Go-http-client/1.1", "Accept-Encoding": "gzip"}
# Flagger POSTs JSON (fluxcd/flagger pkg/controller/webhook.go: Content-Type application/json).
FLAGGER_HEADERS = {"User-Agent": "Go-http-client/1.1", "Content-Type": "application/json"}
