"""The ledger's tables and the schema revision they make: the model stagegate.events.store reads and writes
through, and what stagegate.events.migrate checks a database against. No Alembic here: opening a store
at :data:`SCHEMA_HEAD` costs :func:`schema_revision`'s one query and nothing else.

The tables as written here must be the schema the migrations under stagegate/events/migrations leave
at their head (tests/core/test_migrations.py compares them): a change here needs a new revision, and
:data:`SCHEMA_HEAD` moved to it.
"""

from __future__ import annotations

from pathlib import Path

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
    select,
)
from sqlalchemy.engine import Engine

from stagegate.ledger_states import TERMINAL_STATES
from stagegate.schema_version import Schema, recorded_revision

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
TERMINAL = sorted(s.value for s in TERMINAL_STATES)
OPEN = promotions.c.state.not_in(TERMINAL)
#: At most one open promotion per model: the arbiter of racing `stagegate promote` runs.
Index(
    "uq_promotions_open_model",
    promotions.c.model,
    unique=True,
    sqlite_where=OPEN,
    postgresql_where=OPEN,
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

SCHEMA_LOCK = 0x53474C44  # pg_advisory_xact_lock key for schema changes ("SGLD"; the old create_schema's too)
#: The newest migration (stagegate/events/migrations/versions): a database recording it needs nothing, and
#: opening a store then costs one query. A new revision changes this; a test checks it is the scripts' head.
SCHEMA_HEAD = "0001_baseline"
#: Alembic's version table, named for stagegate so that it never meets MLflow's or Prefect's
#: ``alembic_version`` in a shared database.
VERSION_TABLE = "stagegate_alembic_version"


def schema_revision(engine: Engine) -> str | None:
    """The ledger revision the database records, by one plain query (no Alembic); None without one."""
    return recorded_revision(engine, LEDGER)


def duplicates_message(engine: Engine) -> str:
    """What to do with a ledger written before the unique index, that has two open promotions of a model."""
    with engine.connect() as conn:
        rows = conn.execute(select(promotions.c.model, promotions.c.id).where(OPEN)).all()
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


#: The ledger's schema under migrations (stagegate/events/migrations).
LEDGER = Schema(
    what="ledger",
    scripts=Path(__file__).with_name("migrations"),
    version_table=VERSION_TABLE,
    head=SCHEMA_HEAD,
    lock=SCHEMA_LOCK,
    metadata=metadata,
    integrity_message=duplicates_message,
)
