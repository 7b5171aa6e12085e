"""Opening and closing a stage's nested MLflow run and transition, shared by every stage subflow."""

from __future__ import annotations

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome
from stagegate.decision import Decision
from stagegate.tracking import PromotionTracker


def begin(ctx: PromotionContext, stage: str) -> tuple[PromotionTracker, str]:
    rt = runtime()
    rt.events.transition(ctx.promotion_id, stage, f"entering {stage}", stage=stage)
    rt.registry.tag(ctx.model, ctx.version, stage=stage, status="in_progress")
    tracker = rt.tracker(ctx.model)
    return tracker, tracker.start_stage(ctx.mlflow_run_id, stage)


def end(
    ctx: PromotionContext, stage: str, tracker: PromotionTracker, run_id: str, decision: Decision, reason: str
) -> StageOutcome:
    rt = runtime()
    rows = rt.events.verdicts(ctx.promotion_id, stage)
    tracker.finish_stage(
        run_id,
        rows.drop(columns=["id", "promotion_id"], errors="ignore").astype({"at": str}),
        decision.value,
        reason,
    )
    return StageOutcome(stage, decision, reason)
