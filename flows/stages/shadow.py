"""Shadow stage: live requests are mirrored to the candidate; its slates are scored, never shown.

One step of the look loop (flows.stages.runner) at weight 0, mirrored: looks every ``batch_hours`` until
``min_requests`` mirrored requests are in (or ``max_hours`` passed), then one judgement of the paired
evidence."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow

from flows.context import PromotionContext
from flows.gating import StageOutcome, stage_gates
from flows.interrupts import surface_interrupts
from flows.stages import bookkeeping
from flows.stages.looks import run_stage_looks
from flows.stages.runner import Plan, ResumeLater, Step, summarised_resume
from flows.traffic import set_split
from stagegate.decision import Decision
from stagegate.policy.schema import ShadowStage
from stagegate.traffic import Split


def shadow_plan(promotion_id: str, config: ShadowStage) -> Plan:
    """The shadow stage as the look loop runs it: one mirrored step at weight 0."""
    step = Step(
        number=0,
        weight=0.0,
        deadline_hours=config.max_hours,
        min_samples=config.min_requests,
        judge_early=False,  # judged once: on enough mirrored requests, or at the deadline
    )
    return Plan(
        promotion_id,
        "shadow",
        (step,),
        timedelta(hours=config.batch_hours),
        mirrored=True,
        sample="requests",
    )


@summarised_resume
@flow(name="shadow")
@surface_interrupts
def shadow_stage(ctx: PromotionContext, resume: Any = None) -> StageOutcome:
    tracker, run_id = bookkeeping.begin(ctx, "shadow", resumed=resume is not None)

    def enter_step(step: Step, start: datetime) -> None:
        set_split(
            Split(champion=ctx.champion_version, candidate=ctx.version, candidate_weight=0.0, shadow=True)
        )

    try:
        result = run_stage_looks(
            ctx,
            shadow_plan(ctx.promotion_id, ctx.policy.stages.shadow),
            stage_gates(ctx, "shadow"),
            stage_run_id=run_id,
            enter_step=enter_step,
            resume=resume,
        )
    except ResumeLater as later:
        bookkeeping.deferred(ctx, "shadow", tracker, run_id, str(later))
        raise
    decision = result.decision
    if decision is Decision.CONTINUE:  # cannot happen: the loop ends only on a decision; fail closed
        decision = Decision.HOLD
    return bookkeeping.end(ctx, "shadow", tracker, run_id, decision, result.reason, result.resume)
