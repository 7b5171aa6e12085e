"""A router's request log, as a separate process: per-user events in the event-store schema, written to a
PostgreSQL ``events`` table according to the split the router's admin API says is in force.

``python -m tests.proof.event_filler --events-url URL --router-url URL --better V --worse V
--canary-weights 0.2,0.5 --rollout-weight 0.8`` (bearer token in ``$ROUTER_TOKEN``). Every ``--tick``
seconds it reads the split (GET /admin/split) and the open promotion (the ledger's ``promotions`` table in
the same database), and writes ``--users-per-tick`` requests of random users, each on the arm its user
hashes to (sticky): mirrored (champion served, candidate's slate scored) while shadow is on; otherwise the
candidate's share of users on the candidate. The promotion's stage and step are what a real deployment's
log pipeline would tag: shadow while mirrored, canary step ``k`` at the ``k``-th canary weight, rollout at
the rollout weight. Version ``--better`` is a better model (more purchases, no errors), ``--worse`` a
clearly worse one (40 % errors, few purchases). Runs until killed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
from sqlalchemy import insert, select

SIM_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # stagegate.ports.SIM_EPOCH: event time is days since it
SLATE = 10
QUALITY = {  # error rate, purchase probability, revenue per purchase
    "champion": (0.01, 0.20, 20.0),
    "better": (0.0, 0.35, 22.0),
    "worse": (0.40, 0.05, 15.0),
}


def stage_of(split: dict[str, Any], canary: list[float], rollout: float) -> tuple[str, int] | None:
    """The (stage, step) a split belongs to, or None when everyone is on the champion."""
    if split.get("candidate") is None:
        return None
    if split.get("shadow"):
        return "shadow", 0
    weight = float(split["candidate_weight"])
    for step, w in enumerate(canary, start=1):
        if abs(weight - w) < 1e-9:
            return "canary", step
    if abs(weight - rollout) < 1e-9:
        return "rollout", 0
    return None


def sticky_share(user_id: int) -> float:
    """Where a user falls in [0, 1): the same for every request (Knuth's multiplicative hash)."""
    return ((user_id * 2654435761) % 2**32) / 2**32


def rows_for(
    split: dict[str, Any],
    promotion_id: str,
    stage: str,
    step: int,
    quality: str,
    rng: np.random.Generator,
    n: int,
    first_request: int,
) -> list[dict[str, Any]]:
    now = (datetime.now(UTC) - SIM_EPOCH) / timedelta(days=1)
    users = rng.integers(0, 5000, n)
    rows = []
    for i, user in enumerate(users.tolist()):
        mirrored = stage == "shadow"
        on_candidate = not mirrored and sticky_share(user) < float(split["candidate_weight"])
        error_rate, p_buy, price = QUALITY[quality if on_candidate else "champion"]
        items = rng.choice(1000, SLATE, replace=False).tolist()
        purchases = int(rng.random() < p_buy)
        row = {
            "promotion_id": promotion_id,
            "stage": stage,
            "step": step,
            "request_id": first_request + i,
            "t": now + i * 1e-9,
            "user_id": user,
            "user_segment": user % 3,
            "device": user % 2,
            "hour": datetime.now(UTC).hour,
            "arm": int(on_candidate),
            "model_version": split["candidate"] if on_candidate else split["champion"],
            "latency_ms": float(rng.normal(40.0, 5.0)),
            "error": bool(rng.random() < error_rate),
            "items": json.dumps(items),
            "n_clicks": int(rng.poisson(1.0)),
            "n_purchases": purchases,
            "revenue": purchases * price,
            "n_out_of_stock": int(rng.random() < 0.05),
            "min_pscore": 1.0,
        }
        if mirrored:
            row["shadow_items"] = json.dumps(items[:5] + rng.choice(1000, SLATE - 5).tolist())
            row["shadow_latency_ms"] = float(rng.normal(45.0, 5.0))
            row["shadow_n_out_of_stock"] = int(rng.random() < 0.05)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-url", required=True)
    parser.add_argument("--router-url", required=True)
    parser.add_argument("--better", required=True, help="better versions, comma-separated")
    parser.add_argument("--worse", required=True)
    parser.add_argument("--canary-weights", required=True)
    parser.add_argument("--rollout-weight", type=float, required=True)
    parser.add_argument("--tick", type=float, default=0.2)
    parser.add_argument("--users-per-tick", type=int, default=25)
    args = parser.parse_args(argv)
    canary = [float(w) for w in args.canary_weights.split(",")]

    from stagegate.events.store import TERMINAL_STATES, EventStore, events, promotions

    store = EventStore(args.events_url)  # creates the schema if the flow has not yet
    headers = {"Authorization": f"Bearer {os.environ['ROUTER_TOKEN']}"}
    rng = np.random.default_rng(0)
    next_request, written = 1, 0
    with httpx.Client(base_url=args.router_url, headers=headers, timeout=5) as router:
        while True:
            time.sleep(args.tick)
            split = router.get("/admin/split").raise_for_status().json()
            where = stage_of(split, canary, args.rollout_weight)
            if where is None:
                continue
            query = select(promotions.c.id).where(
                promotions.c.state.not_in(sorted(s.value for s in TERMINAL_STATES))
            )
            with store.engine.connect() as conn:
                open_ids = conn.execute(query).scalars().all()
            if len(open_ids) != 1:
                continue
            quality = "better" if split["candidate"] in args.better.split(",") else "worse"
            rows = rows_for(split, open_ids[0], *where, quality, rng, args.users_per_tick, next_request)
            with store.engine.begin() as conn:
                conn.execute(insert(events), rows)
            next_request += len(rows)
            written += len(rows)
            print(json.dumps({"written": written, "stage": where[0], "step": where[1]}), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
