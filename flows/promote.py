"""The promotion flow: one candidate through the policy's stages, as a state machine in one place.

    registered ─► offline ─► simulation ─► shadow ─► canary ─► rollout ─► promoted
                     └───────────┴────────────┴──► rejected   └────┴──► rolled_back

Every state change is written to the promotion ledger before the action it announces, every gate verdict
before the decision it feeds. A stage decides ADVANCE, HOLD (wait for a human) or ROLLBACK; this flow alone
acts on it. Before the first live user sees the candidate, a failure *rejects* it; after, it *rolls back*.
Either way traffic returns to 100% champion and the champion alias stays (or goes back) where it was.
An approved HOLD of a stage that watches live traffic resumes that stage where it held (flows.stages.runner:
the same step, or the next one after a step's deadline; a held rollout still finishes its traffic move). A
look the wall clock cannot wait for without holding the worker ends the run as ``deferred``: recorded in the
ledger with the time it is due, the lease kept until then.

The ledger enforces the moves (stagegate/ledger_states.py). Opening a promotion takes a lease on it
(atomically: one open promotion per model), renewed by a heartbeat thread while this process lives; a
promotion whose process died is rolled back by ``stagegate reconcile``, which also runs here first. A
rollback moves traffic before it writes anything (stagegate/rollback.py), so a store that is down never
keeps the candidate serving: the champion serves, and the promotion is closed when the store is back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from pydantic import BaseModel

from flows.approval import ApprovalResult, publish_final_evidence, wait_for_approval
from flows.context import TRAFFIC_STAGES, PromotionContext, check_metric_source, ports_for, runtime
from flows.gating import StageOutcome
from flows.interrupts import interrupt_behind
from flows.notify import notify
from flows.stages.canary import canary_stage
from flows.stages.offline import offline_stage
from flows.stages.rollout import rollout_stage
from flows.stages.runner import ResumeLater
from flows.stages.shadow import shadow_stage
from flows.stages.simulation import simulation_stage
from stagegate.decision import Decision
from stagegate.events.store import TERMINAL_STATES, lease_seconds
from stagegate.policy import load_policy
from stagegate.registry import CANDIDATE_ALIAS

STAGE_FLOWS = {
    "offline": offline_stage,
    "simulation": simulation_stage,
    "shadow": shadow_stage,
    "canary": canary_stage,
    "rollout": rollout_stage,
}


class PromotionResult(BaseModel):
    promotion_id: str
    model: str
    version: str
    outcome: str  # promoted | rejected | rolled_back
    stage: str | None
    reason: str
    mlflow_run_id: str
    stages: list[dict[str, str]]
    ledger_closed: bool = True  # False: the ledger was down; `stagegate reconcile` closes it when back
    resume_at: str | None = None  # outcome "deferred": when the next look is due (ISO 8601, UTC)


@task(name="open-promotion", cache_policy=NO_CACHE)
def open_promotion(model: str, version: str, policy_path: str) -> PromotionContext:
    """Check everything before anything moves: the policy, the version, the baseline."""
    policy_path = str(Path(policy_path).resolve())
    policy = load_policy(policy_path)  # PolicyError lists every problem
    if policy.model != model:
        raise ValueError(f"{policy_path}: policy is for model {policy.model!r}, not {model!r}")
    rt = runtime()
    # Only the ports this policy's stages use are started (their secrets resolved, the others' checked):
    # a promotion with no offline stage never loads an offline-data adapter.
    rt.build_ports(ports_for(policy))
    check_metric_source(rt, policy)  # UnjudgeableGates: gates the metric source cannot feed
    from stagegate.reconcile import reconcile

    for done in reconcile(rt, model):  # a crashed promotion of this model is closed before a new one opens
        get_run_logger().warning("reconcile: %s", done.line())
    rt.registry.get_version(model, version)  # RegistryError names the missing model or version
    from stagegate.contract import require_version  # ContractError lists every problem; nothing moved yet

    require_version(model, str(version), tracking_uri=rt.workspace.mlflow_uri)
    champion = rt.registry.get_alias(model, policy.baseline)
    if champion is None and policy.on_missing_baseline == "refuse":
        raise LookupError(
            f"model {model!r} has no {policy.baseline!r} alias and {policy_path} says "
            "on_missing_baseline: refuse"
        )
    if champion is not None and champion.version == str(version):
        raise ValueError(f"version {version} of {model!r} is already the {policy.baseline}")
    # No check-then-insert: the ledger's unique index over open promotions refuses a second one atomically
    # (PromotionInProgress names the open promotion, its owner and its lease).
    run_context = get_run_context()  # a task's context: the flow run is known by id only
    flow_run_id = getattr(getattr(run_context, "task_run", None), "flow_run_id", None)
    promotion_id = rt.events.open_promotion(
        model=model,
        version=str(version),
        policy_path=policy_path,
        policy=policy.model_dump(mode="json"),
        champion_version=champion.version if champion else None,
        flow_run_id=str(flow_run_id) if flow_run_id else None,
    )
    try:
        tracker = rt.tracker(model)
        run_id = tracker.start_promotion(
            model=model,
            version=str(version),
            promotion_id=promotion_id,
            policy=policy.model_dump(mode="json"),
            policy_path=policy_path,
        )
        rt.events.set_mlflow_run(promotion_id, run_id)
        rt.registry.set_alias(model, CANDIDATE_ALIAS, str(version))
        rt.registry.tag(
            model, str(version), status="in_progress", promotion_id=promotion_id, stage="registered"
        )
    except Exception as exc:  # opened but not started: close it now rather than hold the model's lease
        from stagegate.rollback import RollbackIncomplete, RollbackTarget, roll_back_promotion

        try:
            roll_back_promotion(
                RollbackTarget(promotion_id, model, str(version), champion.version if champion else None),
                traffic=rt.traffic,
                registry=rt.registry,
                events=rt.events,
                stage="registered",
                reason=f"opening the promotion failed: {exc!r}",
                outcome="rejected",
            )
        except RollbackIncomplete as failed:  # the lease lapses and `stagegate reconcile` finishes it
            get_run_logger().error("could not close the promotion that failed to open: %s", failed)
        raise
    return PromotionContext(
        promotion_id=promotion_id,
        model=model,
        version=str(version),
        champion_version=champion.version if champion else None,
        policy=policy,
        policy_path=policy_path,
        mlflow_run_id=run_id,
    )


@task(name="roll-back", retries=0, cache_policy=NO_CACHE)
def roll_back(ctx: PromotionContext, stage: str, reason: str, outcome: str) -> dict:
    """Traffic first (the champion serves everyone), then ledger, aliases and tags, then read back.

    The retries are inside (bounded, per call and per round: stagegate/rollback.py), because a retry of
    the whole task would write the ledger before traffic again. Raises RollbackIncomplete when traffic or
    the registry cannot be put back and verified; returns the report otherwise, whose ``ledger_closed``
    is False when the ledger was unreachable (the lease then lapses and `stagegate reconcile` closes it).
    """
    from dataclasses import asdict

    from stagegate.rollback import RollbackIncomplete

    try:
        report = _roll_back_with_runtime(ctx, stage, reason, outcome)
    except RollbackIncomplete as failed:  # retried and still unverified: say so loudly, then fail the run
        _announce_incomplete(
            ctx, f"{failed} (the ledger stays pending; `stagegate reconcile` retries)", failed
        )
        raise
    for problem in report.problems:
        get_run_logger().warning("rollback: %s", problem)
    return asdict(report)


def _announce_incomplete(ctx: PromotionContext, message: str, failed: Any) -> None:
    """Announce a rollback that could not be verified (someone must look); never raises."""
    notify(
        "rollback_incomplete",
        promotion_id=ctx.promotion_id,
        model=ctx.model,
        version=ctx.version,
        message=message,
        problems=failed.report.problems[-5:],
    )


def _roll_back_with_runtime(
    ctx: PromotionContext, stage: str, reason: str, outcome: str, **bounds: Any
) -> Any:
    """stagegate.rollback.roll_back_promotion of ``ctx`` through this process's ports (``bounds``: rounds,
    call_timeout)."""
    from stagegate.rollback import RollbackTarget, roll_back_promotion

    rt = runtime()
    return roll_back_promotion(
        RollbackTarget(ctx.promotion_id, ctx.model, ctx.version, ctx.champion_version),
        traffic=rt.traffic,
        registry=rt.registry,
        events=rt.events,
        stage=stage,
        reason=reason,
        outcome=outcome,
        moved_traffic=True,  # this flow moved traffic, maybe after a reconciler closed the ledger
        **bounds,
    )


def _summary_markdown(ctx: PromotionContext, outcomes: list[StageOutcome], final: str, reason: str) -> str:
    lines = [
        f"# Promotion of `{ctx.model}` v{ctx.version}: **{final}**",
        "",
        f"Champion at start: v{ctx.champion_version}" if ctx.champion_version else "No champion at start.",
        f"Policy: `{ctx.policy_path}`. Promotion id `{ctx.promotion_id}`. MLflow run `{ctx.mlflow_run_id}`.",
        "",
        "| stage | decision | reason |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {o.stage} | {o.decision.value} | {o.reason.replace('|', '/')} |" for o in outcomes]
    lines += ["", f"**Outcome:** {final}: {reason}"]
    return "\n".join(lines)


def _skip_reason(ctx: PromotionContext, stage: str) -> str | None:
    if ctx.absolute_only and stage in ("shadow", "canary"):
        return "no champion serves yet, so there is no live traffic to compare against (absolute_only)"
    return None


@flow(name="promote", log_prints=True)
def promote(model: str, version: str, policy: str) -> PromotionResult:
    """Take ``model`` version ``version`` through the stages of the policy file ``policy``.

    On a Prefect server of its own, the whole promotion holds the model's global concurrency slot
    (flows.concurrency: a second promotion of the model is refused before anything opens)."""
    from flows.concurrency import promotion_slot

    with promotion_slot(model, runtime().events):
        ctx = open_promotion(model, str(version), policy)
        return run_promotion(ctx)


def run_promotion(ctx: PromotionContext, start: Mapping[str, Any] | None = None) -> PromotionResult:
    """Drive an opened promotion under its lease, from the start or from ``start`` (a ledger checkpoint:
    `stagegate resume`, flows.resume); a deferred one keeps its lease until its look is due."""
    from stagegate.lease import LeaseKeeper

    with LeaseKeeper(runtime().events, ctx.promotion_id):  # renewed while this process lives
        result = _drive(ctx, start)
    if result.outcome == "deferred":  # the keeper may have renewed it meanwhile: keep it until resume_at
        rt = runtime()
        ahead = datetime.fromisoformat(str(result.resume_at)) - rt.clock.now()
        rt.events.heartbeat(ctx.promotion_id, lease_for=max(ahead.total_seconds(), 0.0) + lease_seconds())
    return result


def _drive(ctx: PromotionContext, start: Mapping[str, Any] | None = None) -> PromotionResult:
    """The stages in order, then the outcome acted on and recorded (the state machine of the module doc).

    With ``start`` (a checkpoint), the stages before its stage are done, and its stage continues from it:
    where its look loop stood, or, when it was held, from the approval it was waiting for."""
    logger = get_run_logger()
    model, version = ctx.model, ctx.version
    rt = runtime()
    outcomes: list[StageOutcome] = []
    final, reason, last_stage = "promoted", "every stage passed", None
    order = [name for name, _ in ctx.policy.stages.configured()]
    first = order.index(start["stage"]) if start is not None else 0
    try:
        for stage, config in ctx.policy.stages.configured()[first:]:
            resuming = start if start is not None and stage == start["stage"] else None
            if resuming is None and (skip := _skip_reason(ctx, stage)) is not None:
                logger.warning("skipping %s: %s", stage, skip)
                rt.events.transition(ctx.promotion_id, stage, f"skipped: {skip}", stage=stage)
                continue
            last_stage = stage
            needs_approval = resuming is None and getattr(config, "approval", None) == "before"
            if (
                needs_approval
                and not (answer := wait_for_approval(ctx, f"before {stage}", _evidence_note(ctx))).approved
            ):
                final, reason = _not_approved(answer, stage, f"approval before {stage} refused")
                break
            try:
                refused = _run_stage(ctx, stage, outcomes, resuming)
            except ResumeLater as later:
                return _defer(ctx, stage, later, outcomes)
            if refused is not None:
                final, reason = refused
                break
            if stage == "canary" and getattr(config, "approval", None) == "before_rollout":
                answer = wait_for_approval(ctx, "before rollout", _evidence_note(ctx))
                if not answer.approved:
                    final, reason = _not_approved(answer, stage, "approval before rollout refused")
                    break
    # Ctrl-C or a supervisor's stop: the champion serves before this process ends
    except BaseException as exc:
        if (stop := interrupt_behind(exc)) is None:
            raise
        _roll_back_interrupted(ctx, last_stage or "registered", stop)
        if stop is exc:
            raise
        raise stop from None  # a signal Prefect's task engine reported as an error (flows.interrupts)

    # The guardrail monitor may have rolled back while the flow waited for approval: then only close records.
    ledger_closed = True
    try:
        already_ended = rt.events.promotion(ctx.promotion_id)["state"] in TERMINAL_STATES
    except Exception as exc:  # the ledger is down: nothing can be recorded, so the champion must serve
        logger.error("the ledger cannot be read: %r", exc)
        already_ended = False
        if final == "promoted":
            final = _failure_outcome(last_stage or "registered")
            reason = f"every stage passed, but the ledger cannot record the promotion: {exc!r}"
    needs_rollback = final != "promoted" and not already_ended
    if final == "promoted":
        try:
            rt.events.transition(ctx.promotion_id, "promoted", reason, stage=last_stage)
        except Exception as exc:  # a promotion counts once recorded: unrecorded, the champion comes back
            logger.error("could not record the promotion: %r", exc)
            final = _failure_outcome(last_stage or "registered")
            reason = f"every stage passed, but the ledger did not record the promotion: {exc}"
            needs_rollback = True  # even if a reconciler closed the ledger: this flow moved traffic since
    if final == "promoted":
        rt.registry.tag(ctx.model, ctx.version, status="promoted", stage="rollout", reason=reason)
    elif needs_rollback:
        report = roll_back(ctx, last_stage or "registered", reason, final)
        final, ledger_closed = report["outcome"], report["ledger_closed"]
        if not ledger_closed:
            reason += (
                f"; traffic is back on the champion, but the ledger could not be closed: `stagegate "
                f"reconcile` closes it as {final} once the ledger is back and the lease has lapsed"
            )
    _bookkeeping(ctx, outcomes, final, reason, announce=not already_ended)
    logger.info("promotion of %s v%s: %s (%s)", model, version, final, reason)
    return PromotionResult(
        promotion_id=ctx.promotion_id,
        model=model,
        version=str(version),
        outcome=final,
        stage=last_stage,
        reason=reason,
        mlflow_run_id=ctx.mlflow_run_id,
        stages=[{"stage": o.stage, "decision": o.decision.value, "reason": o.reason} for o in outcomes],
        ledger_closed=ledger_closed,
    )


def _run_stage(
    ctx: PromotionContext,
    stage: str,
    outcomes: list[StageOutcome],
    checkpoint: Mapping[str, Any] | None = None,
) -> tuple[str, str] | None:
    """Run one stage, and every approved HOLD of it: a stage that looks at live traffic resumes where it
    held (the same step, or the next one after a step's deadline; a held rollout finishes its traffic
    move). Appends every outcome to ``outcomes``; returns None when the stage ended well, else (final
    outcome, reason). From a ``checkpoint`` the stage continues where the ledger says it stood; a
    checkpoint taken at a HOLD first asks for the approval again."""
    logger = get_run_logger()
    resume: Any = checkpoint
    held = checkpoint.get("held") if checkpoint is not None else None
    while True:
        if held is not None:  # resumed at a hold: the human's answer is still owed
            outcome = StageOutcome(stage, Decision.HOLD, str(held), resume=resume)
        else:
            try:
                run = STAGE_FLOWS[stage]
                outcome = run(ctx) if resume is None else run(ctx, resume=resume)
            except ResumeLater:
                raise
            except (
                Exception
            ) as exc:  # fail closed: a stage that cannot finish never leaves traffic half-moved
                if (stop := interrupt_behind(exc)) is not None:
                    raise stop from exc  # a signal that Prefect's own crash handling turned into an error
                logger.exception("stage %s failed", stage)
                outcome = StageOutcome(stage, Decision.ROLLBACK, f"{stage} failed with an error: {exc!r}")
            outcomes.append(outcome)
        held = None
        if outcome.decision is Decision.ADVANCE:
            return None
        if outcome.decision is not Decision.HOLD:
            return _failure_outcome(stage), outcome.reason
        if ctx.policy.approvals == "auto":
            return (
                _failure_outcome(stage),
                f"{stage} asks for a human ({outcome.reason}), but approvals are automatic: failing closed",
            )
        answer = wait_for_approval(
            ctx, f"hold in {stage}", f"The {stage} stage asks for a human: {outcome.reason}"
        )
        if not answer.approved:
            return _not_approved(answer, stage, f"{stage} held and not approved: {outcome.reason}")
        if outcome.resume is None or stage not in TRAFFIC_STAGES:
            return None  # a stage that looks once: the approval is its advance
        logger.info("%s: hold approved, resuming where it held", stage)
        resume = outcome.resume


def _roll_back_interrupted(ctx: PromotionContext, stage: str, stop: BaseException) -> None:
    """Roll the promotion back before the interrupted process ends: traffic first, then the ledger and the
    registry (stagegate.rollback), with further SIGINT/SIGTERM ignored meanwhile, so that a second Ctrl-C
    cannot leave the candidate serving. Called outside Prefect's task machinery (the flow run is ending).
    What cannot be finished here is left to `stagegate reconcile` (the lease lapses)."""
    import signal
    import threading

    from stagegate.ledger_states import failure_outcome
    from stagegate.rollback import (
        RollbackIncomplete,
        release_interrupted,
    )

    what = {KeyboardInterrupt: "SIGINT (Ctrl-C)"}.get(type(stop), f"{type(stop).__name__} (SIGTERM)")
    release_interrupted(stop)  # a write the interrupt cut short must not hold its lock against the rollback
    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = _roll_back_with_runtime(
            ctx,
            stage,
            f"interrupted by {what}: rolled back before the process ended",
            failure_outcome(stage).value,
            # Within seconds: one try of each call, 4 s each. What is left (a registry write that an
            # interrupted write of this process keeps locked) is `stagegate reconcile`'s once we are gone.
            rounds=1,
            attempts=1,
            call_timeout=4.0,
        )
        log = get_run_logger()
        log.error("promotion %s interrupted by %s: %s", ctx.promotion_id, what, report.outcome)
    except RollbackIncomplete as exc:
        get_run_logger().error("interrupted, and the rollback is incomplete (reconcile finishes it): %s", exc)
        _announce_incomplete(ctx, f"interrupted by {what}: {exc} (`stagegate reconcile` finishes it)", exc)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _defer(
    ctx: PromotionContext, stage: str, later: ResumeLater, outcomes: list[StageOutcome]
) -> PromotionResult:
    """The next look is due later than the clock may block: record it, keep the lease until then, end.

    Nothing is judged and nothing sleeps. The promotion stays open with traffic as it is; the ledger row
    says when it is due (``resume_at``), and its lease runs until then plus the usual lease time.
    """
    from flows.stages.checkpoint import to_checkpoint

    rt = runtime()
    reason = f"deferred: {later}"
    rt.events.transition(ctx.promotion_id, stage, reason, stage=stage)
    rt.events.save_checkpoint(ctx.promotion_id, to_checkpoint(stage, later.state, resume_at=later.resume_at))
    lease_for = max((later.resume_at - rt.clock.now()).total_seconds(), 0.0) + lease_seconds()
    rt.events.heartbeat(ctx.promotion_id, lease_for=lease_for)
    get_run_logger().warning(
        "promotion %s of %s v%s: %s (resume at %s)",
        ctx.promotion_id,
        ctx.model,
        ctx.version,
        reason,
        later.resume_at.isoformat(),
    )
    return PromotionResult(
        promotion_id=ctx.promotion_id,
        model=ctx.model,
        version=ctx.version,
        outcome="deferred",
        stage=stage,
        reason=reason,
        mlflow_run_id=ctx.mlflow_run_id,
        stages=[{"stage": o.stage, "decision": o.decision.value, "reason": o.reason} for o in outcomes],
        ledger_closed=False,
        resume_at=later.resume_at.isoformat(),
    )


def _bookkeeping(
    ctx: PromotionContext, outcomes: list[StageOutcome], final: str, reason: str, announce: bool
) -> None:
    """Announce, publish the evidence, close the MLflow run: after the outcome is decided and acted on,
    so a store that fails here is logged and changes nothing."""
    logger = get_run_logger()
    steps = []
    if announce:
        steps.append(
            lambda: notify(
                final, promotion_id=ctx.promotion_id, model=ctx.model, version=ctx.version, message=reason
            )
        )
    markdown = _summary_markdown(ctx, outcomes, final, reason)
    steps.append(lambda: publish_final_evidence(ctx))
    steps.append(lambda: runtime().tracker(ctx.model).finish_promotion(ctx.mlflow_run_id, final, reason))
    steps.append(
        lambda: runtime().tracker(ctx.model).client.log_text(ctx.mlflow_run_id, markdown, "summary.md")
    )
    steps.append(
        lambda: create_markdown_artifact(
            key="promotion-summary", markdown=markdown, description=f"{ctx.model} v{ctx.version}"
        )
    )
    for step in steps:
        try:
            step()
        except Exception as exc:
            logger.warning("bookkeeping after the outcome failed: %r", exc)


def _failure_outcome(stage: str) -> str:
    return "rolled_back" if stage in ("canary", "rollout") else "rejected"


def _not_approved(answer: ApprovalResult, stage: str, what: str) -> tuple[str, str]:
    if answer.ended_as:  # the guardrail monitor rolled back while the flow waited
        return answer.ended_as, answer.reason
    return _failure_outcome(stage), f"{what}: {answer.reason}"


def _evidence_note(ctx: PromotionContext) -> str:
    return f"Evidence: the verdict tables in MLflow run `{ctx.mlflow_run_id}` (one nested run per stage)."
