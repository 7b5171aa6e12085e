"""Evaluating a stage's gates on one look: build, evaluate, decide, persist (in that order), log."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.context import PromotionContext, runtime
from stagegate.decision import Decision, LookDecision, decide
from stagegate.evidence import Evidence
from stagegate.plugins import build_gate
from stagegate.verdict import Outcome, Verdict


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    decision: Decision
    reason: str


def stage_gates(ctx: PromotionContext, stage: str) -> list:
    """The stage's gates; without a baseline, gates that need one are dropped (and logged)."""
    config = getattr(ctx.policy.stages, stage)
    gates = [build_gate(spec) for spec in config.gates]
    if ctx.absolute_only:
        skipped = [g.name for g in gates if getattr(g, "needs_baseline", False)]
        if skipped:
            get_run_logger().warning(
                "no %s: skipping baseline gates %s (absolute_only)", ctx.policy.baseline, skipped
            )
        gates = [g for g in gates if not getattr(g, "needs_baseline", False)]
    return gates


@task(name="judge", cache_policy=NO_CACHE, retries=0)
def judge(
    ctx: PromotionContext,
    stage: str,
    gates: list,
    evidence: Evidence,
    *,
    step: int,
    look: int,
    at_deadline: bool,
    enough_samples: bool = True,
    stage_run_id: str | None = None,
) -> LookDecision:
    """Evaluate every gate on ``evidence``, persist the verdicts, then return the combined decision."""
    verdicts: list[tuple[Verdict, dict[Outcome, object]]] = []
    for gate in gates:
        verdict = gate.evaluate(evidence)
        actions = {o: gate.action_for(o) for o in Outcome if o is not Outcome.PASS}
        verdicts.append((verdict, actions))
    result = decide(verdicts, at_deadline=at_deadline, enough_samples=enough_samples)
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
    logger.info("[%s] decision: %s (%s)", stage, result.decision, result.reason)
    return result
