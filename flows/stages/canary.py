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

The metric query is retried within a look (a Prefect task with retries); a look whose query still fails is
an ERROR of every gate, counted against each gate's ``consecutive_error_limit`` before it acts, so one
flaky query never rolls a canary back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome, judge, stage_gates
from flows.stages import bookkeeping
from flows.traffic import serve_window, set_split
from stagegate.decision import Decision, LookDecision
from stagegate.events.metrics import split_evidence
from stagegate.evidence import Evidence
from stagegate.policy.schema import CanaryStage, CanaryStep
from stagegate.traffic import Split

#: measure(step, weight, look, history) -> (evidence, candidate users, mixed users); may raise
Measure = Callable[[int, float, int, tuple[Evidence, ...]], tuple[Evidence, int, int]]


@task(name="query-metrics", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def query_metrics(ctx: PromotionContext, step: int) -> pd.DataFrame:
    """The step's events so far; a failing query is retried before the look counts as an error."""
    return runtime().events.load_events(ctx.promotion_id, "canary", step=step)


def run_steps(
    config: CanaryStage,
    *,
    enter_step: Callable[[int, CanaryStep], None],
    serve: Callable[[int, float], None],
    measure: Measure,
    judge_look: Callable[..., LookDecision],
    after_look: Callable[[int, float, int, int], None] | None = None,
) -> tuple[Decision, str]:
    """The canary's steps and looks, without Prefect: every collaborator is passed in.

    ``judge_look(step=, look=, evidence=, at_deadline=, enough_samples=, last_step=, error_streaks=,
    measurement_error=)`` judges one look; its ``error_streaks`` are carried to the next look (across steps:
    errors are consecutive looks, whatever the step)."""
    streaks: Mapping[str, int] = {}
    total_looks = 0
    history: tuple[Evidence, ...] = ()  # every look of the canary: gates group it into steps by allocation
    for step, spec in enumerate(config.steps, start=1):
        enter_step(step, spec)
        weight = spec.weight / 100.0
        max_hours = spec.max_hours or config.max_hours_per_step
        hours, look = 0.0, 0
        while True:
            serve(step, config.batch_hours)
            hours, look, total_looks = hours + config.batch_hours, look + 1, total_looks + 1
            evidence: Evidence | None = None
            error: str | None = None
            n_candidate = mixed = 0
            try:
                evidence, n_candidate, mixed = measure(step, weight, look, history)
            except Exception as exc:  # a measurement failure: every gate says ERROR for this look
                error = f"{type(exc).__name__}: {exc}"
            result = judge_look(
                step=step,
                look=look,
                evidence=evidence,
                at_deadline=hours >= max_hours,
                enough_samples=n_candidate >= (spec.min_users or 1),
                last_step=step == len(config.steps),
                error_streaks=streaks,
                measurement_error=error,
            )
            streaks = result.error_streaks
            if after_look is not None:
                after_look(total_looks, weight, n_candidate, mixed)
            if evidence is not None:  # earlier looks keep only what sequential gates need
                history = (*history, evidence)
            if result.decision is Decision.CONTINUE:
                continue
            if result.decision is not Decision.ADVANCE:
                return result.decision, f"step {step} ({spec.weight:g}%): {result.reason}"
            break
    return Decision.ADVANCE, f"all {len(config.steps)} steps passed"


@flow(name="canary")
def canary_stage(ctx: PromotionContext) -> StageOutcome:
    rt = runtime()
    config = ctx.policy.stages.canary
    gates = stage_gates(ctx, "canary")
    tracker, run_id = bookkeeping.begin(ctx, "canary")

    def enter_step(step: int, spec: CanaryStep) -> None:
        rt.events.transition(
            ctx.promotion_id, "canary", f"canary step {step}: {spec.weight:g}% of users", stage="canary"
        )
        set_split(
            Split(champion=ctx.champion_version, candidate=ctx.version, candidate_weight=spec.weight / 100.0)
        )

    def measure(
        step: int, weight: float, look: int, history: tuple[Evidence, ...]
    ) -> tuple[Evidence, int, int]:
        return split_evidence(query_metrics(ctx, step), "canary", weight, look, history)

    def judge_look(*, step: int, look: int, evidence: Evidence | None, **kwargs: Any) -> LookDecision:
        return judge(ctx, "canary", gates, evidence, step=step, look=look, stage_run_id=run_id, **kwargs)

    def after_look(total_looks: int, weight: float, n_candidate: int, mixed: int) -> None:
        tracker.log_metrics(
            run_id, {"candidate_users": n_candidate, "weight": weight, "mixed_users": mixed}, step=total_looks
        )

    decision, reason = run_steps(
        config,
        enter_step=enter_step,
        serve=lambda step, hours: serve_window(ctx, "canary", step, hours),
        measure=measure,
        judge_look=judge_look,
        after_look=after_look,
    )
    return bookkeeping.end(ctx, "canary", tracker, run_id, decision, reason)
