"""What differs between databases: how an engine is made with bounded timeouts, how a statement is cut
off when it runs too long, and how the table's columns are read back (reflection).

- PostgreSQL: ``connect_timeout`` and the server-side ``statement_timeout`` / ``lock_timeout``, set as
  connection options, so the server itself cancels a slow query.
- SQLite and DuckDB run in this process: a timer calls the connection's ``interrupt()`` when the deadline
  passes, which aborts the running statement with an error.
- DuckDB over Parquet: a fresh in-memory database per connection, the httpfs extension loaded from its
  PyPI wheel (``duckdb-extension-httpfs``: DuckDB would otherwise download it from the internet), S3
  settings bound as parameters, and a view named as the definitions' table over ``read_parquet(paths)``
  made through DuckDB's Python API (the paths never enter SQL text). duckdb-engine's SQLAlchemy
  reflection does not work with SQLAlchemy 2.1 (it queries ``pg_collation``), so DuckDB's columns are
  read with ``DESCRIBE``.
- Any other SQLAlchemy dialect gets the generic path: reflection through the inspector, and the
  dialect's own timeout settings given in the URL's query string (docs/adapters/warehouse.md).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.types import TypeEngine


def sql_engine(url: str, timeout: float) -> Engine:
    """An engine for ``url`` whose connects and statements are bounded by ``timeout`` seconds."""
    backend = make_url(url).get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_timeout": timeout}
    if backend == "postgresql":
        ms = int(timeout * 1000)
        kwargs["connect_args"] = {
            "connect_timeout": max(2, int(timeout)),  # libpq's minimum is 2 s
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        }
    elif backend == "sqlite":
        kwargs = {"connect_args": {"timeout": timeout}}  # SQLite's busy timeout; statements: interrupt
    return create_engine(url, **kwargs)


def _httpfs_path() -> Path:
    import duckdb
    import duckdb_extension_httpfs

    root = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    path = root / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    if not path.is_file():
        built = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise RuntimeError(
            f"duckdb-extension-httpfs has no build for DuckDB {duckdb.__version__} (it has {built}): install "
            "the two at the same version (the 'warehouse' extra pins them)"
        )
    return path


@dataclass(frozen=True)
class S3Settings:
    """Where DuckDB reads ``s3://`` paths: an endpoint (``http://host:port`` for SeaweedFS or MinIO, None
    for AWS), the region, path-style URLs, and credentials (None: anonymous)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    url_style: str = "path"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def statements(self) -> Iterator[tuple[str, list[Any]]]:
        """``SET`` statements with their values bound (DuckDB accepts parameters in SET)."""
        yield "SET s3_region = $1", [self.region]
        yield "SET s3_url_style = $1", [self.url_style]
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            yield "SET s3_endpoint = $1", [host.rstrip("/") or scheme]
            yield "SET s3_use_ssl = $1", [scheme != "http"]
        if self.access_key_id:
            yield "SET s3_access_key_id = $1", [self.access_key_id]
        if self.secret_access_key:
            yield "SET s3_secret_access_key = $1", [self.secret_access_key]


def duckdb_engine(
    table: str, paths: Sequence[str], s3: S3Settings | None, timeout: float, threads: int = 2
) -> Engine:
    """An engine whose every connection is an in-memory DuckDB with a view ``table`` over the Parquet
    files at ``paths`` (local paths or globs, or ``s3://`` URLs read through httpfs)."""
    from sqlalchemy.pool import SingletonThreadPool

    remote = any(str(p).startswith(("s3://", "http://", "https://")) for p in paths)
    engine = create_engine(
        "duckdb:///:memory:",
        poolclass=SingletonThreadPool,
        connect_args={
            "config": {
                "autoinstall_known_extensions": False,  # never download anything at run time
                "autoload_known_extensions": False,
                "threads": threads,
            }
        },
    )
    httpfs = _httpfs_path() if remote else None

    @event.listens_for(engine, "connect")
    def _setup(dbapi_connection: Any, _record: Any) -> None:
        if httpfs is not None:
            path = httpfs.as_posix().replace("'", "''")  # the installed wheel's file, not config
            dbapi_connection.execute(f"LOAD '{path}'")
            # one retry, each attempt half the budget: a hung endpoint fails within about ``timeout``
            dbapi_connection.execute("SET http_timeout = $1", [max(1, int(timeout / 2))])
            dbapi_connection.execute("SET http_retries = $1", [1])
            for statement, values in (s3 or S3Settings()).statements():
                dbapi_connection.execute(statement, values)
        relation = dbapi_connection.read_parquet(list(paths), union_by_name=True)
        relation.create_view(table, replace=True)

    return engine


_DUCKDB_TYPES: dict[str, type[TypeEngine[Any]]] = {
    "BOOLEAN": Boolean,
    "TINYINT": BigInteger,
    "SMALLINT": BigInteger,
    "INTEGER": BigInteger,
    "BIGINT": BigInteger,
    "HUGEINT": BigInteger,
    "UTINYINT": BigInteger,
    "USMALLINT": BigInteger,
    "UINTEGER": BigInteger,
    "UBIGINT": BigInteger,
    "FLOAT": Double,
    "DOUBLE": Double,
    "DATE": Date,
    "TIMESTAMP": DateTime,
    "TIMESTAMP WITH TIME ZONE": DateTime,
}


def reflect(conn: Connection, name: str, schema: str | None) -> Table:
    """The table's columns and types as the database reports them (KeyError-free lookups afterwards)."""
    if conn.dialect.name == "duckdb":
        rows = conn.exec_driver_sql(f'DESCRIBE "{name}"').all()  # name: an Identifier (definitions)
        columns = [Column(r[0], _DUCKDB_TYPES.get(str(r[1]).upper(), String)()) for r in rows]
        return Table(name, MetaData(), *columns)
    return Table(name, MetaData(), schema=schema, autoload_with=conn)


@contextlib.contextmanager
def deadline(conn: Connection, timeout: float) -> Iterator[None]:
    """Interrupt the connection's running statement after ``timeout`` seconds where the driver can
    (sqlite3, DuckDB); PostgreSQL's server enforces its own statement_timeout."""
    raw = conn.connection.dbapi_connection
    interrupt = getattr(raw, "interrupt", None)
    if conn.dialect.name == "postgresql" or interrupt is None:
        yield
        return
    timer = threading.Timer(timeout, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
