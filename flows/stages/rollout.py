"""Rollout: the champion alias moves to the candidate, the old champion is kept as ``previous``, and the
new champion bakes at 100% (less any holdback kept on the old one) while guardrails watch.

The bake is one step of the look loop (flows.stages.runner) that never ends before its time. Whenever it
ends well (baked, or a HOLD approved by a human), traffic moves to 100% on the new champion: the ledger
never says promoted while the holdback split is still in force."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome, stage_gates
from flows.interrupts import surface_interrupts
from flows.stages import bookkeeping
from flows.stages.looks import run_stage_looks
from flows.stages.runner import Plan, ResumeLater, Step, summarised_resume
from flows.traffic import set_split
from stagegate.decision import Decision
from stagegate.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, PREVIOUS_ALIAS
from stagegate.traffic import Split


def rollout_plan(ctx: PromotionContext) -> Plan:
    config = ctx.policy.stages.rollout
    bake_hours = config.bake.total_seconds() / 3600
    # Arms keep their meaning during the bake: arm 1 is the new model, arm 0 the old champion (holdback).
    step = Step(
        number=0, weight=1.0 - config.holdback, label="during bake", deadline_hours=bake_hours, bake=True
    )
    return Plan(ctx.promotion_id, "rollout", (step,), timedelta(hours=config.batch_hours))


@summarised_resume
@flow(name="rollout")
@surface_interrupts
def rollout_stage(ctx: PromotionContext, resume: Any = None) -> StageOutcome:
    rt = runtime()
    config = ctx.policy.stages.rollout
    tracker, run_id = bookkeeping.begin(ctx, "rollout", resumed=resume is not None)
    if resume is None:
        if ctx.champion_version is not None:
            rt.registry.set_alias(ctx.model, PREVIOUS_ALIAS, ctx.champion_version)
        rt.registry.set_alias(ctx.model, CHAMPION_ALIAS, ctx.version)
        rt.registry.delete_alias(ctx.model, CANDIDATE_ALIAS)
    bake_hours = config.bake.total_seconds() / 3600
    if ctx.champion_version is None or bake_hours == 0:
        set_split(Split(champion=ctx.version))
        return bookkeeping.end(ctx, "rollout", tracker, run_id, Decision.ADVANCE, "no bake period")

    def enter_step(step: Step, start: datetime) -> None:
        set_split(Split(champion=ctx.champion_version, candidate=ctx.version, candidate_weight=step.weight))

    try:
        result = run_stage_looks(
            ctx,
            rollout_plan(ctx),
            stage_gates(ctx, "rollout"),
            stage_run_id=run_id,
            enter_step=enter_step,
            resume=resume,
        )
    except ResumeLater as later:
        bookkeeping.deferred(ctx, "rollout", tracker, run_id, str(later))
        raise
    if result.decision is not Decision.ADVANCE:
        return bookkeeping.end(ctx, "rollout", tracker, run_id, result.decision, result.reason, result.resume)
    finish_rollout(ctx)
    # No look in this run: the bake's looks were all done before it (a held bake approved at its end).
    reason = f"baked {bake_hours:g}h without a breach" if result.last is not None else "a held bake approved"
    return bookkeeping.end(ctx, "rollout", tracker, run_id, Decision.ADVANCE, reason)


def finish_rollout(ctx: PromotionContext) -> None:
    """Everyone on the new champion: the end of every successful rollout, baked or approved."""
    set_split(Split(champion=ctx.version))
