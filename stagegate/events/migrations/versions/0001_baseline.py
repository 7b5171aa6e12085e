"""Baseline: the event store and ledger as ``create_schema`` built them before migrations.

Tables ``events``, ``promotions`` (with the lease columns and the checkpoint), ``transitions``,
``approver_tokens`` and ``verdicts``, their indexes, and the partial unique index over the open promotions
of a model (the arbiter of racing ``stagegate promote`` runs).

The same revision adopts a ledger the old code made (tables present, no version table): it creates the
tables that ledger lacks (``approver_tokens`` came later), checks that the tables it has carry every
column they always had (else :class:`~stagegate.events.migrate.ForeignTables`: nothing is changed), adds the
columns older versions lacked (the lease columns, ``checkpoint``) and the missing indexes. So every step is
"if not already there", and on an empty database it is a plain create. Later revisions assume this
schema and are ordinary, unconditional migrations.

The definitions are frozen here on purpose (not imported from stagegate.events.store): the model in
store.py moves on with later revisions, this revision must not.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stagegate.events.migrate import ForeignTables

revision: str = "0001_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The final states when this revision was written: the open-promotion index covers every other state.
TERMINAL = ("aborted", "promoted", "rejected", "rolled_back")
#: Columns of ``promotions`` added after the first ledgers were written (leases, then the checkpoint).
ADDED_COLUMNS = ("owner", "heartbeat_at", "lease_expires_at", "checkpoint")


def _tables() -> list[sa.Table]:
    meta = sa.MetaData()
    tz = sa.DateTime(timezone=True)
    return [
        sa.Table(
            "events",
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("promotion_id", sa.String(36)),
            sa.Column("stage", sa.String(16)),
            sa.Column("step", sa.Integer),
            sa.Column("request_id", sa.Integer),
            sa.Column("t", sa.Float),
            sa.Column("user_id", sa.Integer),
            sa.Column("user_segment", sa.Integer),
            sa.Column("device", sa.Integer),
            sa.Column("hour", sa.Integer),
            sa.Column("arm", sa.Integer),
            sa.Column("model_version", sa.String(32)),
            sa.Column("latency_ms", sa.Float),
            sa.Column("error", sa.Boolean),
            sa.Column("items", sa.Text),
            sa.Column("shadow_items", sa.Text, nullable=True),
            sa.Column("shadow_latency_ms", sa.Float, nullable=True),
            sa.Column("n_clicks", sa.Integer),
            sa.Column("n_purchases", sa.Integer),
            sa.Column("revenue", sa.Float),
            sa.Column("n_out_of_stock", sa.Integer),
            sa.Column("shadow_n_out_of_stock", sa.Integer, nullable=True),
            sa.Column("min_pscore", sa.Float),
        ),
        sa.Table(
            "promotions",
            meta,
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("model", sa.String(200), nullable=False),
            sa.Column("version", sa.String(32), nullable=False),
            sa.Column("policy_path", sa.Text),
            sa.Column("policy", sa.JSON),
            sa.Column("state", sa.String(32), nullable=False),
            sa.Column("stage", sa.String(16)),
            sa.Column("reason", sa.Text),
            sa.Column("champion_version", sa.String(32)),
            sa.Column("mlflow_run_id", sa.String(64)),
            sa.Column("flow_run_id", sa.String(64)),
            sa.Column("started_at", tz),
            sa.Column("updated_at", tz),
            sa.Column("owner", sa.String(200)),
            sa.Column("heartbeat_at", tz),
            sa.Column("lease_expires_at", tz),
            sa.Column("checkpoint", sa.JSON),
        ),
        sa.Table(
            "transitions",
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("promotion_id", sa.String(36), nullable=False),
            sa.Column("from_state", sa.String(32)),
            sa.Column("to_state", sa.String(32), nullable=False),
            sa.Column("reason", sa.Text),
            sa.Column("at", tz, nullable=False),
        ),
        sa.Table(
            "approver_tokens",
            meta,
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("salt", sa.String(64), nullable=False),
            sa.Column("digest", sa.String(128), nullable=False),
            sa.Column("issued_at", tz, nullable=False),
            sa.Column("revoked_at", tz),
        ),
        sa.Table(
            "verdicts",
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("promotion_id", sa.String(36), nullable=False),
            sa.Column("stage", sa.String(16), nullable=False),
            sa.Column("step", sa.Integer),
            sa.Column("look", sa.Integer),
            sa.Column("gate", sa.String(200), nullable=False),
            sa.Column("metric", sa.String(100)),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("action", sa.String(16)),
            sa.Column("statistic", sa.Float),
            sa.Column("threshold", sa.Float),
            sa.Column("ci_low", sa.Float),
            sa.Column("ci_high", sa.Float),
            sa.Column("n", sa.Integer),
            sa.Column("message", sa.Text),
            sa.Column("at", tz, nullable=False),
        ),
    ]


#: (name, table, columns): the plain indexes, as ``index=True`` named them.
INDEXES = (
    ("ix_events_promotion_id", "events", ["promotion_id"]),
    ("ix_events_stage", "events", ["stage"]),
    ("ix_events_user_id", "events", ["user_id"]),
    ("ix_transitions_promotion_id", "transitions", ["promotion_id"]),
    ("ix_verdicts_promotion_id", "verdicts", ["promotion_id"]),
)


def upgrade() -> None:
    """Create the baseline schema, or bring a ledger the old code made up to it (see the docstring)."""
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in _tables():
        if table.name not in present:
            op.create_table(table.name, *(c._copy() for c in table.columns))
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        lacking = [c.name for c in table.columns if c.name not in have and c.name not in ADDED_COLUMNS]
        if lacking:
            raise ForeignTables(f"its table {table.name!r} has no column(s) {', '.join(lacking)}")
        for column in table.columns:
            if column.name not in have:  # one of ADDED_COLUMNS: a ledger from before leases or checkpoints
                op.add_column(table.name, column._copy())
    for name, table_name, columns in INDEXES:
        op.create_index(name, table_name, columns, if_not_exists=True)
    open_only = sa.column("state").not_in(TERMINAL)
    op.create_index(  # fails with IntegrityError on an old ledger with two open promotions of a model
        "uq_promotions_open_model",
        "promotions",
        ["model"],
        unique=True,
        sqlite_where=open_only,
        postgresql_where=open_only,
        if_not_exists=True,
    )


def downgrade() -> None:
    """Drop everything: only for tests and for throwing a ledger away; the data goes with it."""
    for name, table_name, _ in INDEXES:
        op.drop_index(name, table_name=table_name)
    op.drop_index("uq_promotions_open_model", table_name="promotions")
    for table in reversed(_tables()):
        op.drop_table(table.name)
