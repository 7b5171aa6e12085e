"""Opening and closing a stage's nested MLflow run and transition, shared by every stage subflow."""

from __future__ import annotations

from typing import Any

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome, judge, stage_gates
from stagegate.decision import Decision
from stagegate.evidence import Evidence
from stagegate.tracking import PromotionTracker


def begin(ctx: PromotionContext, stage: str, resumed: bool = False) -> tuple[PromotionTracker, str]:
    """Record the stage's start (or its resumption after an approved hold) and open its MLflow run."""
    rt = runtime()
    what = f"resuming {stage} after an approved hold" if resumed else f"entering {stage}"
    rt.events.transition(ctx.promotion_id, stage, what, stage=stage)
    rt.registry.tag(ctx.model, ctx.version, stage=stage, status="in_progress")
    tracker = rt.tracker(ctx.model)
    run_id = tracker.start_stage(ctx.mlflow_run_id, stage)
    # The stage run carries the policy it was judged by: the whole file and this stage's section.
    policy = ctx.policy.model_dump(mode="json")
    tracker.client.log_dict(run_id, policy, "policy.json")
    tracker.client.log_dict(run_id, policy["stages"][stage], f"policy_{stage}.json")
    return tracker, run_id


def end(
    ctx: PromotionContext,
    stage: str,
    tracker: PromotionTracker,
    run_id: str,
    decision: Decision,
    reason: str,
    resume: Any = None,
) -> StageOutcome:
    """Close the stage's MLflow run with its verdict table; ``resume``: where an approved HOLD continues."""
    rt = runtime()
    rows = rt.events.verdicts(ctx.promotion_id, stage)
    tracker.finish_stage(
        run_id,
        rows.drop(columns=["id", "promotion_id"], errors="ignore").astype({"at": str}),
        decision.value,
        reason,
    )
    return StageOutcome(stage, decision, reason, resume)


def judge_once(
    ctx: PromotionContext, stage: str, tracker: PromotionTracker, run_id: str, evidence: Evidence
) -> StageOutcome:
    """For stages that look once (offline, simulation): judge at the deadline, then close the stage."""
    result = judge(
        ctx, stage, stage_gates(ctx, stage), evidence, step=0, look=1, at_deadline=True, stage_run_id=run_id
    )
    return end(ctx, stage, tracker, run_id, result.decision, result.reason)


def deferred(ctx: PromotionContext, stage: str, tracker: PromotionTracker, run_id: str, why: str) -> None:
    """Close the stage's MLflow run when its next look is due later than the clock may block."""
    rows = runtime().events.verdicts(ctx.promotion_id, stage)
    tracker.finish_stage(
        run_id,
        rows.drop(columns=["id", "promotion_id"], errors="ignore").astype({"at": str}),
        "deferred",
        why,
    )
