"""Schema changes by Alembic migrations: the ledger's (stagegate/events/migrations, ``LEDGER``, the default
here) and the judge's state (stagegate/judge/migrations, ``JUDGE_SCHEMA``), each a
:class:`~stagegate.schema_version.Schema` with its own scripts and version table.

Opening a store (or the judge's state) calls :func:`upgrade` only when its one-query check
(stagegate.schema_version.ensure) finds the database not at the schema's head, so this module, and
Alembic, are imported only then; ``stagegate db upgrade`` calls it on purpose. One upgrade is one
transaction holding the schema's lock: ``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` (the
file's write lock) on SQLite.
Processes that open a fresh database together queue on the lock; each one reads the revision again under
it, and all but the first find the work done.

What the database holds decides what happens:

- nothing: the revisions run from the baseline up;
- the tables of a ledger made before migrations, no version table: adopted. The baseline revision checks
  the columns those tables always had (:class:`ForeignTables` if one is missing), adds what older versions
  lacked and records the baseline, then the later revisions run; no row is touched;
- a revision this code knows: the revisions after it run;
- a revision this code does not know (written by newer stagegate): :class:`SchemaTooNew`, nothing written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from stagegate.events.schema import LEDGER
from stagegate.schema_version import Schema, recorded_revision

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported inside the functions that use it: importing this module (every EventStore's does)
# must stay cheap, and a database already at head never needs Alembic.

log = logging.getLogger(__name__)

#: The ledger's migration environment shipped in the package (env.py, script.py.mako, versions/).
MIGRATIONS = LEDGER.scripts
#: The ledger's first revision: the schema as it was before migrations (an adopted ledger is brought to it).
BASELINE = "0001_baseline"


class SchemaTooNew(RuntimeError):
    """The database is at a revision this code does not know: newer stagegate wrote it."""


class ForeignTables(RuntimeError):
    """A database with tables of the schema's names that lack columns they always had: not stagegate's."""


@dataclass(frozen=True)
class Upgraded:
    """What :func:`upgrade` found and left: the revision before (None: no version table) and after."""

    database: str
    before: str | None
    after: str
    adopted: bool  # made before migrations, recorded at the baseline first

    def describe(self) -> str:
        if self.before == self.after:
            return f"{self.database}: at {self.after} (head), nothing to do"
        if self.adopted:
            return f"{self.database}: adopted tables made before migrations, now at {self.after} (head)"
        return f"{self.database}: upgraded from {self.before or 'an empty database'} to {self.after} (head)"


def config(connection: Connection | None = None, url: str | None = None, schema: Schema = LEDGER) -> Config:
    """An Alembic config made in code (no alembic.ini): the schema's packaged scripts, and the connection
    the migrations run on (or, to write a new revision with autogenerate, a URL)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(schema.scripts))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_head(schema: Schema = LEDGER) -> str:
    """The head revision of the schema's packaged scripts (what ``schema.head`` must say)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(config(schema=schema)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts under {schema.scripts}")
    return head


def known_revisions(schema: Schema = LEDGER) -> set[str]:
    """Every revision of the schema's packaged scripts."""
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(config(schema=schema)).walk_revisions()}


def _name(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def current(engine: Engine, schema: Schema = LEDGER) -> str | None:
    """The revision the database is at (None: no version table), read without writing anything."""
    with engine.connect() as conn:
        return _revision(conn, _name(engine), schema)


def _revision(conn: Connection, name: str, schema: Schema) -> str | None:
    from alembic.runtime.migration import MigrationContext

    heads = MigrationContext.configure(conn, opts={"version_table": schema.version_table}).get_current_heads()
    if len(heads) > 1:
        raise RuntimeError(
            f"the {schema.what} at {name} records several revisions {heads} in {schema.version_table}"
        )
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


def ensure(engine: Engine, schema: Schema = LEDGER, timeout: float = 30.0) -> None:
    """Make the database's schema ``schema``'s head: nothing but one plain query when it is there already
    (no Alembic), else :func:`upgrade` (which refuses a database a newer stagegate wrote)."""
    if recorded_revision(engine, schema) != schema.head:
        upgrade(engine, schema, timeout=timeout)


def upgrade(engine: Engine, schema: Schema = LEDGER, timeout: float = 30.0) -> Upgraded:
    """Bring the database behind ``engine`` to ``schema``'s head revision, under its lock (see the module
    docstring; ``timeout``: how long SQLite waits for its file lock); raises :class:`SchemaTooNew` or
    :class:`ForeignTables` without writing anything."""
    from alembic import command

    name = _name(engine)
    known = known_revisions(schema)
    locking = _locking_engine(engine, timeout)
    try:
        with locking.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": schema.lock})
            before = _revision(conn, name, schema)
            if before == schema.head:
                return Upgraded(name, before, before, adopted=False)
            if before is not None and before not in known:
                raise SchemaTooNew(
                    f"the {schema.what} at {name} is at schema revision {before!r}, which this stagegate "
                    f"does not know (its newest is {schema.head!r}): a newer stagegate wrote it. Nothing was "
                    "changed; run the newer stagegate, or restore a backup made before its upgrade"
                )
            tables = set(inspect(conn).get_table_names()) & set(schema.metadata.tables)
            adopted = before is None and bool(tables)
            if adopted:
                log.info("adopting the %s at %s (made before migrations)", schema.what, name)
            try:
                command.upgrade(config(conn, schema=schema), "head")
            except ForeignTables as exc:
                raise ForeignTables(
                    f"the database at {name} has tables named as the {schema.what}'s but is not a "
                    f"{schema.what} stagegate made: {exc}. Nothing was changed"
                ) from None
            after = _revision(conn, name, schema)
            if after != schema.head:  # the head constant not moved with a new revision: roll it all back
                raise RuntimeError(
                    f"the {schema.what} at {name} would end at {after!r} after upgrading, not at the code's "
                    f"head {schema.head!r}, which is out of date; nothing was changed"
                )
    except IntegrityError:  # a unique index over old rows that break it (two open promotions of a model)
        if schema.integrity_message is None:
            raise
        raise RuntimeError(schema.integrity_message(engine)) from None
    finally:
        if locking is not engine:
            locking.dispose()
    return Upgraded(name, before, after, adopted=adopted)


def run_environment(schema: Schema) -> None:
    """The body of every migrations folder's env.py (Alembic imports it while it runs ``schema``'s scripts).

    Run on the connection the caller passed (``Config.attributes["connection"]``), inside its transaction
    and under its lock, with ``schema``'s own version table. Autogenerate compares only ``schema``'s tables,
    since the ledger's and the judge's may share one database. A config with only ``sqlalchemy.url`` (for
    ``alembic revision --autogenerate`` while writing a new revision) connects itself."""
    from alembic import context

    def run(connection: Any) -> None:
        context.configure(
            connection=connection,
            target_metadata=schema.metadata,
            version_table=schema.version_table,
            compare_type=True,
            include_name=lambda name, kind, _parent: kind != "table" or name in schema.metadata.tables,
        )
        with context.begin_transaction():  # a no-op inside the caller's transaction
            context.run_migrations()

    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            f"the migrations of {schema.what} need a connection or sqlalchemy.url: run them with `stagegate "
            "db upgrade` (or stagegate.events.migrate.upgrade), which passes the connection"
        )
    with create_engine(url).connect() as conn:
        run(conn)
        conn.commit()
