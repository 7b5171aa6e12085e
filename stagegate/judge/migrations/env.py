"""Alembic's environment for the judge's state (stagegate.events.migrate runs it with
stagegate.judge.state.JUDGE_SCHEMA): configured in code, run on the connection the caller passes
(``Config.attributes["connection"]``), inside its transaction and under its lock; its own version table,
so the judge's tables can sit beside the ledger's in one database."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from stagegate.judge.state import JUDGE_SCHEMA


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=JUDGE_SCHEMA.metadata,
        version_table=JUDGE_SCHEMA.version_table,
        compare_type=True,
        # the ledger's tables may share the database: autogenerate looks at the judge's only
        include_name=lambda name, kind, _parent: kind != "table" or name in JUDGE_SCHEMA.metadata.tables,
    )
    with context.begin_transaction():  # a no-op inside the caller's transaction
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "the judge's migrations need a connection or sqlalchemy.url (JudgeState passes one)"
        )
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
