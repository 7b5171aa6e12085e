"""The request log: every served request (and every shadow call) as one row, written by a background
thread so that recording never waits on the database in the response path.

Rows go to the ``router_requests`` table of a SQLAlchemy URL (SQLite by default, PostgreSQL by URL) in
batches. ``close()`` flushes everything queued before it returns (a clean shutdown loses nothing); a batch
the database refuses is retried, then counted in ``stagegate_record_errors_total`` and logged (without its
content) rather than blocking the router.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from stagegate.router.metrics import RouterMetrics

log = logging.getLogger("stagegate.router")
_STOP = object()


@dataclass(frozen=True)
class RequestRecord:
    """One model answer: ``arm`` champion, candidate or shadow; ``version`` the version asked;
    ``served_version`` the version whose items the user saw (None for shadow); ``error`` the failure
    message (None when the call succeeded)."""

    request_id: str
    ts: datetime
    user_id: int
    arm: str
    version: str
    served_version: str | None
    latency_ms: float
    error: str | None
    fallback: bool
    items: list[int]


def _table(metadata: object) -> object:
    from sqlalchemy import (
        JSON,
        BigInteger,
        Boolean,
        Column,
        DateTime,
        Float,
        Index,
        Integer,
        String,
        Table,
        Text,
    )

    return Table(
        "router_requests",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(200), nullable=False),
        Column("ts", DateTime(timezone=True), nullable=False),
        Column("user_id", BigInteger, nullable=False),
        Column("arm", String(16), nullable=False),
        Column("version", String(200), nullable=False),
        Column("served_version", String(200), nullable=True),
        Column("latency_ms", Float, nullable=False),
        Column("error", Text, nullable=True),
        Column("fallback", Boolean, nullable=False),
        Column("items", JSON, nullable=False),
        Index("ix_router_requests_request_id", "request_id"),
        Index("ix_router_requests_ts", "ts"),
    )


class Recorder:
    def __init__(self, url: str, metrics: RouterMetrics, batch: int = 500, linger: float = 0.05) -> None:
        from sqlalchemy import MetaData, create_engine

        self.url = url
        self.metrics = metrics
        self.batch = batch
        self.linger = linger
        self.engine = create_engine(url, future=True, pool_pre_ping=True)
        self.metadata = MetaData()
        self.table = _table(self.metadata)
        self.metadata.create_all(self.engine)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="router-recorder", daemon=True)
        self._thread.start()
        self.written = 0

    def record(self, row: RequestRecord) -> None:
        """Queue ``row``; never blocks."""
        self._queue.put(row)
        self.metrics.record_queue.inc()

    def _run(self) -> None:
        stop = False
        while not stop:
            rows: list[RequestRecord] = []
            item = self._queue.get()
            deadline = time.monotonic() + self.linger
            while True:
                if item is _STOP:
                    stop = True
                    break
                rows.append(item)
                if len(rows) >= self.batch:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if rows:
                self._write(rows)
        # anything queued after the stop marker (late shadow answers) is written too
        rest = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                rest.append(item)
        if rest:
            self._write(rest)

    def _write(self, rows: list[RequestRecord]) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        values = [asdict(r) for r in rows]
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.table.insert(), values)
                self.written += len(rows)
                break
            except SQLAlchemyError as exc:
                if attempt == 2:
                    self.metrics.record_errors.inc(len(rows))
                    log.error("request log: %d records not stored (%s)", len(rows), type(exc).__name__)
                else:
                    time.sleep(0.2 * (attempt + 1))
        self.metrics.record_queue.dec(len(rows))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the writer."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self.engine.dispose()


def now() -> datetime:
    return datetime.now(UTC)
