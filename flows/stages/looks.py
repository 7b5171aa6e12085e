"""The Prefect side of the look loop (flows.stages.runner): the metric query as a task with retries, the
gates' judgement persisted per look, the stage's MLflow metrics, all through the runtime's ports."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.context import PromotionContext, runtime
from flows.gating import judge
from flows.stages.checkpoint import restore_state, to_checkpoint
from flows.stages.runner import (
    LookClock,
    LookRecord,
    LoopResult,
    LoopState,
    Parts,
    Plan,
    Step,
    run_looks,
)
from stagegate.decision import LookDecision
from stagegate.policy.gates import StageGates
from stagegate.ports import Measurement, Window


@task(name="measure", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def measure(window: Window, expect: Sequence[str]) -> Measurement:
    """One look's window through the MetricSource port; a failing query is retried before the look counts
    as a measurement error (and then against each gate's consecutive-error limit)."""
    return runtime().metrics.measure(window, tuple(expect))


def run_stage_looks(
    ctx: PromotionContext,
    plan: Plan,
    gates: StageGates,
    *,
    stage_run_id: str | None,
    enter_step: Callable[[Step, datetime], None] = lambda step, start: None,
    resume: LoopState | Mapping[str, Any] | None = None,
    judged_as: str | None = None,
    clock: LookClock | None = None,
    **extra: Any,
) -> LoopResult:
    """Run ``plan`` with the runtime's clock (or ``clock``) and metric source; verdicts go to the ledger
    under ``judged_as`` (default: the stage), looks to the stage's MLflow run.

    ``resume``: where an approved hold continues (a LoopState), or a ledger checkpoint (a mapping:
    `stagegate resume`), whose evidence history is measured again (flows.stages.checkpoint). A stage's
    own loop (not the monitor's watch) records its checkpoint in the ledger as it goes."""
    rt = runtime()
    tracker = rt.tracker(ctx.model) if stage_run_id else None
    name = judged_as or plan.stage

    def judge_look(*, step: int, look: int, evidence: Any, **kwargs: Any) -> LookDecision:
        return judge(ctx, name, gates, evidence, step=step, look=look, stage_run_id=stage_run_id, **kwargs)

    def after_look(record: LookRecord) -> None:
        if tracker is not None and stage_run_id:
            tracker.log_metrics(
                stage_run_id,
                {
                    "candidate_users": record.candidate_units,
                    "weight": record.step.weight,
                    "mixed_users": record.mixed_units,
                    "requests": record.requests,
                },
                step=record.total_looks,
            )

    def checkpoint(state: LoopState, held: str | None) -> None:
        rt.events.save_checkpoint(ctx.promotion_id, to_checkpoint(plan.stage, state, held=held))

    def measure_look(window: Window, expect: Sequence[str]) -> Measurement:
        return measure(window, tuple(expect))

    parts = Parts(
        clock=clock or rt.clock,
        measure=measure_look,
        judge=judge_look,
        enter_step=enter_step,
        after_look=after_look,
        checkpoint=None if plan.watch or judged_as is not None else checkpoint,
        **extra,
    )
    if isinstance(resume, Mapping):
        resume = restore_state(plan, resume, measure_look)
    return run_looks(plan, parts, resume)
