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

The schema is made and changed by the Alembic migrations in stagegate/events/migrations
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
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from stagegate.ledger_states import (
    TERMINAL_STATES,
    IllegalTransition,
    PromotionState,
    check_transition,
)
from stagegate.logs import ServedBatch

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("promotion_id", String(36), index=True),
    Column("stage", String(16), index=True),
    Column("step", Integer),
    Column("request_id", Integer),
    Column("t", Float),
    Column("user_id", Integer, index=True),
    Column("user_segment", Integer),
    Column("device", Integer),
    Column("hour", Integer),
    Column("arm", Integer),
    Column("model_version", String(32)),
    Column("latency_ms", Float),
    Column("error", Boolean),
    Column("items", Text),
    Column("shadow_items", Text, nullable=True),
    Column("shadow_latency_ms", Float, nullable=True),
    Column("n_clicks", Integer),
    Column("n_purchases", Integer),
    Column("revenue", Float),
    Column("n_out_of_stock", Integer),
    Column("shadow_n_out_of_stock", Integer, nullable=True),
    Column("min_pscore", Float),
)

promotions = Table(
    "promotions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("version", String(32), nullable=False),
    Column("policy_path", Text),
    Column("policy", JSON),
    Column("state", String(32), nullable=False),
    Column("stage", String(16)),
    Column("reason", Text),
    Column("champion_version", String(32)),
    Column("mlflow_run_id", String(64)),
    Column("flow_run_id", String(64)),
    Column("started_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    # the lease (see the module docstring); NULL on rows written before leases existed
    Column("owner", String(200)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("lease_expires_at", DateTime(timezone=True)),
    # where a traffic stage's look loop stands (flows.stages.checkpoint), written after every step entered and
    # every look, so that `stagegate resume` continues from the ledger; "resume_at" set while deferred
    Column("checkpoint", JSON),
)
_TERMINAL = sorted(s.value for s in TERMINAL_STATES)
_OPEN = promotions.c.state.not_in(_TERMINAL)
#: At most one open promotion per model: the arbiter of racing `stagegate promote` runs.
Index(
    "uq_promotions_open_model",
    promotions.c.model,
    unique=True,
    sqlite_where=_OPEN,
    postgresql_where=_OPEN,
)
LEASE_COLUMNS = ("owner", "heartbeat_at", "lease_expires_at")

transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("promotion_id", String(36), index=True, nullable=False),
    Column("from_state", String(32)),
    Column("to_state", String(32), nullable=False),
    Column("reason", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)

#: Who may answer an approval point: one token per approver, kept only as a salted scrypt digest
#: (stagegate.identity); a row with ``revoked_at`` set proves nothing.
approver_tokens = Table(
    "approver_tokens",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("salt", String(64), nullable=False),
    Column("digest", String(128), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

verdicts = Table(
    "verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("promotion_id", String(36), index=True, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("step", Integer),
    Column("look", Integer),
    Column("gate", String(200), nullable=False),
    Column("metric", String(100)),
    Column("outcome", String(16), nullable=False),
    Column("action", String(16)),
    Column("statistic", Float),
    Column("threshold", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("n", Integer),
    Column("message", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)

__all__ = [
    "TERMINAL_STATES",
    "EventStore",
    "IllegalTransition",
    "PromotionInProgress",
    "lease_seconds",
    "owner_alive",
    "process_owner",
]

SCHEMA_LOCK = 0x53474C44  # pg_advisory_xact_lock key for schema changes ("SGLD"; the old create_schema's too)
#: The newest migration (stagegate/events/migrations/versions): a database recording it needs nothing, and
#: opening a store then costs one query. A new revision changes this; a test checks it is the scripts' head.
SCHEMA_HEAD = "0001_baseline"
#: Alembic's version table, named for stagegate so that it never meets MLflow's or Prefect's
#: ``alembic_version`` in a shared database.
VERSION_TABLE = "stagegate_alembic_version"


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


def schema_revision(engine: Engine) -> str | None:
    """The revision the database records, by one plain query (no Alembic); None without a version table."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    except (OperationalError, ProgrammingError):  # no version table: empty, or made before migrations
        return None
    return rows[0] if len(rows) == 1 else None


def ensure_schema(engine: Engine) -> None:
    """Make the database's schema the one this code uses: nothing but one query when it is at
    :data:`SCHEMA_HEAD`, else an upgrade (stagegate.events.migrate, which refuses a newer database)."""
    if schema_revision(engine) == SCHEMA_HEAD:
        return
    from stagegate.events.migrate import upgrade  # Alembic only when there is work (or a refusal) to do

    upgrade(engine)


def duplicates_message(engine: Engine) -> str:
    """What to do with a ledger written before the unique index, that has two open promotions of a model."""
    with engine.connect() as conn:
        rows = conn.execute(select(promotions.c.model, promotions.c.id).where(_OPEN)).all()
    by_model: dict[str, list[str]] = {}
    for model, pid in rows:
        by_model.setdefault(model, []).append(pid)
    twice = {m: ids for m, ids in by_model.items() if len(ids) > 1}
    return (
        f"the ledger at {engine.url.render_as_string(hide_password=True)} has more than one open promotion "
        f"of a model ({twice}), which the one-open-promotion index forbids: set all but one of each to "
        "state 'aborted' (UPDATE promotions SET state = 'aborted' WHERE id = ...), then run "
        "`stagegate reconcile`"
    )


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
