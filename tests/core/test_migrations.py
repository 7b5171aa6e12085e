"""The ledger's schema by Alembic migrations (stagegate/events/migrate.py, stagegate/events/migrations), on
SQLite files and on the machine's PostgreSQL: a fresh database upgraded to head has exactly the schema the
old ``create_schema`` built (kept below as a fixture: the tables and DDL as they were before migrations);
a ledger the old code made is adopted with every row intact, also by several processes at once; a
database at a revision this code does not know is refused and left as it was; opening an up-to-date store
costs one query and never imports Alembic."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import CreateIndex, CreateTable
from typer.testing import CliRunner

from stagegate.events.migrate import (
    BASELINE,
    ForeignTables,
    SchemaTooNew,
    config,
    current,
    script_head,
)
from stagegate.events.store import (
    SCHEMA_HEAD,
    TERMINAL_STATES,
    VERSION_TABLE,
    EventStore,
    PromotionInProgress,
    metadata,
    schema_revision,
)

# -- the schema as the old create_schema built it (stagegate/events/store.py before migrations) -----------

LEGACY = MetaData()
Table(
    "events",
    LEGACY,
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
_legacy_promotions = Table(
    "promotions",
    LEGACY,
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
    Column("owner", String(200)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("checkpoint", JSON),
)
_LEGACY_OPEN = _legacy_promotions.c.state.not_in(["aborted", "promoted", "rejected", "rolled_back"])
Index(
    "uq_promotions_open_model",
    _legacy_promotions.c.model,
    unique=True,
    sqlite_where=_LEGACY_OPEN,
    postgresql_where=_LEGACY_OPEN,
)
LEGACY_ADDED = ("owner", "heartbeat_at", "lease_expires_at", "checkpoint")
Table(
    "transitions",
    LEGACY,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("promotion_id", String(36), index=True, nullable=False),
    Column("from_state", String(32)),
    Column("to_state", String(32), nullable=False),
    Column("reason", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)
Table(
    "approver_tokens",
    LEGACY,
    Column("name", String(200), primary_key=True),
    Column("salt", String(64), nullable=False),
    Column("digest", String(128), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)
Table(
    "verdicts",
    LEGACY,
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


def legacy_create_schema(engine: Engine, *, oldest: bool = False) -> None:
    """What the old create_schema did (CREATE ... IF NOT EXISTS, then ALTER TABLE for the added columns,
    then the indexes). ``oldest``: a ledger from before leases, checkpoints, approver tokens and the
    one-open-promotion index."""
    with engine.begin() as conn:
        for table in LEGACY.sorted_tables:
            if oldest and table.name == "approver_tokens":
                continue
            if oldest and table.name == "promotions":
                old = MetaData()
                table = Table(
                    table.name, old, *(c._copy() for c in table.columns if c.name not in LEGACY_ADDED)
                )
            conn.execute(CreateTable(table, if_not_exists=True))
        for table in LEGACY.sorted_tables:
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                if oldest and (index.unique or table.name == "approver_tokens"):
                    continue
                conn.execute(CreateIndex(index, if_not_exists=True))


def schema_of(engine: Engine) -> dict[str, Any]:
    """Every table but the version table: its columns (name, type, nullable, default, primary key, in
    order), its indexes (name, columns, unique) and each index's DDL as the database keeps it."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        inspector = inspect(conn)
        for name in sorted(set(inspector.get_table_names()) - {VERSION_TABLE}):
            pk = set(inspector.get_pk_constraint(name)["constrained_columns"])
            out[name] = {
                "columns": [
                    (c["name"], repr(c["type"]), c["nullable"], c.get("default"), c["name"] in pk)
                    for c in inspector.get_columns(name)
                ],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(name)
                ),
            }
        if conn.dialect.name == "sqlite":
            rows = conn.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            ).all()
        else:
            rows = conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
            ).all()
        out["index DDL"] = sorted((n, sql) for n, sql in rows if VERSION_TABLE not in n)
    return out


def rows_of(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every legacy table there is, in primary-key order, through the legacy columns."""
    out = {}
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        for table in LEGACY.sorted_tables:
            if table.name in present:
                have = {c["name"] for c in inspect(conn).get_columns(table.name)}
                cols = [c for c in table.columns if c.name in have]
                query = select(*cols).order_by(*table.primary_key.columns)
                out[table.name] = [dict(r) for r in conn.execute(query).mappings()]
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("postgres_url")  # a fresh database: no tables yet


def _fill(engine: Engine, *, oldest: bool) -> None:
    """Rows in a legacy ledger: an ended promotion and an open one of model m, their transitions and
    verdicts, a few events, an approver token (where the table exists)."""
    from datetime import UTC, datetime

    at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    t = LEGACY.tables
    lease = {} if oldest else {"owner": "host:1:1", "heartbeat_at": at, "lease_expires_at": at}
    with engine.begin() as conn:
        for pid, state in (("p-ended", "promoted"), ("p-open", "canary")):
            values = dict(id=pid, model="m", version="2", policy_path="p.yaml", policy={"model": "m"})
            values |= dict(state=state, stage="canary", reason="r", started_at=at, updated_at=at, **lease)
            if not oldest:
                values["checkpoint"] = {"step": 1, "look": 2}
            promotions = t["promotions"]
            if oldest:
                promotions = Table(
                    "promotions", MetaData(), *(c._copy() for c in promotions.c if c.name not in LEGACY_ADDED)
                )
            conn.execute(promotions.insert().values(**values))
            for i, (a, b) in enumerate(((None, "registered"), ("registered", "canary"))):
                conn.execute(
                    t["transitions"]
                    .insert()
                    .values(promotion_id=pid, from_state=a, to_state=b, reason=f"{i}", at=at)
                )
            conn.execute(
                t["verdicts"]
                .insert()
                .values(
                    promotion_id=pid,
                    stage="canary",
                    step=1,
                    look=1,
                    gate="ctr",
                    metric="ctr",
                    outcome="pass",
                    action=None,
                    statistic=0.5,
                    threshold=0.1,
                    ci_low=0.2,
                    ci_high=0.8,
                    n=100,
                    message="fine",
                    at=at,
                )
            )
        conn.execute(
            t["events"].insert(),
            [
                dict(
                    promotion_id="p-open",
                    stage="canary",
                    step=1,
                    request_id=i,
                    t=0.1 * i,
                    user_id=i,
                    user_segment=0,
                    device=1,
                    hour=3,
                    arm=i % 2,
                    model_version="2",
                    latency_ms=5.0,
                    error=False,
                    items="[1, 2]",
                    n_clicks=1,
                    n_purchases=0,
                    revenue=0.0,
                    n_out_of_stock=0,
                    min_pscore=0.1,
                )
                for i in range(5)
            ],
        )
        if not oldest:
            conn.execute(
                t["approver_tokens"].insert().values(name="alice", salt="s", digest="d", issued_at=at)
            )


# -- the tests ---------------------------------------------------------------------------------------------


def test_schema_head_is_the_scripts_head_and_history_is_one_line() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(config())
    assert script_head() == SCHEMA_HEAD, "a new revision must move stagegate.events.store.SCHEMA_HEAD"
    assert len(scripts.get_heads()) == 1
    assert [s.revision for s in scripts.walk_revisions()][-1] == BASELINE


def test_a_fresh_database_at_head_has_the_schema_create_schema_built(url: str) -> None:
    engine = create_engine(url)
    legacy_create_schema(engine)
    old = schema_of(engine)
    assert set(old) - {"index DDL"} == {"events", "promotions", "transitions", "approver_tokens", "verdicts"}
    LEGACY.drop_all(engine)
    assert schema_of(engine) == {"index DDL": []}
    store = EventStore(url)
    assert schema_revision(store.engine) == SCHEMA_HEAD == current(store.engine)
    assert schema_of(engine) == old
    engine.dispose()


def test_the_head_schema_is_the_one_the_store_model_describes(url: str) -> None:
    """The model in store.py and the migrations agree (autogenerate finds nothing to do), and the
    one-open-promotion index covers exactly the states that are not final today: a change to either needs a
    new revision."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    store = EventStore(url)
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(context, metadata) == []
    frozen = {"aborted", "promoted", "rejected", "rolled_back"}  # the baseline's TERMINAL
    assert {s.value for s in TERMINAL_STATES} == frozen, "terminal states changed: the index needs a revision"
    if url.startswith("sqlite"):
        index = next(i for i in metadata.tables["promotions"].indexes if i.name == "uq_promotions_open_model")
        with store.engine.connect() as conn:
            kept = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'uq_promotions_open_model'"))
            assert kept.scalar_one() == str(CreateIndex(index).compile(dialect=conn.dialect))


@pytest.mark.parametrize("oldest", [False, True], ids=["last-create-schema", "before-leases"])
def test_a_ledger_made_by_the_old_code_is_adopted_with_every_row_intact(url: str, oldest: bool) -> None:
    engine = create_engine(url)
    legacy_create_schema(engine, oldest=oldest)
    _fill(engine, oldest=oldest)
    before = rows_of(engine)
    assert schema_revision(engine) is None
    store = EventStore(url)
    assert schema_revision(store.engine) == SCHEMA_HEAD
    after = rows_of(engine)
    if oldest:  # the added columns are there now, empty on the old rows; the approver table is new, empty
        assert after.pop("approver_tokens") == []
        for row in after["promotions"]:
            assert all(row.pop(name) is None for name in LEGACY_ADDED)
    assert after == before
    assert [len(before[t]) for t in ("promotions", "transitions", "verdicts", "events")] == [2, 4, 2, 5]
    # the adopted ledger has the fresh schema, and the store works on it
    adopted = schema_of(engine)
    assert {"owner", "checkpoint"} <= {c[0] for c in adopted["promotions"]["columns"]}
    assert ("uq_promotions_open_model", ("model",), True) in adopted["promotions"]["indexes"]
    assert [p["id"] for p in store.promotions("m", open_only=True)] == ["p-open"]
    assert len(store.transitions("p-ended")) == 2 and len(store.verdicts("p-open")) == 1
    assert store.count_events("p-open") == 5
    with pytest.raises(PromotionInProgress, match="promotion p-open of 'm'"):  # the index holds
        store.open_promotion(model="m", version="3", policy_path="p", policy={}, champion_version="2")
    engine.dispose()


def test_an_adopted_ledger_has_the_same_schema_as_a_fresh_one(tmp_path: Path) -> None:
    fresh = EventStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    for oldest in (False, True):
        url = f"sqlite:///{tmp_path / f'old-{oldest}.db'}"
        engine = create_engine(url)
        legacy_create_schema(engine, oldest=oldest)
        adopted = EventStore(url)
        old, new = schema_of(adopted.engine), schema_of(fresh.engine)
        assert old.pop("index DDL") == new.pop("index DDL")
        for name in new:  # ALTER TABLE appends the added columns in the baseline's order: same columns
            assert old[name] == new[name], name


def test_ten_processes_adopting_one_old_ledger_at_once_all_succeed(url: str) -> None:
    engine = create_engine(url)
    legacy_create_schema(engine, oldest=True)
    _fill(engine, oldest=True)
    before = rows_of(engine)
    barrier, errors = threading.Barrier(10), []

    def opener() -> None:
        try:
            barrier.wait(timeout=30)
            EventStore(url).engine.dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert schema_revision(engine) == SCHEMA_HEAD
    after = rows_of(engine)
    assert after.pop("approver_tokens") == []
    assert [{k: v for k, v in r.items() if k not in LEGACY_ADDED} for r in after["promotions"]] == before.pop(
        "promotions"
    )
    after.pop("promotions")
    assert after == before
    engine.dispose()


def _with_password(url: str) -> str:
    """The URL with a password in it (ignored by this machine's trust auth; never to be printed)."""
    return url.replace("postgres@", "postgres:hunter2@", 1) if url.startswith("postgresql") else url


def test_a_database_at_a_revision_this_code_does_not_know_is_refused_and_left_alone(url: str) -> None:
    url = _with_password(url)
    store = EventStore(url)
    store.open_promotion(model="m", version="2", policy_path="p", policy={}, champion_version="1")
    with store.engine.begin() as conn:  # what a newer stagegate would have left
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099_from_newer'"))
        conn.execute(text("CREATE TABLE newer_things (id INTEGER PRIMARY KEY)"))
    schema, rows = schema_of(store.engine), rows_of(store.engine)
    store.engine.dispose()
    with pytest.raises(SchemaTooNew) as refused:
        EventStore(url)
    message = str(refused.value)
    name = url.rsplit("/", 1)[-1]
    assert "'0099_from_newer'" in message and name in message and "newer stagegate" in message
    assert "hunter2" not in message and (url.startswith("sqlite") or "***" in message)
    engine = create_engine(url)
    assert schema_revision(engine) == "0099_from_newer"
    assert schema_of(engine) == schema and rows_of(engine) == rows
    engine.dispose()


def test_db_upgrade_and_current_name_the_revision_and_refuse_a_newer_database(tmp_path: Path) -> None:
    from stagegate.cli import app

    url = f"sqlite:///{tmp_path / 'events.db'}"
    runner = CliRunner()
    shown = runner.invoke(app, ["db", "current", "--url", url])
    assert shown.exit_code == 0 and "revision none" in shown.output and "empty" in shown.output
    done = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert done.exit_code == 0, done.output
    assert f"upgraded from an empty database to {SCHEMA_HEAD} (head)" in done.output
    again = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert f"revision {SCHEMA_HEAD}" in runner.invoke(app, ["db", "current", "--url", url]).output
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099_from_newer'"))
    refused = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert (
        refused.exit_code == 2
        and "'0099_from_newer'" in refused.output
        and "Nothing was changed" in refused.output
    )
    assert "newer stagegate" in runner.invoke(app, ["db", "current", "--url", url]).output
    assert schema_revision(engine) == "0099_from_newer"
    engine.dispose()


def test_ledger_tables_lacking_their_original_columns_are_refused_unchanged(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:  # someone else's "promotions" table
        conn.execute(text("CREATE TABLE promotions (id VARCHAR(36) PRIMARY KEY, state VARCHAR(32))"))
        conn.execute(text("INSERT INTO promotions (id, state) VALUES ('x', 'canary')"))
    with pytest.raises(
        ForeignTables, match=r"table 'promotions' has no column\(s\) model, version.*Nothing was"
    ):
        EventStore(url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {
            "promotions"
        }  # rolled back: not even the version table
        assert conn.execute(text("SELECT id, state FROM promotions")).all() == [("x", "canary")]
    engine.dispose()


def test_opening_an_up_to_date_store_does_not_import_alembic(tmp_path: Path) -> None:
    """One process (imports are slow here): a store at head opens without Alembic; a fresh one upgrades,
    through Alembic."""
    at_head, fresh = f"sqlite:///{tmp_path / 'at-head.db'}", f"sqlite:///{tmp_path / 'fresh.db'}"
    EventStore(at_head).engine.dispose()
    code = (
        "import sys; from stagegate.events.store import EventStore; EventStore(sys.argv[1]); "
        "print('alembic' in sys.modules); EventStore(sys.argv[2]); print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, at_head, fresh], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_the_baseline_downgrades_to_nothing_and_upgrades_again(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'events.db'}"
    first = schema_of(EventStore(url).engine)
    engine = create_engine(url)
    with engine.begin() as conn:
        command.downgrade(config(conn), "base")
    assert schema_of(engine) == {"index DDL": []}
    assert schema_of(EventStore(url).engine) == first
    engine.dispose()


def test_an_unreachable_database_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    """No version table reads as None (an upgrade follows); a database that does not answer fails the
    open with the driver's error (the upgrade's connection fails too), it is never taken for empty."""
    assert schema_revision(create_engine(f"sqlite:///{tmp_path / 'new.db'}")) is None
    with pytest.raises(OperationalError, match=r"127\.0\.0\.1"):
        EventStore("postgresql+psycopg://nobody@127.0.0.1:1/none")
