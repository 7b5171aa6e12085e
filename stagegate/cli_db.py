"""``stagegate db``: the ledger database's schema (the Alembic migrations of stagegate/events/migrations).

``upgrade`` brings the database to this stagegate's revision and prints it (what every process opening the
store does by itself; run it on purpose before a rollout of a new stagegate, or to see a refusal);
``current`` prints the recorded revision and what it means, writing nothing. The database is
``--url``, else ``$STAGEGATE_EVENTS_URL``, else the workspace's events.db (docs/operations.md).
"""

from __future__ import annotations

import typer

db_app = typer.Typer(help="The ledger database's schema: upgrade, current.", no_args_is_help=True)

BAD_INPUT = 2

_URL = typer.Option(
    None, "--url", help="events database URL; default $STAGEGATE_EVENTS_URL or the workspace's"
)


def _url(url: str | None) -> str:
    from stagegate.workspace import Workspace

    return url or Workspace.from_env().events_url


@db_app.command("upgrade")
def upgrade(url: str = _URL) -> None:
    """Upgrade the ledger's schema to this stagegate's head revision.

    A ledger made before migrations is adopted; a database newer stagegate wrote is refused (exit 2) and left
    as it was."""
    from stagegate.events.migrate import ForeignTables, SchemaTooNew
    from stagegate.events.migrate import upgrade as run_upgrade
    from stagegate.events.store import db_timeout, store_engine

    engine = store_engine(_url(url))
    try:
        done = run_upgrade(engine, timeout=db_timeout())  # the ledger's schema
    except (SchemaTooNew, ForeignTables) as exc:
        typer.secho(str(exc), err=True, fg=typer.colors.RED)
        raise typer.Exit(BAD_INPUT) from None
    finally:
        engine.dispose()
    typer.echo(done.describe())


@db_app.command("current")
def current(url: str = _URL) -> None:
    """Print the ledger's recorded revision and this stagegate's head, writing nothing."""
    from sqlalchemy import inspect

    from stagegate.events.migrate import current as read_current
    from stagegate.events.migrate import known_revisions
    from stagegate.events.store import SCHEMA_HEAD, metadata, store_engine

    engine = store_engine(_url(url))
    try:
        name = engine.url.render_as_string(hide_password=True)
        revision = read_current(engine)
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names()) & set(metadata.tables)
    finally:
        engine.dispose()
    if revision == SCHEMA_HEAD:
        state = "at head"
    elif revision is None:
        state = (
            "made before migrations: `stagegate db upgrade` adopts it"
            if tables
            else "empty: `stagegate db upgrade` creates the schema"
        )
    elif revision in known_revisions():
        state = "behind: `stagegate db upgrade` (or any stagegate command that opens it) upgrades it"
    else:
        state = "written by a newer stagegate: this one refuses it"
    typer.echo(f"{name}: revision {revision or 'none'}; this stagegate's head {SCHEMA_HEAD}; {state}")
