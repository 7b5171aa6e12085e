"""A promotion paused before rollout while its canary carries traffic, without a model or a world.

``python -m tests.ops.paused_canary POLICY CANDIDATE_ERROR``: opens the promotion like the promote flow,
records that the canary was entered, puts 50% of users on the candidate, writes served requests in which
the candidate fails ``CANDIDATE_ERROR`` of the time, then waits at the real approval point (which starts
the real guardrail monitor). Prints the approval's answer as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from prefect import flow

from flows.approval import wait_for_approval
from flows.context import runtime
from flows.promote import open_promotion
from stagegate.traffic import Split
from tests.ops.synthetic import served, write_events


@flow(name="paused-canary")
def paused_canary(model: str, policy: str, candidate_error: float) -> dict:
    ctx = open_promotion(model, "2", policy)
    rt = runtime()
    rt.events.transition(ctx.promotion_id, "canary", "canary step 1: 50% of users", stage="canary")
    rt.traffic.set_split(Split(champion="1", candidate="2", candidate_weight=0.5))
    frame = served(
        ctx.promotion_id,
        "canary",
        1,
        n=3000,
        weight=0.5,
        t0=30.0,
        hours=6,
        seed=5,
        candidate_error=candidate_error,
    )
    write_events(rt.events, frame)
    answer = wait_for_approval(ctx, "before rollout", "test")
    return {**asdict(answer), "promotion_id": ctx.promotion_id}


if __name__ == "__main__":
    model, policy, error = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print(json.dumps(paused_canary(model, policy, error)))
