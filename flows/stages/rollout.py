"""Rollout: the champion alias moves to the candidate, the old champion is kept as ``previous``, and the
new champion bakes at 100% (less any holdback kept on the old one) while guardrails watch."""

from __future__ import annotations

from prefect import flow

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome, judge, stage_gates
from flows.stages import bookkeeping
from flows.traffic import serve_window, set_split
from stagegate.decision import Decision
from stagegate.events.metrics import split_evidence
from stagegate.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, PREVIOUS_ALIAS
from stagegate.traffic import Split


@flow(name="rollout")
def rollout_stage(ctx: PromotionContext) -> StageOutcome:
    rt = runtime()
    config = ctx.policy.stages.rollout
    tracker, run_id = bookkeeping.begin(ctx, "rollout")
    if ctx.champion_version is not None:
        rt.registry.set_alias(ctx.model, PREVIOUS_ALIAS, ctx.champion_version)
    rt.registry.set_alias(ctx.model, CHAMPION_ALIAS, ctx.version)
    rt.registry.delete_alias(ctx.model, CANDIDATE_ALIAS)
    bake_hours = config.bake.total_seconds() / 3600
    if ctx.champion_version is None or bake_hours == 0:
        set_split(Split(champion=ctx.version))
        return bookkeeping.end(ctx, "rollout", tracker, run_id, Decision.ADVANCE, "no bake period")

    # Arms keep their meaning during the bake: arm 1 is the new model, arm 0 the old champion (holdback).
    set_split(
        Split(champion=ctx.champion_version, candidate=ctx.version, candidate_weight=1.0 - config.holdback)
    )
    gates = stage_gates(ctx, "rollout")
    hours, look, history, streaks = 0.0, 0, (), {}
    while True:
        # A look past the bake happens only while a measurement error is tolerated (CONTINUE at the
        # deadline): the bake never ends on an unmeasured look.
        window = config.batch_hours if hours >= bake_hours else min(config.batch_hours, bake_hours - hours)
        serve_window(ctx, "rollout", 0, window)
        hours, look = hours + config.batch_hours, look + 1
        frame = rt.events.load_events(ctx.promotion_id, "rollout")
        evidence, _, _ = split_evidence(frame, "rollout", 1.0 - config.holdback, look, history)
        result = judge(
            ctx,
            "rollout",
            gates,
            evidence,
            step=0,
            look=look,
            at_deadline=hours >= bake_hours,
            stage_run_id=run_id,
            error_streaks=streaks,
        )
        streaks = result.error_streaks
        if result.decision in (Decision.ROLLBACK, Decision.HOLD):
            return bookkeeping.end(
                ctx, "rollout", tracker, run_id, result.decision, f"during bake: {result.reason}"
            )
        history = (*history, evidence)
        if hours >= bake_hours and result.decision is not Decision.CONTINUE:
            break
    set_split(Split(champion=ctx.version))
    return bookkeeping.end(
        ctx, "rollout", tracker, run_id, Decision.ADVANCE, f"baked {bake_hours:g}h without a breach"
    )
