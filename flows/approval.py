"""Approval points: the flow pauses with a Prefect run-input form until a named approver answers.

Only approvers listed in the policy are accepted; anyone else is refused, the attempt is recorded, and the
flow pauses again for the time that is left. No answer before the policy's timeout is a rejection.
With ``approvals: auto`` (the demo), approval points pass at once and say so in the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flows.context import PromotionContext, runtime


class ApprovalDecision(RunInput):
    """The form a release manager fills in the Prefect UI (or `stagegate approve|reject`)."""

    approve: bool
    approver: str
    reason: str = ""


@dataclass(frozen=True)
class ApprovalResult:
    approved: bool
    approver: str | None
    reason: str


def wait_for_approval(ctx: PromotionContext, point: str, evidence_note: str) -> ApprovalResult:
    rt = runtime()
    logger = get_run_logger()
    approvals = ctx.policy.approvals
    if approvals == "auto":
        rt.events.transition(
            ctx.promotion_id, "approval_granted", f"{point}: automatic approval (policy approvals: auto)"
        )
        return ApprovalResult(True, None, "automatic approval")
    rt.events.transition(
        ctx.promotion_id, "awaiting_approval", f"{point}: waiting for one of {approvals.approvers}"
    )
    deadline = time.monotonic() + approvals.timeout.total_seconds()
    description = (
        f"### Approve {ctx.model} v{ctx.version} ({point})?\n\n{evidence_note}\n\n"
        f"Approvers: {', '.join(approvals.approvers)}. Promotion id `{ctx.promotion_id}`, "
        f"MLflow run `{ctx.mlflow_run_id}`."
    )
    form = ApprovalDecision.with_initial_data(description=description, approve=False, approver="", reason="")
    while (remaining := int(deadline - time.monotonic())) > 0:
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=remaining, poll_interval=2)
        except FlowPauseTimeout:
            break
        if answer.approver not in approvals.approvers:
            logger.warning("refused an answer from %r: not an approver in the policy", answer.approver)
            rt.events.transition(
                ctx.promotion_id,
                "awaiting_approval",
                f"{point}: refused answer from {answer.approver!r} (not on the approver list)",
            )
            continue
        verb = "approved" if answer.approve else "rejected"
        state = "approval_granted" if answer.approve else "approval_denied"
        rt.events.transition(
            ctx.promotion_id, state, f"{point}: {verb} by {answer.approver}: {answer.reason}"
        )
        return ApprovalResult(answer.approve, answer.approver, answer.reason)
    rt.events.transition(
        ctx.promotion_id, "approval_timed_out", f"{point}: no approval within {approvals.timeout}"
    )
    return ApprovalResult(False, None, f"no approval within {approvals.timeout} ({approvals.on_timeout})")
