"""``stagegate reconcile``: close the promotions whose process died, from the ledger alone.

A promotion is abandoned when its lease has expired, when its owner is a process of this host that is
gone, or when it has no lease (a row written before leases existed). For each one, this process first
takes the lease over (a compare-and-swap: a live owner that renewed meanwhile keeps it, and of two
reconcilers only one proceeds), then rolls it back with the flow's own procedure
(:func:`stagegate.rollback.roll_back_promotion`: traffic to the recorded champion first, then the ledger
and the registry, then read back), and the ledger says why: ``reconciled: lease expired at ...``.

The outcome follows the ledger: a recorded ``<outcome>_pending`` is finished as ``<outcome>``; otherwise a
promotion that never reached live users (offline, simulation, shadow) ends ``rejected``, one that did
(canary, rollout) ends ``rolled_back``, as the flow itself would. A policy saying ``on_crash: resume`` has
its promotion resumed from the ledger's checkpoint instead (``stagegate resume``, flows/resume.py) when the
caller can run it (the ``reconcile``, ``status`` and ``promote`` commands) and the promotion has a
checkpoint of a traffic stage; otherwise, or when resuming fails, it is rolled back, and the reason says
why.

Idempotent: a second run finds nothing to do. Run by ``stagegate reconcile``, and by itself at the start
of every promotion (for its model) and of ``stagegate status``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stagegate.events.store import aware, owner_alive
from stagegate.ledger_states import PENDING_STATES, TERMINAL_STATES, PromotionState, failure_outcome
from stagegate.rollback import PromotionEnded, RollbackIncomplete, RollbackTarget, roll_back_promotion

log = logging.getLogger("stagegate.reconcile")

#: The stages whose look loop records a checkpoint to resume from.
RESUMABLE_STAGES = ("shadow", "canary", "rollout")


@dataclass
class Reconciled:
    """What reconcile did with one abandoned promotion."""

    promotion_id: str
    model: str
    version: str
    from_state: str
    outcome: str
    reason: str
    traffic_ok: bool = False
    registry_ok: bool = False
    ledger_closed: bool = False
    skipped: str | None = None  # why nothing was done (another owner renewed or took over first)
    problems: list[str] = field(default_factory=list)
    resumed: bool = False  # on_crash: resume: continued from the ledger (``outcome`` is where it ended)

    @property
    def done(self) -> bool:
        if self.resumed:
            return self.skipped is None
        return self.skipped is None and self.traffic_ok and self.registry_ok and self.ledger_closed

    def line(self) -> str:
        head = f"promotion {self.promotion_id} ({self.model} v{self.version}, was {self.from_state})"
        if self.skipped:
            return f"{head}: skipped: {self.skipped}"
        if self.resumed:
            return f"{head}: resumed from the ledger ({self.reason}): {self.outcome}"
        status = "closed" if self.done else "NOT closed: " + "; ".join(self.problems[-2:])
        return f"{head}: {self.outcome} ({self.reason}): {status}"


def why_abandoned(row: dict[str, Any], now: datetime) -> str | None:
    """The reason a promotion counts as abandoned, or None if its owner still holds it."""
    expires = aware(row.get("lease_expires_at"))
    if expires is None:
        return "no lease recorded (opened before leases existed)"
    if expires < now:
        return f"lease expired at {expires.isoformat(timespec='seconds')} (owner {row.get('owner')})"
    if owner_alive(row.get("owner")) is False:
        return (
            f"owner process {row.get('owner')} is gone (its lease would have expired at "
            f"{expires.isoformat(timespec='seconds')})"
        )
    return None


def _resume_refusal(row: dict[str, Any], resume: Callable[[str], str] | None) -> str | None:
    """Why a promotion whose policy says ``on_crash: resume`` is rolled back all the same, or None."""
    if PromotionState(row["state"]) in PENDING_STATES:
        return "a rollback was already under way"
    if (row.get("checkpoint") or {}).get("stage") not in RESUMABLE_STAGES:
        return "it has no checkpoint of a traffic stage to resume from"
    if resume is None:
        return "this reconcile runs inside a flow run, where it cannot resume (the commands can)"
    return None


def reconcile(
    rt: Any,
    model: str | None = None,
    now: datetime | None = None,
    resume: Callable[[str], str] | None = None,
) -> list[Reconciled]:
    """Roll back every abandoned open promotion (of ``model``, or of every model); see the module doc.

    ``rt`` gives ``events``, ``traffic`` and ``registry`` (a :class:`stagegate.runtime.Runtime`), and
    optionally ``tracker(model)`` to close the promotion's MLflow run. ``resume(promotion_id)`` continues
    a promotion from the ledger and returns its outcome (``stagegate resume``); with it, a promotion whose
    policy says ``on_crash: resume`` and that has a checkpoint is resumed rather than rolled back, and one
    whose resume fails is rolled back (fail closed).
    """
    now = now or datetime.now(UTC)
    results = []
    for row in rt.events.expired_leases(model, now=now):
        why = why_abandoned(row, now)
        if why is None:  # pragma: no cover - expired_leases and why_abandoned agree
            continue
        state = row["state"]
        stage = row.get("stage") or "registered"
        if PromotionState(state) in PENDING_STATES:
            outcome = state.removesuffix("_pending")
        else:
            outcome = failure_outcome(row.get("stage")).value
        reason = f"reconciled: {why}"
        if (row.get("policy") or {}).get("on_crash") == "resume":
            refusal = _resume_refusal(row, resume)
            if refusal is None and resume is not None:
                resumed = Reconciled(row["id"], row["model"], str(row["version"]), state, "", reason)
                log.warning("reconciling %s: %s; on_crash: resume", row["id"], why)
                try:
                    resumed.outcome, resumed.resumed = resume(row["id"]), True
                except Exception as exc:  # fail closed: what cannot be resumed is rolled back
                    refusal = f"resuming it failed ({exc!r})"
                else:
                    results.append(resumed)
                    continue
            reason += f"; the policy says on_crash: resume, but {refusal}: rolled back instead"
            row = rt.events.promotion(row["id"])  # a failed resume may have taken the lease over
            if PromotionState(row["state"]) in TERMINAL_STATES:  # ...and ended it: nothing left to do
                ended = Reconciled(row["id"], row["model"], str(row["version"]), state, row["state"], reason)
                ended.resumed = True
                results.append(ended)
                continue
        result = Reconciled(row["id"], row["model"], str(row["version"]), state, outcome, reason)
        results.append(result)
        if not rt.events.take_over(row):
            result.skipped = "its lease was renewed or taken over by another process meanwhile"
            continue
        log.warning("reconciling %s: %s", row["id"], reason)
        try:
            report = roll_back_promotion(
                RollbackTarget.from_row(row),
                traffic=rt.traffic,
                registry=rt.registry,
                events=rt.events,
                stage=stage,
                reason=reason,
                outcome=outcome,
            )
        except RollbackIncomplete as exc:
            report = exc.report
        except PromotionEnded as exc:  # promoted meanwhile by its own process: nothing to undo
            result.outcome, result.ledger_closed, result.skipped = exc.state, True, str(exc)
            continue
        result.outcome = report.outcome
        result.traffic_ok, result.registry_ok = report.traffic_ok, report.registry_ok
        result.ledger_closed, result.problems = report.ledger_closed, report.problems
        _finish_run(rt, row, result)
    return results


def _finish_run(rt: Any, row: dict[str, Any], result: Reconciled) -> None:
    """Close the promotion's MLflow run with the outcome (bookkeeping: a failure here changes nothing)."""
    tracker = getattr(rt, "tracker", None)
    if tracker is None or not row.get("mlflow_run_id") or not result.ledger_closed:
        return
    try:  # the key effects and verdicts, as a promotion that ended in its flow has them
        tracker(row["model"]).log_key_evidence(row["mlflow_run_id"], rt.events.verdicts(row["id"]))
    except Exception as exc:
        log.warning("could not log the key evidence on MLflow run %s: %r", row["mlflow_run_id"], exc)
    try:
        tracker(row["model"]).finish_promotion(row["mlflow_run_id"], result.outcome, result.reason)
    except Exception as exc:
        log.warning("could not close MLflow run %s: %r", row["mlflow_run_id"], exc)
