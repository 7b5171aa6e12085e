"""Evaluating a stage's gates on one look: build, evaluate, decide, persist (in that order), log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.context import PromotionContext, runtime
from stagegate.decision import Decision, LookDecision
from stagegate.evidence import Evidence
from stagegate.policy.gates import StageGates, configure_stage, judge_look


@dataclass(frozen=True)
class StageOutcome:
    """A stage's decision. ``resume`` (on a HOLD of a stage that looks at live traffic) is where the stage
    continues once the hold is approved (a flows.stages.runner.LoopState, kept in this process)."""

    stage: str
    decision: Decision
    reason: str
    resume: Any = field(default=None, compare=False, repr=False)


def stage_gates(ctx: PromotionContext, stage: str) -> StageGates:
    """The stage's gates at its decision rule's levels; without a baseline, gates that need one are
    dropped (and logged)."""
    gates = configure_stage(getattr(ctx.policy.stages, stage))
    if ctx.absolute_only:
        skipped = [g.name for g in gates if g.needs_baseline]
        if skipped:
            get_run_logger().warning(
                "no %s: skipping baseline gates %s (absolute_only)", ctx.policy.baseline, skipped
            )
        gates = gates.without_baseline()
    return gates


@task(name="judge", cache_policy=NO_CACHE, retries=0)
def judge(
    ctx: PromotionContext,
    stage: str,
    gates: StageGates,
    evidence: Evidence | None,
    *,
    step: int,
    look: int,
    at_deadline: bool,
    enough_samples: bool = True,
    stage_run_id: str | None = None,
    last_step: bool = True,
    error_streaks: Mapping[str, int] | None = None,
    measurement_error: str | None = None,
) -> LookDecision:
    """Evaluate every gate on ``evidence``, persist the verdicts, then return the combined decision.

    ``measurement_error``: the metric query failed (after its retries), every gate is ERROR for this look.
    ``error_streaks``: consecutive-error state from the previous look (None: ERROR acts at once)."""
    result = judge_look(
        gates,
        evidence,
        at_deadline=at_deadline,
        enough_samples=enough_samples,
        last_step=last_step,
        error_streaks=error_streaks,
        measurement_error=measurement_error,
    )
    rt = runtime()
    rows = [(j.verdict, j.action.value if j.action else None) for j in result.judged]
    rt.events.record_verdicts(ctx.promotion_id, stage, step, look, rows)  # persisted before anyone acts
    if stage_run_id:
        rt.tracker(ctx.model).log_look(stage_run_id, result.judged, step=look)
    logger = get_run_logger()
    for j in result.judged:
        logger.info(
            "[%s step %d look %d] %s %s: %s",
            stage,
            step,
            look,
            j.verdict.outcome,
            j.verdict.gate,
            j.verdict.message,
        )
    logger.info("[%s] decision: %s (%s, rule %s)", stage, result.decision, result.reason, gates.rule)
    return result
