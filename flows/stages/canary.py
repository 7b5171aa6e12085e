"""Canary stage: the candidate serves a growing share of users (sticky by user hash), step by step.

After every batch the gates look at the step's cumulative evidence (with the step's earlier looks as
history, for sequential gates). Within a step: roll back as soon as a gate says so; move to the next step
once every gate passes and the step has its minimum number of candidate users; at the step's deadline,
inconclusive gates act as the policy says. Evidence restarts at each step, because the allocation changes
and users move between arms (sample-ratio checks are per step, after Eppo's advice).
"""

from __future__ import annotations

from prefect import flow

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome, judge, stage_gates
from flows.stages import bookkeeping
from flows.traffic import serve_window, set_split
from stagegate.decision import Decision
from stagegate.events.metrics import split_evidence
from stagegate.traffic import Split


@flow(name="canary")
def canary_stage(ctx: PromotionContext) -> StageOutcome:
    rt = runtime()
    config = ctx.policy.stages.canary
    gates = stage_gates(ctx, "canary")
    tracker, run_id = bookkeeping.begin(ctx, "canary")
    total_looks = 0
    for step, spec in enumerate(config.steps, start=1):
        weight = spec.weight / 100.0
        rt.events.transition(
            ctx.promotion_id, "canary", f"canary step {step}: {spec.weight:g}% of users", stage="canary"
        )
        set_split(Split(champion=ctx.champion_version, candidate=ctx.version, candidate_weight=weight))
        max_hours = spec.max_hours or config.max_hours_per_step
        hours, look, history = 0.0, 0, ()
        while True:
            serve_window(ctx, "canary", step, config.batch_hours)
            hours, look, total_looks = hours + config.batch_hours, look + 1, total_looks + 1
            frame = rt.events.load_events(ctx.promotion_id, "canary", step=step)
            evidence, n_candidate, mixed = split_evidence(frame, "canary", weight, look, history)
            at_deadline = hours >= max_hours
            result = judge(
                ctx,
                "canary",
                gates,
                evidence,
                step=step,
                look=look,
                at_deadline=at_deadline,
                enough_samples=n_candidate >= (spec.min_users or 1),
                stage_run_id=run_id,
            )
            tracker.log_metrics(
                run_id,
                {"candidate_users": n_candidate, "weight": weight, "mixed_users": mixed},
                step=total_looks,
            )
            if result.decision is Decision.CONTINUE:
                # Earlier looks keep only what sequential gates need: their per-look evidence.
                history = (*history, evidence)
                continue
            if result.decision is not Decision.ADVANCE:
                return bookkeeping.end(
                    ctx,
                    "canary",
                    tracker,
                    run_id,
                    result.decision,
                    f"step {step} ({spec.weight:g}%): {result.reason}",
                )
            break
    return bookkeeping.end(
        ctx, "canary", tracker, run_id, Decision.ADVANCE, f"all {len(config.steps)} steps passed"
    )
