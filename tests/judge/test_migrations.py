"""The judge's state under its own Alembic migrations (stagegate/judge/migrations, JUDGE_SCHEMA), on SQLite
and PostgreSQL: a fresh database has the tables the old ``metadata.create_all`` made; a state database
the old code made (also one from before ``first_step_opened``) is adopted with its rows; a newer revision
is refused unchanged; the judge's tables and the ledger's share one database, each with its own version
table."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    inspect,
    select,
    text,
)

from stagegate.events.migrate import SchemaTooNew, current, script_head
from stagegate.events.store import SCHEMA_HEAD, VERSION_TABLE, EventStore
from stagegate.judge.state import JUDGE_HEAD, JUDGE_SCHEMA, JudgeState
from stagegate.schema_version import recorded_revision

# the judge's tables as the old create_all made them (stagegate/judge/state.py before migrations)
LEGACY = MetaData()
Table(
    "judge_rollouts",
    LEGACY,
    Column("key", String(300), primary_key=True),
    Column("revision", String(200), nullable=False),
    Column("error_streaks", JSON, nullable=False),
    Column("last_error_end", DateTime(timezone=True)),
    Column("first_step_opened", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Table(
    "judge_looks",
    LEGACY,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", String(300), nullable=False, index=True),
    Column("revision", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("step", Integer),
    Column("window_start", DateTime(timezone=True)),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("n_requests", Integer, nullable=False),
    Column("allocation", JSON, nullable=False),
    Column("evidence", LargeBinary, nullable=False),
    Column("answer", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("rollout", "revision", "number", name="uq_judge_look"),
)
AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'judge.db'}"
    return request.getfixturevalue("postgres_url")


def _schema(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        inspector = inspect(conn)
        return {
            name: {
                "columns": [(c["name"], repr(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
                "indexes": sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(name)),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(name)
                ),
                "pk": inspector.get_pk_constraint(name)["constrained_columns"],
            }
            for name in sorted(LEGACY.tables)
            if inspector.has_table(name)
        }


def _rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        return {
            name: [
                dict(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            ]
            for name, table in LEGACY.tables.items()
        }


def _fill(engine: Engine, rollouts: Table) -> None:
    with engine.begin() as conn:
        values = dict(key="argo:ns/r", revision="abc", error_streaks={"g": 1}, created_at=AT, updated_at=AT)
        if "first_step_opened" in rollouts.c:
            values["first_step_opened"] = True
        conn.execute(rollouts.insert().values(**values))
        conn.execute(
            LEGACY.tables["judge_looks"]
            .insert()
            .values(
                rollout="argo:ns/r", revision="abc", number=1, step=1, window_start=AT, window_end=AT,
                n_requests=10, allocation={"candidate": 0.1}, evidence=b"\x00npz", answer={"ok": True},
                created_at=AT,
            )
        )  # fmt: skip


def test_judge_head_is_the_scripts_head() -> None:
    assert script_head(JUDGE_SCHEMA) == JUDGE_HEAD


def test_a_fresh_state_database_has_the_tables_create_all_made(url: str) -> None:
    engine = create_engine(url)
    LEGACY.create_all(engine)
    old = _schema(engine)
    LEGACY.drop_all(engine)
    state = JudgeState(url)
    assert recorded_revision(state.engine, JUDGE_SCHEMA) == JUDGE_HEAD == current(state.engine, JUDGE_SCHEMA)
    assert _schema(engine) == old
    engine.dispose()


@pytest.mark.parametrize("oldest", [False, True], ids=["last-create-all", "before-first-step-opened"])
def test_a_state_database_made_by_the_old_code_is_adopted_with_its_rows(url: str, oldest: bool) -> None:
    engine = create_engine(url)
    rollouts = LEGACY.tables["judge_rollouts"]
    if oldest:
        old = MetaData()
        rollouts = Table(
            rollouts.name, old, *(c._copy() for c in rollouts.c if c.name != "first_step_opened")
        )
        LEGACY.tables["judge_looks"].to_metadata(old)
        old.create_all(engine)
    else:
        LEGACY.create_all(engine)
    _fill(engine, rollouts)
    with engine.connect() as conn:
        before = [dict(r) for r in conn.execute(select(rollouts)).mappings()]
        looks = [dict(r) for r in conn.execute(select(LEGACY.tables["judge_looks"])).mappings()]
    state = JudgeState(url)
    assert recorded_revision(state.engine, JUDGE_SCHEMA) == JUDGE_HEAD
    after = _rows(engine)
    assert after["judge_looks"] == looks
    [row] = after["judge_rollouts"]
    assert row.pop("first_step_opened") is (not oldest)  # an old row had not opened its first step
    assert [row] == [{k: v for k, v in r.items() if k != "first_step_opened"} for r in before]
    engine.dispose()


def test_a_newer_state_database_is_refused_unchanged(url: str) -> None:
    state = JudgeState(url)
    with state.engine.begin() as conn:
        conn.execute(text(f"UPDATE {JUDGE_SCHEMA.version_table} SET version_num = '0099_newer'"))
    schema = _schema(state.engine)
    state.engine.dispose()
    with pytest.raises(SchemaTooNew, match=r"judge state at .*'0099_newer'.*Nothing was changed"):
        JudgeState(url)
    engine = create_engine(url)
    assert recorded_revision(engine, JUDGE_SCHEMA) == "0099_newer" and _schema(engine) == schema
    engine.dispose()


def test_the_judge_and_the_ledger_share_a_database_each_with_its_version_table(url: str) -> None:
    EventStore(url)
    JudgeState(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert {"promotions", "judge_looks", VERSION_TABLE, JUDGE_SCHEMA.version_table} <= tables
        assert "alembic_version" not in tables
    assert recorded_revision(engine, JUDGE_SCHEMA) == JUDGE_HEAD
    assert current(engine) == SCHEMA_HEAD
    EventStore(url)  # either opens again with one query each
    JudgeState(url)
    engine.dispose()
