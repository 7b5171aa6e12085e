"""Judge baseline: ``judge_rollouts`` and ``judge_looks`` as ``metadata.create_all`` made them before
migrations.

Like the ledger's baseline, it also adopts a state database the old code made (tables present, no version
table): it creates a missing table, checks that the tables present carry every column they always had
(else :class:`~stagegate.events.migrate.ForeignTables`, nothing changed), and adds
``judge_rollouts.first_step_opened``, which came after the first judge (create_all never added it;
added NOT NULL with a server default false so that existing rows get a value). The definitions are frozen
here, not imported from stagegate.judge.state.

Revision ID: 0001_judge_baseline
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stagegate.events.migrate import ForeignTables

revision: str = "0001_judge_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADDED_COLUMNS = ("first_step_opened",)


def _tables() -> list[sa.Table]:
    meta = sa.MetaData()
    tz = sa.DateTime(timezone=True)
    return [
        sa.Table(
            "judge_rollouts",
            meta,
            sa.Column("key", sa.String(300), primary_key=True),
            sa.Column("revision", sa.String(200), nullable=False),
            sa.Column("error_streaks", sa.JSON, nullable=False),
            sa.Column("last_error_end", tz),
            sa.Column("first_step_opened", sa.Boolean, nullable=False),
            sa.Column("created_at", tz, nullable=False),
            sa.Column("updated_at", tz, nullable=False),
        ),
        sa.Table(
            "judge_looks",
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("rollout", sa.String(300), nullable=False),
            sa.Column("revision", sa.String(200), nullable=False),
            sa.Column("number", sa.Integer, nullable=False),
            sa.Column("step", sa.Integer),
            sa.Column("window_start", tz),
            sa.Column("window_end", tz, nullable=False),
            sa.Column("n_requests", sa.Integer, nullable=False),
            sa.Column("allocation", sa.JSON, nullable=False),
            sa.Column("evidence", sa.LargeBinary, nullable=False),
            sa.Column("answer", sa.JSON, nullable=False),
            sa.Column("created_at", tz, nullable=False),
            sa.UniqueConstraint("rollout", "revision", "number", name="uq_judge_look"),
        ),
    ]


def upgrade() -> None:
    """Create the judge's tables, or bring a state database the old code made up to them."""
    inspector = sa.inspect(op.get_bind())
    present = set(inspector.get_table_names())
    for table in _tables():
        if table.name not in present:
            op.create_table(
                table.name,
                *(c._copy() for c in table.columns),
                *(
                    sa.UniqueConstraint(*c.columns.keys(), name=c.name)
                    for c in table.constraints
                    if isinstance(c, sa.UniqueConstraint)
                ),
            )
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        lacking = [c.name for c in table.columns if c.name not in have and c.name not in ADDED_COLUMNS]
        if lacking:
            raise ForeignTables(f"its table {table.name!r} has no column(s) {', '.join(lacking)}")
        for column in table.columns:
            if column.name not in have:  # first_step_opened: the old rows have not opened their first step
                op.add_column(
                    table.name, sa.Column(column.name, column.type, nullable=False, server_default=sa.false())
                )
    op.create_index("ix_judge_looks_rollout", "judge_looks", ["rollout"], if_not_exists=True)


def downgrade() -> None:
    """Drop the judge's tables (tests; throwing a judge's memory away)."""
    op.drop_index("ix_judge_looks_rollout", table_name="judge_looks")
    op.drop_table("judge_looks")
    op.drop_table("judge_rollouts")
