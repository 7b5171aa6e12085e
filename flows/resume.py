"""Resume a promotion from the ledger: a deferred look that is now due, or a promotion whose process died.

A traffic stage's look loop records where it stands in the ledger (flows.stages.checkpoint) after every
step it enters and every look, and when a look is deferred (the wall clock does not hold a worker for
hours). ``resume-promotion`` takes the promotion's lease over, rebuilds its context from the ledger row
alone (model, version, champion, the policy as it was when the promotion opened) and drives it on from the
checkpoint with the promotion flow's own state machine (flows.promote.run_promotion): the same step and
look numbers, the same evidence history (measured again), the same deadlines. A checkpoint taken at a HOLD
asks for the approval again; nothing the checkpoint did not record is assumed to have happened.

What cannot be resumed is refused before anything moves, with the reason: a promotion that ended, one whose
lease a live process holds, one with no checkpoint (it never reached a traffic stage: `stagegate
reconcile` rolls it back once its lease lapses).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.context import TRAFFIC_STAGES, PromotionContext, ports_for, runtime
from flows.promote import PromotionResult, run_promotion
from stagegate.events.store import TERMINAL_STATES, aware, deferred_until, owner_alive
from stagegate.policy import Policy


class CannotResume(RuntimeError):
    """A promotion that cannot be resumed (the message names it and says why); nothing moved."""


def _resumable(row: dict[str, Any]) -> dict[str, Any]:
    """The row's checkpoint, or CannotResume saying why the promotion cannot be resumed."""
    pid, state = row["id"], row["state"]
    if state in {s.value for s in TERMINAL_STATES}:
        raise CannotResume(f"promotion {pid} has ended ({state}): there is nothing to resume")
    checkpoint = row.get("checkpoint") or None
    if checkpoint is None or checkpoint.get("stage") not in TRAFFIC_STAGES:
        raise CannotResume(
            f"promotion {pid} ({state}) has no checkpoint of a traffic stage to resume from; "
            "`stagegate reconcile` rolls it back once its lease lapses"
        )
    return checkpoint


def _held_by_another(row: dict[str, Any], own: str) -> str | None:
    """Who holds the promotion's live lease, unless it is deferred, ours, expired, or its owner is gone."""
    owner = row.get("owner")
    if deferred_until(row) is not None or owner == own:
        return None
    expires = aware(row.get("lease_expires_at"))
    if expires is None or expires < datetime.now(UTC) or owner_alive(owner) is False:
        return None
    return str(owner)


def check_resumable(events: Any, promotion_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The promotion's ledger row and checkpoint, or CannotResume saying why it cannot be resumed now
    (reads the ledger only: `stagegate resume` calls it before Prefect starts)."""
    try:
        row = events.promotion(promotion_id)
    except KeyError:
        raise CannotResume(f"no promotion {promotion_id!r} in the ledger") from None
    checkpoint = _resumable(row)
    if (holder := _held_by_another(row, events.owner)) is not None:
        raise CannotResume(
            f"promotion {promotion_id} is held by a live process ({holder}) until "
            f"{aware(row['lease_expires_at']).isoformat(timespec='seconds')}: it is running, not waiting"
        )
    return row, checkpoint


@task(name="reopen-promotion", cache_policy=NO_CACHE)
def reopen_promotion(promotion_id: str) -> tuple[PromotionContext, dict[str, Any]]:
    """Check everything before anything moves, then take the lease over: the context and the checkpoint."""
    rt = runtime()
    row, checkpoint = check_resumable(rt.events, promotion_id)
    policy = Policy.model_validate(row["policy"])  # as it was when the promotion opened
    rt.build_ports(ports_for(policy))
    rt.registry.get_version(row["model"], row["version"])  # RegistryError if it was deleted meanwhile
    if not rt.events.take_over(row):
        raise CannotResume(f"promotion {promotion_id}: another process took its lease over first")
    where = f"step {checkpoint['step_index'] + 1}, {checkpoint['total_looks']} looks done"
    rt.events.transition(
        promotion_id, row["state"], f"resumed from the ledger at {checkpoint['stage']} ({where})"
    )
    get_run_logger().info("resuming %s at %s (%s)", promotion_id, checkpoint["stage"], where)
    ctx = PromotionContext(
        promotion_id=promotion_id,
        model=row["model"],
        version=row["version"],
        champion_version=row["champion_version"],
        policy=policy,
        policy_path=row["policy_path"] or "",
        mlflow_run_id=row["mlflow_run_id"] or "",
    )
    return ctx, checkpoint


@flow(name="resume-promotion", log_prints=True)
def resume_promotion(promotion_id: str) -> PromotionResult:
    """Continue promotion ``promotion_id`` from its ledger checkpoint (see the module docstring)."""
    ctx, checkpoint = reopen_promotion(promotion_id)
    return run_promotion(ctx, checkpoint)


def resume_outcome(promotion_id: str) -> str:
    """Resume a promotion in this process and return its outcome: the ``resume`` that
    stagegate.reconcile.reconcile calls for ``on_crash: resume`` (from the CLI and the reconcile flow)."""
    return resume_promotion(promotion_id=promotion_id).outcome
