"""A database schema kept by Alembic migrations, and the cheap check that opening a database runs.

Two schemas are kept so: the event store and ledger (stagegate/events/schema.py ``LEDGER``) and the
judge's state (stagegate/judge/state.py ``JUDGE_SCHEMA``), each with its own scripts and its own version
table, so that both can share one database. Opening either reads the recorded revision with one plain
query (:func:`recorded_revision`, through stagegate.events.migrate.ensure); only a database not at the
schema's head imports Alembic and upgrades, under the schema's lock, or refuses a newer database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import MetaData, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError


@dataclass(frozen=True)
class Schema:
    """One schema under migrations: what to call its database in messages, its scripts (env.py,
    script.py.mako, versions/), its version table, its newest revision (a test checks it is the scripts'
    head), the ``pg_advisory_xact_lock`` key its upgrades hold, its tables as the code models them, and
    what to say when an adopted database breaks one of its unique indexes."""

    what: str
    scripts: Path
    version_table: str
    head: str
    lock: int
    metadata: MetaData
    integrity_message: Callable[[Engine], str] | None = None


def recorded_revision(engine: Engine, schema: Schema) -> str | None:
    """The revision the database records for ``schema``, by one plain query (no Alembic); None without a
    version table (an empty database, or one made before migrations)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT version_num FROM {schema.version_table}")).scalars().all()
    except (OperationalError, ProgrammingError):  # no version table
        return None
    return rows[0] if len(rows) == 1 else None
