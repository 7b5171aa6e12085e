"""The judge's memory: per rollout, every look it counted, with the evidence that look measured.

Sequential gates recompute their statistics from all earlier looks (``Evidence.history``), so the judge keeps
each counted look's per-user evidence (numpy arrays, stored as one ``.npz`` blob) beside the
answer it gave. A judge that restarts reads them back and continues on the same look count, with the same
e-values and boundaries, instead of starting the rollout's evidence over (which would spend the error
budget again).

Tables (SQLAlchemy Core; SQLite file or PostgreSQL by URL):

- ``judge_rollouts``: one row per rollout key (``argo:<namespace>/<rollout>``,
  ``flagger:<namespace>/<canary>``): the revision being judged (Argo's pod-template hash, Flagger's
  checksum; a new revision starts a new canary with no looks), the consecutive-error counts per gate, and
  the window end of the last failed measurement (so a retried failure is not counted twice).
- ``judge_looks``: one row per counted look: its number, window, request count, traffic allocation,
  evidence blob and the JSON answer. ``(rollout, revision, number)`` is unique, so two judges (or two
  requests) racing to record the same look cannot both count it: the loser reads the winner's row.

The schema is kept by Alembic migrations (stagegate/judge/migrations, :data:`JUDGE_SCHEMA`), as the
ledger's is: opening the state reads the recorded revision with one query and upgrades only when it is
not :data:`JUDGE_HEAD`; a state database made before migrations is adopted, one written by newer stagegate
refused.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from stagegate.events.migrate import ensure
from stagegate.evidence import ArmSample, Evidence
from stagegate.schema_version import Schema

metadata = MetaData()

rollouts = Table(
    "judge_rollouts",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("revision", String(200), nullable=False),
    Column("error_streaks", JSON, nullable=False),
    Column("last_error_end", DateTime(timezone=True)),
    # Flagger asks confirm-traffic-increase before the canary's first step too, when there is no canary
    # traffic to measure: that one increase is let through once per revision (docs/adapters/argo-flagger.md)
    Column("first_step_opened", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

looks = Table(
    "judge_looks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", String(300), nullable=False, index=True),
    Column("revision", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("step", Integer),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("n_requests", Integer, nullable=False),
    Column("allocation", JSON, nullable=False),
    Column("evidence", LargeBinary, nullable=False),
    Column("answer", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("rollout", "revision", "number", name="uq_judge_look"),
)

#: The newest of the judge's migrations (stagegate/judge/migrations/versions); tests/judge/test_state.py
#: checks it is the scripts' head.
JUDGE_HEAD = "0001_judge_baseline"
#: The judge's tables under migrations: its own version table and lock, so that they can share a database
#: with the ledger (stagegate/events/schema.py LEDGER), as on the stack.
JUDGE_SCHEMA = Schema(
    what="judge state",
    scripts=Path(__file__).with_name("migrations"),
    version_table="stagegate_judge_alembic_version",
    head=JUDGE_HEAD,
    lock=0x53474A44,  # pg_advisory_xact_lock key ("SGJD")
    metadata=metadata,
)


def _aware(when: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written as UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


# -- evidence <-> bytes ------------------------------------------------------------------------------------

_KINDS = ("metrics", "segments", "requests", "pre_period")


def pack_arms(arms: Mapping[str, ArmSample]) -> bytes:
    """Every array of every arm in one npz (keys ``arm/kind/name``, ``arm/user_ids``)."""
    arrays: dict[str, np.ndarray] = {}
    for arm, sample in arms.items():
        if "/" in arm:
            raise ValueError(f"arm name {arm!r} may not contain '/'")
        arrays[f"{arm}/user_ids"] = np.asarray(sample.user_ids)
        for kind in _KINDS:
            for name, values in getattr(sample, kind).items():
                arrays[f"{arm}/{kind}/{name}"] = np.asarray(values)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # uncompressed: read back at every look
    return buffer.getvalue()


def unpack_arms(blob: bytes) -> dict[str, ArmSample]:
    """The inverse of :func:`pack_arms` (no pickles: ``allow_pickle=False``)."""
    parts: dict[str, dict[str, Any]] = {}
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        for key in data.files:
            arm, _, rest = key.partition("/")
            entry = parts.setdefault(arm, {"user_ids": None, **{k: {} for k in _KINDS}})
            if rest == "user_ids":
                entry["user_ids"] = data[key]
            else:
                kind, _, name = rest.partition("/")
                entry[kind][name] = data[key]
    return {arm: ArmSample(**entry) for arm, entry in parts.items()}


# -- records -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredLook:
    """One counted look, as recorded."""

    number: int
    step: int | None
    window_start: datetime | None
    window_end: datetime
    n_requests: int
    allocation: dict[str, float]
    evidence_blob: bytes
    answer: dict[str, Any]

    def evidence(self, stage: str) -> Evidence:
        """The look's evidence as the gates saw it (for ``Evidence.history``)."""
        return Evidence(
            stage=stage,
            arms=unpack_arms(self.evidence_blob),
            allocation=dict(self.allocation),
            look=self.number,
        )


@dataclass
class RolloutState:
    """What the judge knows about one rollout's current revision."""

    key: str
    revision: str
    error_streaks: dict[str, int] = field(default_factory=dict)
    last_error_end: datetime | None = None
    looks: list[StoredLook] = field(default_factory=list)

    @property
    def last(self) -> StoredLook | None:
        return self.looks[-1] if self.looks else None


class LookConflict(RuntimeError):
    """Another request recorded this look number first."""


class JudgeState:
    """The state database behind ``url`` (``sqlite:///path.db`` or ``postgresql+psycopg://...``)."""

    def __init__(self, url: str) -> None:
        kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        elif url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": 10}
        self.engine: Engine = create_engine(url, **kwargs)
        ensure(self.engine, JUDGE_SCHEMA, timeout=30)  # one query when at JUDGE_HEAD, else an upgrade

    def __repr__(self) -> str:  # never the password
        return f"JudgeState({self.engine.url.render_as_string(hide_password=True)!r})"

    def load(self, key: str, revision: str, now: datetime) -> RolloutState:
        """The rollout's state for ``revision``; a rollout seen for the first time, or on a new revision
        (a new canary), starts with no looks and no errors."""
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.key == key)).mappings().first()
        if row is None:
            # Its own transaction: on PostgreSQL a failed statement aborts the transaction it is in.
            with contextlib.suppress(IntegrityError), self.engine.begin() as conn:
                conn.execute(
                    insert(rollouts).values(
                        key=key,
                        revision=revision,
                        error_streaks={},
                        first_step_opened=False,
                        created_at=now,
                        updated_at=now,
                    )
                )  # IntegrityError: a concurrent first call inserted it, with no looks yet either
            return RolloutState(key, revision)
        with self.engine.begin() as conn:
            if row["revision"] != revision:
                conn.execute(
                    update(rollouts)
                    .where(rollouts.c.key == key)
                    .values(
                        revision=revision,
                        error_streaks={},
                        last_error_end=None,
                        first_step_opened=False,
                        updated_at=now,
                    )
                )
                # Back on a revision judged before (a retried canary): it starts over, not from old looks.
                conn.execute(delete(looks).where(looks.c.rollout == key, looks.c.revision == revision))
                return RolloutState(key, revision)
            stored = conn.execute(
                select(looks)
                .where(looks.c.rollout == key, looks.c.revision == revision)
                .order_by(looks.c.number)
            ).mappings()
            history = [
                StoredLook(
                    number=r["number"],
                    step=r["step"],
                    window_start=_aware(r["window_start"]),
                    window_end=_aware(r["window_end"]),  # type: ignore[arg-type]
                    n_requests=r["n_requests"],
                    allocation=dict(r["allocation"]),
                    evidence_blob=bytes(r["evidence"]),
                    answer=_json(r["answer"]),
                )
                for r in stored
            ]
            return RolloutState(
                key,
                revision,
                error_streaks={k: int(v) for k, v in dict(row["error_streaks"]).items()},
                last_error_end=_aware(row["last_error_end"]),
                looks=history,
            )

    def record_look(self, state: RolloutState, look: StoredLook, error_streaks: Mapping[str, int]) -> None:
        """Count ``look``; raises LookConflict if its number was taken meanwhile."""
        now = datetime.now(UTC)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(looks).values(
                        rollout=state.key,
                        revision=state.revision,
                        number=look.number,
                        step=look.step,
                        window_start=look.window_start,
                        window_end=look.window_end,
                        n_requests=look.n_requests,
                        allocation=dict(look.allocation),
                        evidence=look.evidence_blob,
                        answer=look.answer,
                        created_at=now,
                    )
                )
                conn.execute(
                    update(rollouts)
                    .where(rollouts.c.key == state.key)
                    .values(error_streaks=dict(error_streaks), last_error_end=None, updated_at=now)
                )
        except IntegrityError as exc:
            raise LookConflict(f"look {look.number} of {state.key} was recorded by another request") from exc

    def record_error(
        self, state: RolloutState, error_streaks: Mapping[str, int], window_end: datetime
    ) -> None:
        """Remember a failed measurement: the error counts, and the window it failed on."""
        with self.engine.begin() as conn:
            conn.execute(
                update(rollouts)
                .where(rollouts.c.key == state.key)
                .values(
                    error_streaks=dict(error_streaks),
                    last_error_end=window_end,
                    updated_at=datetime.now(UTC),
                )
            )

    def open_first_step(self, key: str, revision: str) -> bool:
        """True exactly once per rollout revision (an atomic compare-and-set): the unmeasured first traffic
        increase may go ahead. Every later call, from any judge process, gets False."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(rollouts)
                .where(
                    rollouts.c.key == key,
                    rollouts.c.revision == revision,
                    rollouts.c.first_step_opened.is_(False),
                )
                .values(first_step_opened=True, updated_at=datetime.now(UTC))
            )
            return result.rowcount == 1

    def dispose(self) -> None:
        self.engine.dispose()


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)
