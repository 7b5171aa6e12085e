"""Schema changes of the event store and ledger, by the Alembic migrations in stagegate/events/migrations.

:class:`~stagegate.events.store.EventStore` calls :func:`upgrade` only when its one-query check finds the
database not at :data:`~stagegate.events.store.SCHEMA_HEAD` (so this module, and Alembic, are imported
only then); ``stagegate db upgrade`` calls it on purpose. One upgrade is one transaction holding the schema
lock: ``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` (the file's write lock) on SQLite.
Processes that open a fresh database together queue on the lock; each one reads the revision again under
it, and all but the first find the work done.

What the database holds decides what happens:

- nothing: the revisions run from the baseline up;
- the tables of a ledger made before migrations, no version table: adopted. The baseline revision checks
  the columns those tables always had (:class:`NotALedger` if one is missing), adds what older versions
  lacked and records the baseline, then the later revisions run; no row is touched;
- a revision this code knows: the revisions after it run;
- a revision this code does not know (written by newer stagegate): :class:`SchemaTooNew`, nothing written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from stagegate.events.schema import SCHEMA_HEAD, SCHEMA_LOCK, VERSION_TABLE, duplicates_message, metadata

log = logging.getLogger(__name__)

#: The migration environment shipped in the package (env.py, script.py.mako, versions/).
MIGRATIONS = Path(__file__).with_name("migrations")
#: The first revision: the schema as it was before migrations (an adopted ledger is brought to it).
BASELINE = "0001_baseline"


class SchemaTooNew(RuntimeError):
    """The database is at a revision this code does not know: newer stagegate wrote it."""


class NotALedger(RuntimeError):
    """A database with the ledger's tables that lack columns the ledger always had."""


@dataclass(frozen=True)
class Upgraded:
    """What :func:`upgrade` found and left: the revision before (None: no version table) and after."""

    database: str
    before: str | None
    after: str
    adopted: bool  # a ledger made before migrations, recorded at the baseline first

    def describe(self) -> str:
        if self.before == self.after:
            return f"{self.database}: at {self.after} (head), nothing to do"
        if self.adopted:
            return f"{self.database}: adopted a ledger made before migrations, now at {self.after} (head)"
        return f"{self.database}: upgraded from {self.before or 'an empty database'} to {self.after} (head)"


def config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config made in code (no alembic.ini): the packaged scripts, and the connection the
    migrations run on (or, to write a new revision with autogenerate, a URL)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_head() -> str:
    """The head revision of the packaged scripts (what :data:`SCHEMA_HEAD` must say)."""
    head = ScriptDirectory.from_config(config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts under {MIGRATIONS}")
    return head


def known_revisions() -> set[str]:
    """Every revision of the packaged scripts."""
    return {s.revision for s in ScriptDirectory.from_config(config()).walk_revisions()}


def _name(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: no version table), read without writing anything."""
    with engine.connect() as conn:
        return _revision(conn, _name(engine))


def _revision(conn: Connection, name: str) -> str | None:
    heads = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
    if len(heads) > 1:
        raise RuntimeError(f"the ledger at {name} records several revisions {heads} in {VERSION_TABLE}")
    return heads[0] if heads else None


def _in_memory(engine: Engine) -> bool:
    url = engine.url
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _locking_engine(engine: Engine, timeout: float) -> Engine:
    """The engine an upgrade runs on. A SQLite file: a separate engine whose transactions start with
    ``BEGIN IMMEDIATE`` (pysqlite would otherwise run DDL outside any transaction, so two processes could
    both see an empty file and both create), waiting up to ``timeout`` seconds for the lock. PostgreSQL
    (the advisory lock is taken in the transaction) and in-memory SQLite (one connection, nobody to race;
    another engine would see another database): the store's own."""
    if engine.dialect.name != "sqlite" or _in_memory(engine):
        return engine
    locking = create_engine(engine.url, connect_args={"timeout": timeout})

    @event.listens_for(locking, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(locking, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return locking


def upgrade(engine: Engine, timeout: float = 30.0) -> Upgraded:
    """Bring the database behind ``engine`` to the head revision, under the schema lock (see the module
    docstring; ``timeout``: how long SQLite waits for its file lock); raises :class:`SchemaTooNew` or
    :class:`NotALedger` without writing anything."""
    name = _name(engine)
    known = known_revisions()
    locking = _locking_engine(engine, timeout)
    try:
        with locking.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            before = _revision(conn, name)
            if before == SCHEMA_HEAD:
                return Upgraded(name, before, before, adopted=False)
            if before is not None and before not in known:
                raise SchemaTooNew(
                    f"the ledger at {name} is at schema revision {before!r}, which this stagegate does not "
                    f"know (its newest is {SCHEMA_HEAD!r}): a newer stagegate wrote it. Nothing was changed; "
                    "run the newer stagegate, or restore a backup made before its upgrade"
                )
            adopted = before is None and bool(set(inspect(conn).get_table_names()) & set(metadata.tables))
            if adopted:
                log.info("adopting the ledger at %s (made before migrations) at %s", name, BASELINE)
            try:
                command.upgrade(config(conn), "head")
            except NotALedger as exc:
                raise NotALedger(
                    f"the database at {name} has ledger tables but is not a ledger stagegate made: {exc}. "
                    "Nothing was changed"
                ) from None
            after = _revision(conn, name)
            if after != SCHEMA_HEAD:  # SCHEMA_HEAD not moved with a new revision: roll it all back
                raise RuntimeError(
                    f"the ledger at {name} would end at {after!r} after upgrading, not at SCHEMA_HEAD "
                    f"{SCHEMA_HEAD!r}: stagegate.events.store.SCHEMA_HEAD is out of date; nothing was changed"
                )
    except IntegrityError:  # the one-open-promotion index over an old ledger that broke it
        raise RuntimeError(duplicates_message(engine)) from None
    finally:
        if locking is not engine:
            locking.dispose()
    return Upgraded(name, before, after, adopted=adopted)
