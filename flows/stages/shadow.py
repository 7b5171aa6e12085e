"""Shadow stage: live requests are mirrored to the candidate; its slates are scored, never shown."""

from __future__ import annotations

from prefect import flow

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome, judge, stage_gates
from flows.stages import bookkeeping
from flows.traffic import serve_window, set_split
from stagegate.decision import Decision
from stagegate.events.metrics import shadow_samples
from stagegate.evidence import Evidence
from stagegate.traffic import Split


@flow(name="shadow")
def shadow_stage(ctx: PromotionContext) -> StageOutcome:
    rt = runtime()
    config = ctx.policy.stages.shadow
    tracker, run_id = bookkeeping.begin(ctx, "shadow")
    set_split(Split(champion=ctx.champion_version, candidate=ctx.version, candidate_weight=0.0, shadow=True))
    hours, requests, look = 0.0, 0, 0
    while requests < config.min_requests and hours < config.max_hours:
        batch = serve_window(ctx, "shadow", 0, config.batch_hours)
        hours, requests, look = hours + config.batch_hours, requests + batch.n, look + 1
    frame = rt.events.load_events(ctx.promotion_id, "shadow")
    evidence = Evidence(stage="shadow", arms=shadow_samples(frame), paired=True, look=look)
    tracker.log_metrics(run_id, {"requests": requests, "hours": hours})
    result = judge(
        ctx,
        "shadow",
        stage_gates(ctx, "shadow"),
        evidence,
        step=0,
        look=look,
        at_deadline=True,
        enough_samples=requests >= config.min_requests,
        stage_run_id=run_id,
    )
    decision = result.decision
    if decision is Decision.CONTINUE:  # cannot happen at the deadline; kept explicit for safety
        decision = Decision.HOLD
    return bookkeeping.end(ctx, "shadow", tracker, run_id, decision, result.reason)
