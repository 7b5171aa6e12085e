"""The warehouse metric sources: per-user aggregates computed inside the database from metric definitions.

``sql`` (:class:`SqlMetricSource`) talks to any SQLAlchemy URL (tested on PostgreSQL and SQLite; BigQuery,
Snowflake and others through their SQLAlchemy dialects); ``duckdb`` (:class:`DuckDBMetricSource`) runs
DuckDB in this process over Parquet files, local or on S3. Both build the same queries
(stagegate.adapters.warehouse.query) and the same :class:`~stagegate.ports.Measurement` as the ``events``
source: metrics and segment masks per user and arm, a user seen in both arms dropped from both and counted,
and the request-level series the latency and error gates read.

Fail closed, always with MeasurementError naming what failed: a query that fails or runs past
``timeout_seconds``, a window without requests, an expected arm without users, a request that cannot be
attributed to a unit and an arm, a NULL in a metric's column (counted, never summed as 0), a user left
without a value (mean/max of no rows, a zero denominator, NaN), a NULL segment value. A mirrored (shadow)
window is refused: slate overlap is not computed in SQL (use the ``events`` source for shadow).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, Table

from stagegate.adapters.warehouse.definitions import Definitions, column_problems
from stagegate.adapters.warehouse.dialects import S3Settings, deadline, duckdb_engine, reflect, sql_engine
from stagegate.adapters.warehouse.query import (
    Labels,
    arm_name,
    per_user_query,
    series_query,
    summary_query,
)
from stagegate.connections.secrets import SecretRef
from stagegate.evidence import ArmSample
from stagegate.ports import ARMS, Measurement, MeasurementError, Window


def _short(exc: BaseException) -> str:
    """An exception in one line: its type and first line (SQLAlchemy appends the SQL, not the URL)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]


class WarehouseMetricSource:
    """The query and result logic shared by the ``sql`` and ``duckdb`` sources; ``engine`` is where the
    definitions' table lives and ``timeout`` bounds each measurement."""

    def __init__(self, engine: Engine, definitions: Definitions, timeout: float, source: str = "") -> None:
        self.engine = engine
        self.definitions = definitions
        self.timeout = timeout
        self.source = source or "<connections>"
        self._table: Table | None = None

    def __repr__(self) -> str:  # never the password
        return f"{type(self).__name__}({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- the table -----------------------------------------------------------------------------------------
    def check(self, prefix: str = "metrics") -> Table:
        """Reflect the table and check every column the definitions name; ConnectionsError (field paths
        under ``prefix``) for an unknown column, MeasurementError when the database cannot be read."""
        from stagegate.connections import ConnectionsError, Problem
        from stagegate.problems import field_path

        d = self.definitions
        try:
            with self.engine.connect() as conn, deadline(conn, self.timeout):
                table = reflect(conn, d.table.name, d.table.schema_)
        except Exception as exc:
            raise MeasurementError(f"cannot read table {d.table.name!r}: {_short(exc)}") from exc
        problems = column_problems(d, {c.name for c in table.columns})
        if not table.columns:
            problems = [(("table", "name"), f"table {d.table.name!r} not found or has no columns")]
        if problems:
            found = [Problem(self.source, f"{prefix}.{field_path(loc)}", why) for loc, why in problems]
            raise ConnectionsError(found)
        self._table = table
        return table

    def table(self) -> Table:
        if self._table is None:
            from stagegate.connections import ConnectionsError

            try:
                return self.check()
            except ConnectionsError as exc:  # measure() only ever raises MeasurementError
                raise MeasurementError(f"the metric definitions do not fit the table: {exc}") from exc
        return self._table

    # -- measuring ------------------------------------------------------------------------------------------
    def measure(self, window: Window, expect: Sequence[str] = ARMS) -> Measurement:
        """The window's per-user aggregates by arm (see the module docstring for every way it refuses)."""
        d = self.definitions
        if window.mirrored:
            raise MeasurementError(
                "the warehouse source does not measure mirrored (shadow) windows: slate overlap is not "
                "computed in SQL; measure shadow with the events source",
                window=window,
            )
        if window.step is not None and d.step is None:
            raise MeasurementError(
                f"the window asks for step {window.step} but the definitions name no step column",
                window=window,
            )
        table = self.table()
        summary = summary_query(table, d, window)
        per_user, labels = per_user_query(table, d, window)
        series = series_query(table, d, window) if d.request_series else None
        try:
            head, rows, requests_rows = self._run(summary, per_user, series)
        except MeasurementError:
            raise
        except Exception as exc:  # a failed or interrupted query is an error, never "no data"
            raise MeasurementError(
                f"warehouse query failed or exceeded {self.timeout:g} s: {_short(exc)}", window=window
            ) from exc
        requests, unattributed, mixed = (int(x or 0) for x in head)
        if requests == 0:
            raise MeasurementError("no requests recorded in the window", window=window)
        if unattributed:
            raise MeasurementError(
                f"{unattributed} request(s) in the window have a NULL {d.unit!r} or {d.arms.column!r}",
                window=window,
            )
        arms = self._samples(rows, labels, requests_rows, window)
        missing = [arm for arm in expect if arm not in arms or arms[arm].n_users == 0]
        if missing:
            raise MeasurementError(
                f"no users in arm(s) {missing} where data was expected ({mixed} mixed unit(s) dropped)",
                window=window,
            )
        return Measurement(window=window, arms=arms, mixed_units=mixed, n_requests=requests)

    def _run(self, summary: Any, per_user: Any, series: Any) -> tuple[Any, list[Any], list[Any]]:
        """The three statements in one transaction under one deadline; the per-user and series ones only
        if the window has requests."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":  # the three statements see one snapshot
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with deadline(conn, self.timeout), conn.begin():
                head = conn.execute(summary).one()
                if not head[0]:
                    return head, [], []
                rows = conn.execute(per_user).mappings().all()
                requests = conn.execute(series).all() if series is not None else []
        return head, list(rows), list(requests)

    def _samples(
        self, rows: list[Any], labels: Labels, series: list[Any], window: Window
    ) -> dict[str, ArmSample]:
        """The rows as ArmSamples; refuses NULL counts, values that are not finite and NULL segments."""
        d = self.definitions
        for name, label in labels.nulls.items():
            found = sum(int(r[label] or 0) for r in rows)
            if found:
                raise MeasurementError(
                    f"metric {name!r}: {found} NULL value(s) in column {d.per_user[name].column!r} "
                    "(a NULL is never counted as 0; filter it out in the definition if that is meant)",
                    window=window,
                )
        by_arm: dict[str, list[Any]] = {}
        for row in rows:
            by_arm.setdefault(arm_name(d, row["arm"]), []).append(row)
        arms: dict[str, ArmSample] = {}
        for arm, arm_rows in by_arm.items():
            metrics = {}
            for name, label in labels.metrics.items():
                raw = [r[label] for r in arm_rows]
                values = np.array([np.nan if v is None else float(v) for v in raw], dtype=float)
                bad = int((~np.isfinite(values)).sum())
                if bad:
                    raise MeasurementError(
                        f"metric {name!r}: {bad} {arm} user(s) without a finite value (NULL, NaN or a zero "
                        "denominator)",
                        window=window,
                    )
                metrics[name] = values
            segments = {}
            for name, label in labels.segments.items():
                flags = [r[label] for r in arm_rows]
                unknown = sum(v is None for v in flags)
                if unknown:
                    raise MeasurementError(
                        f"segment {name!r}: {unknown} {arm} user(s) with a NULL {d.segments[name].column!r}",
                        window=window,
                    )
                segments[name] = np.array([bool(v) for v in flags], dtype=bool)
            arms[arm] = ArmSample(
                user_ids=np.array([r["unit"] for r in arm_rows]),
                metrics=metrics,
                segments=segments,
                requests=self._series(arm, series, window),
            )
        return arms

    def _series(self, arm: str, series: list[Any], window: Window) -> dict[str, np.ndarray]:
        d = self.definitions
        mine = [row for row in series if arm_name(d, row[0]) == arm]
        out = {}
        for i, name in enumerate(d.request_series, start=1):
            values = np.array([np.nan if row[i] is None else float(row[i]) for row in mine], dtype=float)
            bad = int((~np.isfinite(values)).sum())
            if bad:
                raise MeasurementError(
                    f"request series {name!r}: {bad} {arm} request(s) with a NULL, NaN or infinite "
                    f"{d.request_series[name]!r}",
                    window=window,
                )
            out[name] = values
        return out


def _source_name(host: Any) -> str:
    connections = getattr(host, "__dict__", {}).get("connections")  # only if already loaded
    return getattr(connections, "source", "<connections>")


class SqlMetricSource(WarehouseMetricSource):
    """``type: sql``: the definitions' table behind any SQLAlchemy URL."""

    class Config(Definitions):
        """The definitions (stagegate.adapters.warehouse.definitions) plus where the table lives: ``url``
        (a SQLAlchemy URL without its password), ``password`` (a secret reference, put into the URL when
        the adapter is built) and ``timeout_seconds`` (connect and each measurement)."""

        model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

        url: str = Field(min_length=1)
        password: SecretRef | None = None
        timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    @classmethod
    def from_config(cls, config: Config, host: Any) -> SqlMetricSource:
        """Build the engine and check the definitions against the reflected table (ConnectionsError naming
        the field of an unknown column; MeasurementError if the database cannot be read)."""
        from sqlalchemy.engine import make_url

        url = make_url(config.url)
        if config.password is not None:
            url = url.set(password=config.password.resolve())
        engine = sql_engine(url.render_as_string(hide_password=False), config.timeout_seconds)
        source = cls(engine, config, config.timeout_seconds, _source_name(host))
        source.check()
        return source


class S3Config(BaseModel):
    """Where ``s3://`` paths are read: ``endpoint_url`` (e.g. ``http://127.0.0.1:8333`` for SeaweedFS;
    leave out for AWS), ``region``, ``url_style`` (``path`` for most S3-compatible stores) and the
    credentials as secret references (left out: anonymous, as SeaweedFS's ``weed mini`` runs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^/@\s]+/?$")
    region: str = "us-east-1"
    url_style: str = Field(default="path", pattern=r"^(path|vhost)$")
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None

    def settings(self) -> S3Settings:
        return S3Settings(
            endpoint_url=self.endpoint_url,
            region=self.region,
            url_style=self.url_style,
            access_key_id=self.access_key_id.resolve() if self.access_key_id else None,
            secret_access_key=self.secret_access_key.resolve() if self.secret_access_key else None,
        )


class DuckDBMetricSource(WarehouseMetricSource):
    """``type: duckdb``: DuckDB in this process over Parquet files, local or on S3 (httpfs)."""

    class Config(Definitions):
        """The definitions plus ``parquet`` (the files: local paths, globs or ``s3://bucket/prefix/*.parquet``
        URLs), ``s3`` (where s3:// paths are read), ``timeout_seconds`` and ``threads`` (DuckDB's)."""

        model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

        parquet: list[str] = Field(min_length=1)
        s3: S3Config | None = None
        timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
        threads: int = Field(default=2, ge=1, le=64)

    @classmethod
    def from_config(cls, config: Config, host: Any) -> DuckDBMetricSource:
        """Build the in-memory DuckDB and check the definitions against the Parquet files' columns."""
        s3 = config.s3.settings() if config.s3 is not None else None
        engine = duckdb_engine(config.table.name, config.parquet, s3, config.timeout_seconds, config.threads)
        source = cls(engine, config, config.timeout_seconds, _source_name(host))
        source.check()
        return source
