"""The guardrail monitor: keeps judging the stage that carries traffic while the promotion waits for a human.

``pause_flow_run`` blocks the promotion flow's own process, so the watching happens in a separate flow
run: a subprocess on the embedded default (``python -m flows.monitor``), or the ``guardrail-monitor``
deployment on the stack (``run_deployment(..., timeout=0)``; infra/prefect.yaml). Either way it:

1. reads the promotion from the ledger and stops as soon as it no longer waits for approval (someone
   answered, the approval timed out, or the promotion ended);
2. runs the stages' look loop (flows.stages.runner) on the current ramp step: each look waits on the
   Clock port (the simulated clock serves one of the stage's batches, because that world advances only
   when someone serves it; against a real router the events arrive by themselves and the wall clock waits
   ``interval_seconds``), measures the step so far through the MetricSource port and judges it with the
   stage's gates under the same decision rules as the stage (flows.gating.judge: verdicts are persisted
   under ``<stage>/monitor`` before anything acts). A failed measurement counts against each gate's
   ``consecutive_error_limit`` before it acts, so one flaky query does not roll back;
4. on a ROLLBACK decision (a FAIL, or an ERROR, whose gate says rollback) runs the promotion's own
   ``roll-back`` task (traffic to 100% champion first, then aliases, tags, the ledger), announces it, and
   resumes the paused promotion flow run so that it stops waiting and closes its records.

The promotion flow stops the monitor by answering in the ledger, then waits for the monitor's run to end
before it moves traffic again (see :class:`MonitorHandle`), so two processes never act at once.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.context import PromotionContext, runtime
from flows.monitor_control import (
    DEPLOYMENT,
    MONITOR_APPROVER,
    WATCHED_STATES,
    MonitorHandle,
    current_api_url,
    monitor_mode,
    start_monitor,
    watched_stage,
)
from flows.stages.runner import Plan, Step

# Re-exported: callers that start or stop the monitor should import them from flows.monitor_control.
__all__ = [
    "DEPLOYMENT",
    "MONITOR_APPROVER",
    "WATCHED_STATES",
    "MonitorHandle",
    "MonitorResult",
    "current_api_url",
    "guardrail_monitor",
    "monitor_mode",
    "start_monitor",
    "watched_stage",
]


class MonitorResult(BaseModel):
    promotion_id: str
    stage: str
    looks: int
    rolled_back: bool
    reason: str


def context_from_ledger(promotion_id: str) -> PromotionContext:
    """Rebuild the promotion's context from its ledger row (the monitor runs in another process)."""
    from stagegate.policy import Policy

    row = runtime().events.promotion(promotion_id)
    return PromotionContext(
        promotion_id=promotion_id,
        model=row["model"],
        version=row["version"],
        champion_version=row["champion_version"],
        policy=Policy.model_validate(row["policy"]),
        policy_path=row["policy_path"] or "",
        mlflow_run_id=row["mlflow_run_id"] or "",
    )


def current_step(promotion_id: str, stage: str) -> int:
    """The ramp step the stage reached (0 for stages without steps, or before any event)."""
    from sqlalchemy import func, select

    from stagegate.events.store import events

    query = select(func.max(events.c.step)).where(
        events.c.promotion_id == promotion_id, events.c.stage == stage
    )
    with runtime().events.engine.connect() as conn:
        return int(conn.execute(query).scalar_one_or_none() or 0)


def build_evidence(ctx: PromotionContext, stage: str, look: int, history: tuple) -> tuple[Any, int]:
    """The current step's cumulative evidence of ``stage`` and the step number, from the metric source.

    A measurement error (a failed query, no requests, an arm without users) is logged and judged as
    evidence with no arms: every gate then says ERROR and acts as its ``on_error`` says (fail closed); it is
    never judged as empty or zero data.
    """
    from stagegate.evidence import CANDIDATE, CHAMPION, Evidence
    from stagegate.ports import MeasurementError, Window

    rt = runtime()
    step = current_step(ctx.promotion_id, stage)
    mirrored = stage == "shadow"
    try:
        measurement = rt.metrics.measure(Window(ctx.promotion_id, stage, step, mirrored=mirrored))
    except MeasurementError as exc:
        get_run_logger().warning("could not measure %s step %d: %s", stage, step, exc)
        return Evidence(stage=stage, arms={}, paired=mirrored, look=look, history=history), step
    if mirrored:
        return measurement.evidence(look=look), step
    weight = rt.traffic.get_split().candidate_weight
    return measurement.evidence({CHAMPION: 1 - weight, CANDIDATE: weight}, look, history), step


def _batch_hours(ctx: PromotionContext, stage: str) -> float:
    return float(getattr(getattr(ctx.policy.stages, stage), "batch_hours", 2.0))


def _serves_world() -> bool:
    return runtime().workspace.world_path.exists()


def adopt_promotion_environment(values: dict[str, str | None]) -> None:
    """Point this process at the promotion's workspace, stores and notifications (the parameters).

    A deployment's worker may have another workspace: the promotion's own wins. The parameters carry URLs
    without their passwords (flows.monitor_control.monitor_parameters: Prefect shows parameters to anyone
    who can read its API), so where this process already has the same URL with its credentials, that one
    is kept; otherwise the credential-free URL is used, and the credentials must come from the worker's
    own environment (a pgpass file, the MLflow server's auth variables).
    """
    from stagegate.redaction import redact_url

    for name, value in values.items():
        if not value:
            continue
        own = os.environ.get(name)
        if own and redact_url(own) == value:
            continue  # the same place, and this process holds its credentials
        os.environ[name] = value


@flow(name="guardrail-monitor", log_prints=True)
def guardrail_monitor(
    promotion_id: str,
    stage: str | None = None,
    interval_seconds: float = 5.0,
    max_looks: int = 10_000,
    serve_world: bool | None = None,
    workspace: str | None = None,
    mlflow_uri: str | None = None,
    events_url: str | None = None,
    flow_run_id: str | None = None,
    notify_url: str | None = None,
    notify_block: str | None = None,
) -> MonitorResult:
    """Judge ``stage`` of promotion ``promotion_id`` every ``interval_seconds`` while it awaits approval.

    ``flow_run_id`` is the paused promotion flow run (default: the one in the ledger): the monitor stops if
    it ends, and resumes it after a rollback.
    """
    adopt_promotion_environment(
        {
            "STAGEGATE_HOME": workspace,
            "STAGEGATE_MLFLOW_URI": mlflow_uri,
            "STAGEGATE_EVENTS_URL": events_url,
            "STAGEGATE_NOTIFY_URL": notify_url,
            "STAGEGATE_NOTIFY_BLOCK": notify_block,
        }
    )
    logger = get_run_logger()
    from flows.gating import stage_gates
    from flows.stages.looks import run_stage_looks
    from stagegate.decision import Decision

    rt = runtime()
    ctx = context_from_ledger(promotion_id)
    stage = stage or watched_stage(ctx)
    if stage is None:
        return MonitorResult(
            promotion_id=promotion_id, stage="", looks=0, rolled_back=False, reason="no live traffic"
        )
    serve = _serves_world() if serve_world is None else serve_world
    gates = stage_gates(ctx, stage)
    getattr(rt.metrics, "check_gates", lambda _: None)(gates)  # a source refuses gates it cannot feed
    logger.info(
        "watching %s of %s v%s with %s (%s)",
        stage,
        ctx.model,
        ctx.version,
        [g.name for g in gates],
        "serving the simulated world" if serve else "reading events as they arrive",
    )
    run_id = {"flow_run_id": flow_run_id}
    abandoned: dict[str, Any] = {}

    def stop() -> str | None:
        row = rt.events.promotion(promotion_id)
        state = row["state"]
        run_id["flow_run_id"] = run_id["flow_run_id"] or row.get("flow_run_id")
        if state not in WATCHED_STATES:
            return f"promotion is {state}: stopped watching"
        why = abandonment(row, _flow_run_ended(run_id["flow_run_id"]))
        if why is None:
            return None
        abandoned.update(row=row, why=why)
        return f"promotion abandoned while it waited ({why})"

    result = run_stage_looks(
        ctx,
        monitor_plan(ctx, stage, interval_seconds, max_looks, serve),
        gates,
        stage_run_id=None,
        judged_as=f"{stage}/monitor",
        stop=stop,
        clock=None if serve else monitor_clock(interval_seconds),
        # The simulated clock does not pass real time by itself: pace its looks by the interval.
        between_looks=(lambda: time.sleep(interval_seconds)) if serve else None,
    )
    if result.decision is Decision.ROLLBACK:
        reason = f"guardrail monitor (while waiting for approval), {stage}: {result.reason}"
        roll_back_now(ctx, stage, reason, run_id["flow_run_id"])
        return MonitorResult(
            promotion_id=promotion_id, stage=stage, looks=result.looks, rolled_back=True, reason=reason
        )
    if abandoned and rt.events.take_over(abandoned["row"]):  # else a reconciler took it first
        # The promotion's process is gone and nobody will answer for it: the candidate must not keep
        # serving on a promotion that no process drives.
        reason = f"guardrail monitor, {stage}: the promotion was abandoned ({abandoned['why']}): rolled back"
        roll_back_now(ctx, stage, reason, None)
        return MonitorResult(
            promotion_id=promotion_id, stage=stage, looks=result.looks, rolled_back=True, reason=reason
        )
    return MonitorResult(
        promotion_id=promotion_id, stage=stage, looks=result.looks, rolled_back=False, reason=result.reason
    )


def monitor_clock(interval_seconds: float) -> Any:
    """Real time for a monitor that does not serve: events arrive by themselves, and this flow run exists
    to keep watching, so it waits out each interval (whatever clock the promotion's looks use)."""
    from stagegate.adapters.clock import WallClock

    return WallClock(max_block_seconds=interval_seconds + 60.0)


def monitor_plan(
    ctx: PromotionContext, stage: str, interval_seconds: float, max_looks: int, serve: bool
) -> Plan:
    """The monitor's looks: the stage's current step from where it stands, never at a deadline (the
    promotion waits for a human), the whole step's data so far in every look. On the simulated world a
    look serves one of the stage's batches; against real traffic it waits ``interval_seconds``."""
    rt = runtime()
    weight = 0.0 if stage == "shadow" else rt.traffic.get_split().candidate_weight
    every = timedelta(hours=_batch_hours(ctx, stage)) if serve else timedelta(seconds=interval_seconds)
    step = Step(number=current_step(ctx.promotion_id, stage), weight=weight)
    return Plan(
        ctx.promotion_id,
        stage,
        (step,),
        every,
        mirrored=stage == "shadow",
        whole_step=True,
        max_looks=max_looks,
        watch=True,
    )


def abandonment(row: dict[str, Any], run_ended: bool, now: datetime | None = None) -> str | None:
    """Why a watched promotion has been abandoned by the process that drives it, or None: its flow run
    ended (crashed, failed, cancelled) without closing it, or its lease lapsed or its owner process is gone
    (a SIGKILL leaves the flow run "Paused" for ever, so the lease is what tells)."""
    from stagegate.reconcile import why_abandoned

    if row["state"] not in WATCHED_STATES:
        return None
    if run_ended:
        return f"its flow run {row.get('flow_run_id')} ended without closing it"
    return why_abandoned(row, now or datetime.now(UTC))


def _flow_run_ended(flow_run_id: str | None) -> bool:
    """True when the promotion's flow run crashed, failed or was cancelled while it waited."""
    if not flow_run_id:
        return False
    from uuid import UUID

    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
    except Exception:  # an API hiccup is no reason to stop watching
        return False
    return run.state is not None and run.state.is_final()


def roll_back_now(ctx: PromotionContext, stage: str, reason: str, flow_run_id: str | None) -> None:
    """The promotion's own rollback path, then the announcements, then wake the paused promotion."""
    from flows.notify import notify
    from flows.promote import _failure_outcome, roll_back

    logger = get_run_logger()
    outcome = _failure_outcome(stage)
    logger.warning("rolling back: %s", reason)
    roll_back(ctx, stage, reason, outcome)
    rt = runtime()
    try:
        tracker = rt.tracker(ctx.model)
        tracker.client.set_tag(ctx.mlflow_run_id, "stagegate.monitor.breach", reason[:5000])
        tracker.log_json(ctx.mlflow_run_id, {"stage": stage, "reason": reason}, "monitor/breach.json")
    except Exception as exc:  # the rollback is done; a bookkeeping failure must not hide it
        logger.warning("could not record the breach in MLflow: %r", exc)
    notify(
        outcome,
        promotion_id=ctx.promotion_id,
        model=ctx.model,
        version=ctx.version,
        message=reason,
        stage=stage,
        by="guardrail-monitor",
    )
    if flow_run_id:
        wake(flow_run_id, reason)


def wake(flow_run_id: str, reason: str) -> bool:
    """Resume the paused promotion flow run; it finds the ledger closed and finishes its records."""
    from uuid import UUID

    from prefect.exceptions import FlowPauseTimeout, NotPausedError
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(
            UUID(flow_run_id),
            run_input={
                "decision": "reject",
                "approver": MONITOR_APPROVER,
                "token": "",
                "reason": reason[:2000],
            },
        )
        return True
    except (NotPausedError, FlowPauseTimeout, RuntimeError):
        return False  # not paused (between two pauses, or already gone): it reads the ledger next


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the guardrail monitor for one promotion.")
    parser.add_argument("--promotion-id", required=True)
    parser.add_argument("--stage", default=None)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--max-looks", type=int, default=10_000)
    parser.add_argument("--no-serve", action="store_true", help="only read events (a real router)")
    parser.add_argument("--flow-run-id", default=None, help="the paused promotion flow run")
    args = parser.parse_args(argv)
    result = guardrail_monitor(
        promotion_id=args.promotion_id,
        stage=args.stage,
        interval_seconds=args.interval,
        max_looks=args.max_looks,
        serve_world=False if args.no_serve else None,
        flow_run_id=args.flow_run_id,
    )
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
