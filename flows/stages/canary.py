"""Canary stage: the candidate serves a growing share of users (sticky by user hash), step by step.

After every batch the gates look at the step's cumulative evidence (with every earlier look of the canary as
history, for sequential gates), and the stage's decision rule (stagegate.decision) turns the verdicts into
one decision. Within a step: roll back as soon as the rule says so; move to the next step once it says
advance (under ``risk_aware``: every guardrail proven non-inferior and a success metric proven better, or at
an earlier step's deadline with nothing harmful proven); at the last step's deadline, what is unproven is held
for a human. Each step's estimate is its own, because the allocation changes and users move between arms
(sample-ratio checks are per step, after Eppo's advice); but the history runs across steps, so a sequential
gate with ``budget: canary`` carries its harm evidence from step to step (e-values multiplied,
gates.stats.budget) and the canary as a whole, all steps and all its sequential gates, spends one alpha.

The loop is flows.stages.runner (shared with shadow, rollout and the guardrail monitor): looks wait on the
Clock port, measure through the MetricSource port (a task with retries), and a look whose query still fails
is an ERROR of every gate, counted against each gate's ``consecutive_error_limit`` before it acts. An
approved HOLD resumes the canary where it stood (the same step, or the next one after a step's deadline).
"""

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
from stagegate.policy.schema import CanaryStage
from stagegate.traffic import Split


def canary_plan(promotion_id: str, config: CanaryStage, min_users_scale: float = 1.0) -> Plan:
    """The canary's steps as the look loop runs them (``min_users_scale``: the benchmarks' smaller worlds)."""
    n = len(config.steps)
    steps = tuple(
        Step(
            number=i,
            weight=spec.weight / 100.0,
            label=f"step {i} ({spec.weight:g}%)",
            deadline_hours=spec.max_hours or config.max_hours_per_step,
            min_samples=max(1, round((spec.min_users or 1) * min_users_scale)),
            last=i == n,
        )
        for i, spec in enumerate(config.steps, start=1)
    )
    return Plan(promotion_id, "canary", steps, timedelta(hours=config.batch_hours))


@summarised_resume
@flow(name="canary")
@surface_interrupts
def canary_stage(ctx: PromotionContext, resume: Any = None) -> StageOutcome:
    rt = runtime()
    tracker, run_id = bookkeeping.begin(ctx, "canary", resumed=resume is not None)

    def enter_step(step: Step, start: datetime) -> None:
        rt.events.transition(
            ctx.promotion_id,
            "canary",
            f"canary step {step.number}: {step.weight * 100:g}% of users",
            stage="canary",
        )
        set_split(Split(champion=ctx.champion_version, candidate=ctx.version, candidate_weight=step.weight))

    plan = canary_plan(ctx.promotion_id, ctx.policy.stages.canary)
    try:
        result = run_stage_looks(
            ctx, plan, stage_gates(ctx, "canary"), stage_run_id=run_id, enter_step=enter_step, resume=resume
        )
    except ResumeLater as later:
        bookkeeping.deferred(ctx, "canary", tracker, run_id, str(later))
        raise
    return bookkeeping.end(ctx, "canary", tracker, run_id, result.decision, result.reason, result.resume)
