"""The event store and the promotion ledger, behind one SQLAlchemy URL (SQLite file or PostgreSQL).

- ``events``: one row per served request (who, when, which arm and model version, latency, error, the
  slate, clicks, purchases, revenue, the propensities of what was shown).
- ``promotions``, ``transitions``, ``verdicts``: the promotion ledger. Every state change and every gate
  verdict is written here *before* the pipeline acts on it, so a crashed run can be reconciled.

Three guarantees the database itself keeps, whatever the number of processes:

- **One open promotion per model.** A partial unique index over ``promotions(model)`` where the state is
  not final: of many racing ``open_promotion`` calls exactly one inserts, the others get
  :class:`PromotionInProgress` naming the open one.
- **A lease.** The open promotion has an ``owner`` (host, pid, process start), a ``heartbeat_at`` and a
  ``lease_expires_at``; the owner renews it (:meth:`EventStore.heartbeat`, and every transition and look).
  A promotion whose lease expired, or whose owner process is gone, is taken over by ``stagegate
  reconcile`` (:meth:`EventStore.take_over`, a compare-and-swap on the lease it saw).
- **Legal moves only.** :meth:`EventStore.transition` checks :mod:`stagegate.ledger_states`'s table and
  writes with a compare-and-swap on the state it read, so two writers never both move one promotion.

The tables are defined in stagegate/events/schema.py and re-exported here. The schema is made and
changed by the Alembic migrations in stagegate/events/migrations
(stagegate/events/migrate.py, docs/operations.md "Schema changes"). Opening a store reads the recorded
revision with one query; only a database not at :data:`SCHEMA_HEAD` imports Alembic and upgrades, under a
transaction-level advisory lock on PostgreSQL (``BEGIN IMMEDIATE`` on SQLite), so processes opening a fresh
database at once do not race. A database written by newer stagegate is refused. Every connection has
bounded timeouts (connect, statement, lock, pool), so an unreachable store fails fast instead of hanging a
rollback.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from stagegate.events.migrate import ensure
from stagegate.events.schema import (  # the tables, re-exported: callers import them from here
    LEASE_COLUMNS,
    LEDGER,
    OPEN,
    SCHEMA_HEAD,
    SCHEMA_LOCK,
    VERSION_TABLE,
    approver_tokens,
    duplicates_message,
    events,
    metadata,
    promotions,
    schema_revision,
    transitions,
    verdicts,
)
from stagegate.ledger_states import (
    TERMINAL_STATES,
    IllegalTransition,
    PromotionState,
    check_transition,
)
from stagegate.logs import ServedBatch

_OPEN = OPEN
__all__ = [
    "LEASE_COLUMNS",
    "SCHEMA_HEAD",
    "SCHEMA_LOCK",
    "TERMINAL_STATES",
    "VERSION_TABLE",
    "EventStore",
    "IllegalTransition",
    "PromotionInProgress",
    "approver_tokens",
    "duplicates_message",
    "events",
    "lease_seconds",
    "metadata",
    "owner_alive",
    "process_owner",
    "promotions",
    "schema_revision",
    "transitions",
    "verdicts",
]


class PromotionInProgress(RuntimeError):
    """Another promotion of the model is open (the message names it, its owner and its lease)."""

    def __init__(self, message: str, open_promotion: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.open_promotion = open_promotion


def _now() -> datetime:
    return datetime.now(UTC)


def aware(at: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; every timestamp here is written in UTC."""
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)


def lease_seconds() -> float:
    """How long a lease lasts without a heartbeat: ``STAGEGATE_LEASE_SECONDS`` (default 120 s)."""
    return float(os.environ.get("STAGEGATE_LEASE_SECONDS", "120"))


def db_timeout() -> float:
    """Seconds any one database call may take: ``STAGEGATE_DB_TIMEOUT`` (default 30 s)."""
    return float(os.environ.get("STAGEGATE_DB_TIMEOUT", "30"))


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from its owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def process_owner() -> str:
    """This process as a lease owner: ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def owner_alive(owner: str | None) -> bool | None:
    """False when ``owner`` is a process of this host that is gone; None when this host cannot tell."""
    if not owner or owner.count(":") < 2:
        return None
    host, pid_text, start = owner.rsplit(":", 2)
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    # a pid reused by another process has another start time
    return not (start and _process_start(pid) not in ("", start))


def store_engine(url: str) -> Engine:
    """An engine for the store at ``url`` with bounded timeouts (connect, statement, lock, pool)."""
    timeout = db_timeout()
    kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": timeout}
    elif url.startswith("postgresql"):
        ms = int(timeout * 1000)
        kwargs["pool_timeout"] = timeout
        kwargs["connect_args"] = {
            "connect_timeout": max(1, int(min(timeout, 10))),
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        }
    return create_engine(url, **kwargs)


def ensure_schema(engine: Engine) -> None:
    """Make the database's schema the one this code uses: nothing but one query when it is at
    :data:`SCHEMA_HEAD`, else an upgrade (stagegate.events.migrate, which refuses a newer database)."""
    ensure(engine, LEDGER, timeout=db_timeout())


def deferred_until(row: Mapping[str, Any], now: datetime | None = None) -> datetime | None:
    """When a deferred promotion's next look is due, if it is deferred and its lease still runs, else None.

    A deferred promotion has no process (its run ended, to be resumed at ``resume_at``): a dead owner is
    expected then, so only the lease, which runs until the look is due plus the usual lease time, says
    whether it was abandoned."""
    resume_at = (row.get("checkpoint") or {}).get("resume_at")
    expires = aware(row.get("lease_expires_at"))
    if not resume_at or expires is None or expires < (now or _now()):
        return None
    return datetime.fromisoformat(resume_at)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


class EventStore:
    """The event store and ledger at ``url``; ``owner`` is who this process is as a lease holder."""

    def __init__(self, url: str, owner: str | None = None) -> None:
        self.url = url
        self.owner = owner or process_owner()
        self.engine: Engine = store_engine(url)
        ensure_schema(self.engine)

    def __repr__(self) -> str:  # never the password
        return f"EventStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- events ---------------------------------------------------------------------------------------
    def append_batch(
        self,
        batch: ServedBatch,
        *,
        promotion_id: str,
        stage: str,
        step: int,
        versions: tuple[str | None, str | None],
    ) -> int:
        """Write one row per request of ``batch``; returns the number of rows."""
        ctx = batch.context
        in_stock = ctx.in_stock
        oos = (~in_stock[batch.items]).sum(axis=1)
        frame = pd.DataFrame(
            {
                "promotion_id": promotion_id,
                "stage": stage,
                "step": step,
                "request_id": ctx.request_id.astype(np.int64),
                "t": ctx.t.astype(float),
                "user_id": ctx.user_id.astype(np.int64),
                "user_segment": ctx.user_segment.astype(int),
                "device": ctx.device.astype(int),
                "hour": ctx.hour.astype(int),
                "arm": batch.arm.astype(int),
                "model_version": np.where(batch.arm == 1, versions[1] or "", versions[0] or ""),
                "latency_ms": batch.latency_ms.astype(float),
                "error": batch.error.astype(bool),
                "items": [json.dumps(row) for row in batch.items.tolist()],
                "n_clicks": batch.clicks.sum(axis=1).astype(int),
                "n_purchases": batch.purchases.sum(axis=1).astype(int),
                "revenue": batch.revenue.astype(float),
                "n_out_of_stock": oos.astype(int),
                "min_pscore": batch.pscore.min(axis=1).astype(float),
            }
        )
        if batch.shadow_items is not None:
            frame["shadow_items"] = [json.dumps(row) for row in batch.shadow_items.tolist()]
            frame["shadow_n_out_of_stock"] = (~in_stock[batch.shadow_items]).sum(axis=1).astype(int)
            shadow_latency = getattr(batch, "shadow_latency_ms", None)
            if shadow_latency is not None:
                frame["shadow_latency_ms"] = np.asarray(shadow_latency, dtype=float)
        with self.engine.begin() as conn:
            conn.execute(insert(events), frame.to_dict(orient="records"))
        return len(frame)

    def load_events(self, promotion_id: str, stage: str, step: int | None = None) -> pd.DataFrame:
        query = select(events).where(events.c.promotion_id == promotion_id, events.c.stage == stage)
        if step is not None:
            query = query.where(events.c.step == step)
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    # -- promotion ledger --------------------------------------------------------------------------------
    def open_promotion(
        self,
        *,
        model: str,
        version: str,
        policy_path: str,
        policy: Mapping[str, Any],
        champion_version: str | None,
        flow_run_id: str | None = None,
        lease_for: float | None = None,
    ) -> str:
        """Open a promotion and take its lease, atomically; :class:`PromotionInProgress` if one is open."""
        promotion_id = str(uuid.uuid4())
        now = _now()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(promotions).values(
                        id=promotion_id,
                        model=model,
                        version=version,
                        policy_path=policy_path,
                        policy=dict(policy),
                        state=PromotionState.REGISTERED.value,
                        stage=None,
                        champion_version=champion_version,
                        flow_run_id=flow_run_id,
                        started_at=now,
                        updated_at=now,
                        owner=self.owner,
                        heartbeat_at=now,
                        lease_expires_at=now + timedelta(seconds=lease_for or lease_seconds()),
                    )
                )
                conn.execute(
                    insert(transitions).values(
                        promotion_id=promotion_id,
                        from_state=None,
                        to_state=PromotionState.REGISTERED.value,
                        reason=f"promotion opened by {self.owner}",
                        at=now,
                    )
                )
        except IntegrityError:
            raise self._in_progress(model) from None
        return promotion_id

    def _in_progress(self, model: str) -> PromotionInProgress:
        open_ones = self.promotions(model, open_only=True)
        if not open_ones:  # the other one closed in between: say so rather than guess
            return PromotionInProgress(f"another promotion of {model!r} was opened at the same time")
        row = open_ones[0]
        expires = aware(row.get("lease_expires_at"))
        if expires is None or expires < _now() or owner_alive(row.get("owner")) is False:
            hint = "its lease has expired: `stagegate reconcile` rolls it back"
        else:
            hint = f"its lease runs until {expires.isoformat(timespec='seconds')} unless renewed"
        return PromotionInProgress(
            f"promotion {row['id']} of {model!r} (version {row['version']}) is still in progress "
            f"({row['state']}, owner {row.get('owner') or 'unknown'}); one promotion per model at a time, "
            f"and {hint}",
            open_promotion=row,
        )

    def set_mlflow_run(self, promotion_id: str, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(promotions).where(promotions.c.id == promotion_id).values(mlflow_run_id=run_id)
            )

    def _renew(self, conn: Connection, promotion_id: str, now: datetime, lease_for: float | None) -> int:
        """Renew the lease if this process holds it and the promotion is open; returns rows changed."""
        return conn.execute(
            update(promotions)
            .where(promotions.c.id == promotion_id, promotions.c.owner == self.owner, _OPEN)
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_for or lease_seconds()))
        ).rowcount

    def heartbeat(self, promotion_id: str, lease_for: float | None = None) -> bool:
        """Renew this process's lease on an open promotion; False if it ended or another owner has it."""
        with self.engine.begin() as conn:
            return self._renew(conn, promotion_id, _now(), lease_for) == 1

    def take_over(self, row: Mapping[str, Any], lease_for: float | None = None) -> bool:
        """Become the owner of ``row`` (a promotion as read), if its lease is still the one read.

        A compare-and-swap on (owner, lease_expires_at): if the old owner renewed in the meantime, or
        another reconciler took over first, nothing changes and the answer is False.
        """
        now = _now()
        seen_owner, seen_expiry = row.get("owner"), row.get("lease_expires_at")
        where = [promotions.c.id == row["id"], _OPEN]
        where.append(promotions.c.owner.is_(None) if seen_owner is None else promotions.c.owner == seen_owner)
        where.append(
            promotions.c.lease_expires_at.is_(None)
            if seen_expiry is None
            else promotions.c.lease_expires_at == seen_expiry
        )
        with self.engine.begin() as conn:
            done = conn.execute(
                update(promotions)
                .where(*where)
                .values(
                    owner=self.owner,
                    heartbeat_at=now,
                    lease_expires_at=now + timedelta(seconds=lease_for or lease_seconds()),
                )
            ).rowcount
        return done == 1

    def expired_leases(self, model: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
        """Open promotions whose lease has expired, whose owner is a dead process here, or with no lease."""
        now = now or _now()
        query = select(promotions).where(_OPEN).order_by(promotions.c.started_at)
        if model:
            query = query.where(promotions.c.model == model)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        out = []
        for row in rows:
            expires = aware(row.get("lease_expires_at"))
            if deferred_until(row, now) is not None:
                continue  # deferred: nobody runs it until its look is due, and its lease says until when
            if expires is None or expires < now or owner_alive(row.get("owner")) is False:
                out.append(row)
        return out

    def transition(
        self, promotion_id: str, to_state: str, reason: str, stage: str | None = None, *, attempts: int = 5
    ) -> None:
        """Record a legal state change (:mod:`stagegate.ledger_states`), or raise
        :class:`~stagegate.ledger_states.IllegalTransition`. A compare-and-swap on the state read, so
        that two writers (the flow and the guardrail monitor) never both move from the same state."""
        for _ in range(attempts):
            now = _now()
            with self.engine.begin() as conn:
                row = (
                    conn.execute(
                        select(promotions.c.state, promotions.c.stage).where(promotions.c.id == promotion_id)
                    )
                    .mappings()
                    .one_or_none()
                )
                if row is None:
                    raise KeyError(f"no promotion {promotion_id!r} in the ledger")
                current = row["state"]
                target = check_transition(promotion_id, current, to_state, row["stage"])
                values: dict[str, Any] = {"state": target.value, "reason": reason, "updated_at": now}
                if stage is not None:
                    values["stage"] = stage
                moved = conn.execute(
                    update(promotions)
                    .where(promotions.c.id == promotion_id, promotions.c.state == current)
                    .values(**values)
                ).rowcount
                if moved != 1:
                    continue  # someone else moved it: read again and re-check
                conn.execute(
                    insert(transitions).values(
                        promotion_id=promotion_id,
                        from_state=current,
                        to_state=target.value,
                        reason=reason,
                        at=now,
                    )
                )
                self._renew(conn, promotion_id, now, None)
                return
        raise RuntimeError(f"promotion {promotion_id}: the state kept changing under {to_state!r}")

    def record_verdicts(
        self, promotion_id: str, stage: str, step: int, look: int, rows: Iterable[tuple[Any, str | None]]
    ) -> None:
        """Persist (verdict, action) pairs for one look."""
        now = _now()
        records = [
            {
                "promotion_id": promotion_id,
                "stage": stage,
                "step": step,
                "look": look,
                "gate": v.gate,
                "metric": v.metric,
                "outcome": v.outcome.value,
                "action": action,
                "statistic": _finite(v.statistic),
                "threshold": _finite(v.threshold),
                "ci_low": _finite(v.ci_low),
                "ci_high": _finite(v.ci_high),
                "n": int(v.n),
                "message": v.message,
                "at": now,
            }
            for v, action in rows
        ]
        if records:
            with self.engine.begin() as conn:
                conn.execute(insert(verdicts), records)
                self._renew(conn, promotion_id, now, None)  # a look is a heartbeat

    def save_checkpoint(self, promotion_id: str, checkpoint: Mapping[str, Any]) -> None:
        """Record where the promotion's look loop stands (JSON); a heartbeat too."""
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(
                update(promotions)
                .where(promotions.c.id == promotion_id)
                .values(checkpoint=dict(checkpoint), updated_at=now)
            )
            self._renew(conn, promotion_id, now, None)

    def promotion(self, promotion_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(promotions).where(promotions.c.id == promotion_id))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise KeyError(f"no promotion {promotion_id!r}")
        return dict(row)

    def promotions(self, model: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        query = select(promotions).order_by(promotions.c.started_at)
        if model:
            query = query.where(promotions.c.model == model)
        if open_only:
            query = query.where(_OPEN)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def transitions(self, promotion_id: str) -> list[dict[str, Any]]:
        query = (
            select(transitions).where(transitions.c.promotion_id == promotion_id).order_by(transitions.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def verdicts(self, promotion_id: str, stage: str | None = None) -> pd.DataFrame:
        query = select(verdicts).where(verdicts.c.promotion_id == promotion_id).order_by(verdicts.c.id)
        if stage:
            query = query.where(verdicts.c.stage == stage)
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def count_events(self, promotion_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(events).where(events.c.promotion_id == promotion_id)
                ).scalar_one()
            )
