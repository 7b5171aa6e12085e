"""Alembic's environment for the event store and ledger (stagegate/events/migrate.py runs it).

Configured in code, no alembic.ini: :func:`stagegate.events.migrate.config` sets the script location and
passes the connection (``Config.attributes["connection"]``) on which the caller already holds the schema
lock and the transaction, so that the whole upgrade is one transaction under that lock. A config with only
``sqlalchemy.url`` (for ``alembic revision --autogenerate`` while writing a new revision) connects itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from stagegate.events.schema import VERSION_TABLE, metadata  # the ledger's (LEDGER)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
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
            "stagegate's migrations need a connection or sqlalchemy.url: run them with `stagegate db "
            "upgrade` (or stagegate.events.migrate.upgrade), which passes the connection"
        )
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
