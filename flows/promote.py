"""The promotion flow: one candidate through the policy's stages, as a state machine in one place.

    registered ─► offline ─► simulation ─► shadow ─► canary ─► rollout ─► promoted
                     └───────────┴────────────┴──► rejected   └────┴──► rolled_back

Every state change is written to the promotion ledger before the action it announces, every gate verdict
before the decision it feeds. A stage decides ADVANCE, HOLD (wait for a human) or ROLLBACK; this flow alone
acts on it. Before the first live user sees the candidate, a failure *rejects* it; after, it *rolls back*.
Either way traffic returns to 100% champion and the champion alias stays (or goes back) where it was.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from pydantic import BaseModel

from flows.approval import ApprovalResult, publish_final_evidence, wait_for_approval
from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome
from flows.notify import notify
from flows.stages.canary import canary_stage
from flows.stages.offline import offline_stage
from flows.stages.rollout import rollout_stage
from flows.stages.shadow import shadow_stage
from flows.stages.simulation import simulation_stage
from stagegate.decision import Decision
from stagegate.events.store import TERMINAL_STATES
from stagegate.policy import load_policy
from stagegate.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, PREVIOUS_ALIAS

STAGE_FLOWS = {
    "offline": offline_stage,
    "simulation": simulation_stage,
    "shadow": shadow_stage,
    "canary": canary_stage,
    "rollout": rollout_stage,
}
TRAFFIC_STAGES = {"shadow", "canary", "rollout"}


class PromotionResult(BaseModel):
    promotion_id: str
    model: str
    version: str
    outcome: str  # promoted | rejected | rolled_back
    stage: str | None
    reason: str
    mlflow_run_id: str
    stages: list[dict[str, str]]


@task(name="open-promotion", cache_policy=NO_CACHE)
def open_promotion(model: str, version: str, policy_path: str) -> PromotionContext:
    """Check everything before anything moves: the policy, the version, the baseline."""
    policy_path = str(Path(policy_path).resolve())
    policy = load_policy(policy_path)  # PolicyError lists every problem
    if policy.model != model:
        raise ValueError(f"{policy_path}: policy is for model {policy.model!r}, not {model!r}")
    rt = runtime()
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
    open_ones = rt.events.promotions(model, open_only=True)
    if open_ones:
        raise RuntimeError(
            f"promotion {open_ones[0]['id']} of {model!r} is still in progress "
            f"({open_ones[0]['state']}); one promotion per model at a time (a crashed one must be closed "
            "in the ledger by hand: there is no reconcile command yet)"
        )
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
    rt.registry.tag(model, str(version), status="in_progress", promotion_id=promotion_id, stage="registered")
    return PromotionContext(
        promotion_id=promotion_id,
        model=model,
        version=str(version),
        champion_version=champion.version if champion else None,
        policy=policy,
        policy_path=policy_path,
        mlflow_run_id=run_id,
    )


@task(name="roll-back", retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE)
def roll_back(ctx: PromotionContext, stage: str, reason: str, outcome: str) -> None:
    """Traffic first (the champion serves everyone), then aliases, then tags: safest order first."""
    rt = runtime()
    rt.events.transition(ctx.promotion_id, f"{outcome}_pending", f"{stage}: {reason}", stage=stage)
    split = rt.traffic.get_split()
    champion = ctx.champion_version or split.champion
    from stagegate.traffic import Split

    rt.traffic.set_split(Split(champion=champion))
    if ctx.champion_version is not None:
        rt.registry.set_alias(ctx.model, CHAMPION_ALIAS, ctx.champion_version)
        previous = rt.registry.get_alias(ctx.model, PREVIOUS_ALIAS)
        if previous is not None and previous.version == ctx.champion_version:
            rt.registry.delete_alias(ctx.model, PREVIOUS_ALIAS)
    else:
        current = rt.registry.get_alias(ctx.model, CHAMPION_ALIAS)
        if current is not None and current.version == ctx.version:
            rt.registry.delete_alias(ctx.model, CHAMPION_ALIAS)
    rt.registry.delete_alias(ctx.model, CANDIDATE_ALIAS)
    rt.registry.tag(ctx.model, ctx.version, status=outcome, stage=stage, reason=reason)
    rt.events.transition(ctx.promotion_id, outcome, f"{stage}: {reason}", stage=stage)


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
    """Take ``model`` version ``version`` through the stages of the policy file ``policy``."""
    logger = get_run_logger()
    ctx = open_promotion(model, str(version), policy)
    rt = runtime()
    outcomes: list[StageOutcome] = []
    final, reason, last_stage = "promoted", "every stage passed", None
    for stage, config in ctx.policy.stages.configured():
        if (skip := _skip_reason(ctx, stage)) is not None:
            logger.warning("skipping %s: %s", stage, skip)
            rt.events.transition(ctx.promotion_id, stage, f"skipped: {skip}", stage=stage)
            continue
        last_stage = stage
        needs_approval = getattr(config, "approval", None) == "before"
        if (
            needs_approval
            and not (answer := wait_for_approval(ctx, f"before {stage}", _evidence_note(ctx))).approved
        ):
            final, reason = _not_approved(answer, stage, f"approval before {stage} refused")
            break
        try:
            outcome = STAGE_FLOWS[stage](ctx)
        except Exception as exc:  # fail closed: a stage that cannot finish never leaves traffic half-moved
            logger.exception("stage %s failed", stage)
            outcome = StageOutcome(stage, Decision.ROLLBACK, f"{stage} failed with an error: {exc!r}")
        outcomes.append(outcome)
        if outcome.decision is Decision.HOLD and ctx.policy.approvals == "auto":
            final = _failure_outcome(stage)
            reason = (
                f"{stage} asks for a human ({outcome.reason}), but approvals are automatic: failing closed"
            )
            break
        if outcome.decision is Decision.HOLD:
            answer = wait_for_approval(
                ctx, f"hold in {stage}", f"The {stage} stage asks for a human: {outcome.reason}"
            )
            if not answer.approved:
                final, reason = _not_approved(
                    answer, stage, f"{stage} held and not approved: {outcome.reason}"
                )
                break
        elif outcome.decision is not Decision.ADVANCE:
            final, reason = _failure_outcome(stage), outcome.reason
            break
        if stage == "canary" and getattr(config, "approval", None) == "before_rollout":
            answer = wait_for_approval(ctx, "before rollout", _evidence_note(ctx))
            if not answer.approved:
                final, reason = _not_approved(answer, stage, "approval before rollout refused")
                break

    # The guardrail monitor may have rolled back while the flow waited for approval: then only close records.
    already_ended = rt.events.promotion(ctx.promotion_id)["state"] in TERMINAL_STATES
    if final == "promoted":
        rt.events.transition(ctx.promotion_id, "promoted", reason, stage=last_stage)
        rt.registry.tag(ctx.model, ctx.version, status="promoted", stage="rollout", reason=reason)
    elif not already_ended:
        roll_back(ctx, last_stage or "registered", reason, final)
    if not already_ended:
        notify(final, promotion_id=ctx.promotion_id, model=model, version=str(version), message=reason)
    publish_final_evidence(ctx)
    tracker = rt.tracker(ctx.model)
    tracker.finish_promotion(ctx.mlflow_run_id, final, reason)
    markdown = _summary_markdown(ctx, outcomes, final, reason)
    tracker.client.log_text(ctx.mlflow_run_id, markdown, "summary.md")
    create_markdown_artifact(key="promotion-summary", markdown=markdown, description=f"{model} v{version}")
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
    )


def _failure_outcome(stage: str) -> str:
    return "rolled_back" if stage in ("canary", "rollout") else "rejected"


def _not_approved(answer: ApprovalResult, stage: str, what: str) -> tuple[str, str]:
    if answer.ended_as:  # the guardrail monitor rolled back while the flow waited
        return answer.ended_as, answer.reason
    return _failure_outcome(stage), f"{what}: {answer.reason}"


def _evidence_note(ctx: PromotionContext) -> str:
    return f"Evidence: the verdict tables in MLflow run `{ctx.mlflow_run_id}` (one nested run per stage)."
