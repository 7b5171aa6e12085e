"""Approval points: the flow pauses with a Prefect run-input form until a named approver answers.

At an approval point the flow, in this order:

1. builds the evidence report (stagegate.evidence_report), logs it to the promotion's MLflow run under
   ``evidence/<point>/`` (markdown, HTML, PNG, CSV) and publishes a Prefect markdown artifact
   ``evidence-<point>`` linking to the MLflow run; the form's description links to both;
2. records ``awaiting_approval`` in the ledger, starts the guardrail monitor on the stage that carries
   traffic (flows.monitor, started by flows.monitor_control: a separate flow run, because a paused flow
   cannot act) and announces the pause;
3. pauses with the form (decision, approver, token, reason). Only approvers listed in the policy whose
   token matches (stagegate.identity) are accepted, and the answer is deleted from Prefect once read;
   anyone else is refused, the attempt is recorded (ledger, MLflow, Prefect artifact, announcement), and
   the flow pauses again, for the time that is left, with a form that says why. No valid answer before
   the policy's timeout is a rejection;
4. records the answer (who, when, why, and the digest and location of the evidence they saw) in the
   ledger, in MLflow (tags and ``approvals/*.json``) and as a Prefect artifact ``approval-<point>``;
5. stops the monitor and waits for it to end before anything else moves. If the monitor rolled back while
   the flow waited, the answer says so (``ended_as``) and the promotion only closes its records.

With ``approvals: auto`` (the demo), approval points pass at once and say so in the record.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.context import PromotionContext, runtime
from stagegate.events.store import TERMINAL_STATES
from stagegate.policy.durations import format_duration
from stagegate.redaction import redact_url


class ApprovalDecision(RunInput):
    """The form a release manager fills in the Prefect UI (or `stagegate approve|reject`).

    The decision is a required choice with no default: a form submitted unchanged is refused by the UI,
    never read as a rejection (or an approval)."""

    decision: Literal["approve", "reject"] = Field(description="approve: go on; reject: roll back")
    approver: str = Field(description="your name, as the policy's approvers list it")
    # Proof of identity (stagegate.identity): checked against the ledger's digest, then the answer is
    # deleted from Prefect so that the token does not stay in its database.
    token: str = Field(description="your approver token", json_schema_extra={"format": "password"})
    reason: str = Field("", description="why (recorded with the answer)")

    @property
    def approve(self) -> bool:
        return self.decision == "approve"


@dataclass(frozen=True)
class ApprovalResult:
    approved: bool
    approver: str | None
    reason: str
    # The ledger's final state when the guardrail monitor rolled back while the flow waited: the promotion
    # has ended, so the flow must only close its records (never roll back a second time).
    ended_as: str | None = None


@dataclass(frozen=True)
class EvidenceLinks:
    point: str
    markdown: str  # the short summary put in the form
    artifact_url: str | None = None
    mlflow_url: str | None = None
    mlflow_dir: str | None = None
    digest: str | None = None


def slug(point: str) -> str:
    """An artifact key from an approval point: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", point.lower()).strip("-") or "approval"


def prefect_ui_url() -> str | None:
    """The Prefect UI's address (the API's, less ``/api``); None when it cannot be known."""
    try:
        from flows.monitor_control import current_api_url

        api = current_api_url()
    except Exception:
        return None
    return api[: -len("/api")] if api.endswith("/api") else api


def mlflow_run_url(ctx: PromotionContext) -> str | None:
    """A link to the promotion's run in the MLflow UI, when MLflow is a server (``stagegate up``)."""
    uri = redact_url(runtime().workspace.mlflow_uri)  # the link goes into artifacts and the pause form
    if not uri.startswith(("http://", "https://")):
        return None
    experiment = runtime().tracker(ctx.model).experiment_id
    return f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{ctx.mlflow_run_id}"


def publish_evidence(ctx: PromotionContext, point: str) -> EvidenceLinks:
    """Build the evidence report, log it to MLflow and publish the Prefect artifact that links to it."""
    from prefect.artifacts import create_markdown_artifact

    from stagegate.evidence_report import (
        build_report,
        effect_table,
        latest_verdicts,
        log_report,
        markdown_table,
    )

    rt = runtime()
    key = slug(point)
    mlflow_url = mlflow_run_url(ctx)
    links = {"MLflow run": mlflow_url} if mlflow_url else {}
    title = f"Evidence {point}: {ctx.model} v{ctx.version}"
    report = build_report(rt.events, ctx.promotion_id, title=title, links=links)
    mlflow_dir = f"evidence/{key}"
    tracking = redact_url(rt.workspace.mlflow_uri)  # the note is a Prefect artifact anyone may read
    log_report(report, rt.tracker(ctx.model).client, ctx.mlflow_run_id, mlflow_dir)
    where = (
        f"[MLflow run]({mlflow_url}), artifacts `{mlflow_dir}/`"
        if mlflow_url
        else f"MLflow run `{ctx.mlflow_run_id}` ({tracking}), artifacts `{mlflow_dir}/`"
    )
    # Prefect renders the markdown but cannot show the PNGs by their relative names: point at MLflow.
    body = re.sub(
        r"!\[([^\]]*)\]\(([^)]+)\)", rf"*figure `\2`: see {mlflow_dir}/\2 in MLflow*", report.markdown
    )
    artifact_md = f"{body}\n\n---\nFigures and HTML report: {where}. Report digest `{report.digest}`."
    artifact_id = create_markdown_artifact(
        markdown=artifact_md, key=f"evidence-{key}", description=f"{ctx.model} v{ctx.version}, {point}"
    )
    ui = prefect_ui_url()
    artifact_url = f"{ui}/artifacts/artifact/{artifact_id}" if ui else None
    tables = latest_verdicts(rt.events.verdicts(ctx.promotion_id))
    summary = [f"**Evidence report:** [evidence-{key}]({artifact_url})" if artifact_url else ""]
    summary.append(f"**MLflow:** {where}.")
    if tables:
        last_stage, table = list(tables.items())[-1]
        summary += ["", f"Latest verdicts ({last_stage}):", "", markdown_table(effect_table(table))]
    return EvidenceLinks(
        point=point,
        markdown="\n".join(summary),
        artifact_url=artifact_url,
        mlflow_url=mlflow_url,
        mlflow_dir=mlflow_dir,
        digest=report.digest,
    )


def _record(
    ctx: PromotionContext,
    point: str,
    decision: str,
    approver: str | None,
    reason: str,
    evidence: EvidenceLinks | None,
    flow_run_id: str | None,
) -> dict[str, Any]:
    """Who, when, why and which evidence: to MLflow (tags, approvals/*.json) and a Prefect artifact."""
    from prefect.artifacts import create_markdown_artifact

    logger = get_run_logger()
    at = datetime.now(UTC)
    record = {
        "point": point,
        "decision": decision,  # approved | rejected | refused | timed_out | auto
        "approver": approver,
        "reason": reason,
        "at": at.isoformat(),
        "promotion_id": ctx.promotion_id,
        "flow_run_id": flow_run_id,
        "evidence": {
            "prefect_artifact": evidence.artifact_url if evidence else None,
            "mlflow_artifacts": evidence.mlflow_dir if evidence else None,
            "mlflow_run": evidence.mlflow_url if evidence else ctx.mlflow_run_id,
            "digest": evidence.digest if evidence else None,
        },
    }
    key = slug(point)
    try:
        tracker = runtime().tracker(ctx.model)
        name = f"approvals/{key}-{at.strftime('%Y%m%dT%H%M%S%f')}-{decision}.json"
        tracker.log_json(ctx.mlflow_run_id, record, name)
        prefix = f"stagegate.approval.{key}"
        if decision == "refused":
            run = tracker.client.get_run(ctx.mlflow_run_id)
            earlier = run.data.tags.get(f"{prefix}.refused")
            refused = f"{earlier}, {approver}" if earlier else str(approver)
            tracker.client.set_tag(ctx.mlflow_run_id, f"{prefix}.refused", refused[:5000])
        else:
            for field, value in (
                ("decision", decision),
                ("approver", approver or ""),
                ("reason", reason),
                ("at", record["at"]),
                (
                    "evidence",
                    f"{record['evidence']['mlflow_artifacts']} digest {record['evidence']['digest']}",
                ),
            ):
                tracker.client.set_tag(ctx.mlflow_run_id, f"{prefix}.{field}", str(value)[:5000])
    except Exception as exc:  # the ledger already holds the answer; MLflow is the second record
        logger.warning("could not record the approval in MLflow: %r", exc)
    evidence_line = (
        f"[evidence-{key}]({evidence.artifact_url})" if evidence and evidence.artifact_url else "(none)"
    )
    md = "\n".join(
        [
            f"### {point}: **{decision}**",
            "",
            "| field | value |",
            "| --- | --- |",
            f"| who | {approver or '-'} |",
            f"| when (UTC) | {record['at']} |",
            f"| why | {(reason or '-').replace('|', '/')} |",
            f"| evidence seen | {evidence_line}; MLflow `{record['evidence']['mlflow_artifacts']}`, "
            f"digest `{record['evidence']['digest']}` |",
            f"| promotion | `{ctx.promotion_id}` ({ctx.model} v{ctx.version}) |",
        ]
    )
    try:
        create_markdown_artifact(markdown=md, key=f"approval-{key}", description=f"{point}: {decision}")
    except Exception as exc:
        logger.warning("could not publish the approval artifact: %r", exc)
    return record


def _ended(ctx: PromotionContext) -> str | None:
    state = runtime().events.promotion(ctx.promotion_id)["state"]
    return state if state in TERMINAL_STATES else None


def _transition(ctx: PromotionContext, state: str, reason: str) -> bool:
    """Record a state; False when the promotion already ended (the monitor rolled back meanwhile)."""
    try:
        runtime().events.transition(ctx.promotion_id, state, reason)
        return True
    except RuntimeError:
        if _ended(ctx):
            return False
        raise


def _refusal(events: Any, allowed: list[str], approver: str, token: str) -> str | None:
    """None when ``approver`` may answer: on the policy's list and proven by their token."""
    from flows.monitor_control import MONITOR_APPROVER
    from stagegate.identity import check_token

    if approver == MONITOR_APPROVER or approver not in allowed:
        return "not on the approver list"
    return check_token(events, approver, token)


def _forget_answer(answer: ApprovalDecision, flow_run_id: str | None) -> None:
    """Delete the answer (and the token in it) from Prefect's database once read; best effort."""
    from prefect.input import delete_flow_run_input

    try:
        delete_flow_run_input(answer.metadata.key, flow_run_id=flow_run_id)
    except Exception as exc:  # the answer is still checked; the docs say to rotate a token that may leak
        get_run_logger().warning("could not delete the approval input from Prefect: %r", exc)


def _current_flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else None


def wait_for_approval(ctx: PromotionContext, point: str, evidence_note: str) -> ApprovalResult:
    from flows.monitor_control import MONITOR_APPROVER, start_monitor, watched_stage
    from flows.notify import notify

    rt = runtime()
    logger = get_run_logger()
    approvals = ctx.policy.approvals
    if approvals == "auto":
        rt.events.transition(
            ctx.promotion_id, "approval_granted", f"{point}: automatic approval (policy approvals: auto)"
        )
        return ApprovalResult(True, None, "automatic approval")
    flow_run_id = _current_flow_run_id()
    announce = {"promotion_id": ctx.promotion_id, "model": ctx.model, "version": ctx.version}
    try:
        evidence = publish_evidence(ctx, point)
    except Exception as exc:  # a human can still decide; the form says that the report is missing
        logger.warning("could not build the evidence report: %r", exc)
        evidence = EvidenceLinks(point, f"**The evidence report could not be built:** {exc!r}")
    rt.events.transition(
        ctx.promotion_id, "awaiting_approval", f"{point}: waiting for one of {approvals.approvers}"
    )
    stage = watched_stage(ctx)
    monitor = start_monitor(ctx, stage, flow_run_id) if stage else None
    ui = prefect_ui_url()
    run_url = f"{ui}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else None
    logger.info(
        "waiting for approval %s; guardrail monitor: %s; answer with `stagegate approve %s --approver NAME "
        "--reason WHY` (or `reject`)%s",
        point,
        f"{monitor.kind} on {stage}" if monitor else "none (the candidate carries no traffic)",
        ctx.promotion_id,
        f" or the Resume form at {run_url}" if run_url else "",
    )
    notify(
        "paused",
        **announce,
        message=f"{ctx.model} v{ctx.version} waits for approval {point}",
        point=point,
        flow_run_id=flow_run_id,
        url=run_url,
        evidence=evidence.artifact_url,
    )
    description = (
        f"### Approve {ctx.model} v{ctx.version} ({point})?\n\n{evidence.markdown}\n\n{evidence_note}\n\n"
        f"Approvers: {', '.join(approvals.approvers)}, each with their own token (`stagegate approvers add "
        f"NAME` issues one). Timeout {format_duration(approvals.timeout)} "
        f"({approvals.on_timeout} on timeout). "
        f"{'A guardrail monitor watches ' + stage + ' while you decide. ' if monitor else ''}"
        f"Promotion `{ctx.promotion_id}`, MLflow run `{ctx.mlflow_run_id}`."
    )
    form = ApprovalDecision.with_initial_data(description=description)
    deadline = time.monotonic() + approvals.timeout.total_seconds()
    result: ApprovalResult | None = None
    try:
        while (remaining := int(deadline - time.monotonic())) > 0:
            try:
                answer = pause_flow_run(wait_for_input=form, timeout=remaining, poll_interval=2)
            except FlowPauseTimeout:
                break
            if (state := _ended(ctx)) is not None:
                break  # the guardrail monitor rolled back and woke us up
            approver = answer.approver.strip()
            _forget_answer(answer, flow_run_id)
            if (refusal := _refusal(rt.events, approvals.approvers, approver, answer.token)) is not None:
                logger.warning("refused an answer from %r: %s", approver, refusal)
                rt.events.transition(
                    ctx.promotion_id,
                    "awaiting_approval",
                    f"{point}: refused answer from {approver!r} ({refusal})",
                )
                _record(ctx, point, "refused", approver, f"{refusal}; {answer.reason}", evidence, flow_run_id)
                notify(
                    "approval_refused",
                    **announce,
                    message=f"{approver!r} may not answer {point} ({refusal}); still waiting",
                    point=point,
                    approver=approver,
                )
                # the next form says so, so that whoever submitted sees why nothing happened
                form = ApprovalDecision.with_initial_data(
                    description=f"**Refused: the answer from {approver!r}: {refusal}.** Answer again.\n\n"
                    + description
                )
                continue
            verb = "approved" if answer.approve else "rejected"
            state = "approval_granted" if answer.approve else "approval_denied"
            if not _transition(ctx, state, f"{point}: {verb} by {approver}: {answer.reason}"):
                break
            _record(ctx, point, verb, approver, answer.reason, evidence, flow_run_id)
            if answer.approve:
                notify("approved", **announce, message=f"{point}: approved by {approver}", point=point)
            result = ApprovalResult(answer.approve, approver, answer.reason)
            break
        if result is None and _ended(ctx) is None:
            _transition(
                ctx, "approval_timed_out", f"{point}: no approval within {format_duration(approvals.timeout)}"
            )
            _record(
                ctx,
                point,
                "timed_out",
                None,
                f"no answer within {format_duration(approvals.timeout)}",
                evidence,
                None,
            )
            result = ApprovalResult(
                False,
                None,
                f"no approval within {format_duration(approvals.timeout)} ({approvals.on_timeout})",
            )
    except BaseException:
        if monitor is not None:  # the flow fails here: the monitor must not outlive it
            monitor.stop()
        raise
    finally:
        if monitor is not None:
            # The ledger no longer says awaiting_approval: the monitor stops at its next look. Wait for it,
            # so that it never acts while this flow moves traffic, then reload the world it advanced.
            logger.info("guardrail monitor: %s", monitor.wait())
            rt.reload_world()
    if (ended := _ended(ctx)) is not None:
        reason = rt.events.promotion(ctx.promotion_id)["reason"] or "ended while waiting for approval"
        return ApprovalResult(False, MONITOR_APPROVER, reason, ended_as=ended)
    assert result is not None
    return result


def publish_final_evidence(ctx: PromotionContext) -> EvidenceLinks | None:
    """The closing evidence report of a promotion (MLflow ``evidence/final/``, Prefect ``evidence-final``),
    and the key effects and verdicts as metrics and tags on the parent run (tracking.key_evidence): the
    run list in MLflow then compares promotions side by side. Each part is independent of the other."""
    rt = runtime()
    try:
        rt.tracker(ctx.model).log_key_evidence(ctx.mlflow_run_id, rt.events.verdicts(ctx.promotion_id))
    except Exception as exc:  # bookkeeping: the outcome is recorded already
        get_run_logger().warning("could not log the key evidence on the MLflow run: %r", exc)
    try:
        return publish_evidence(ctx, "final")
    except Exception as exc:  # the outcome is recorded already; a report that fails must not hide it
        get_run_logger().warning("could not publish the final evidence report: %r", exc)
        return None
