"""Events for the warehouse tests: one deterministic set of requests written to any event store (SQLite,
PostgreSQL) through EventStore.append_batch, exported as Parquet for DuckDB, and the connections examples
of docs/adapters/warehouse.md, whose definitions the tests measure with."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sqlalchemy import select, update

from stagegate.events.store import EventStore, events
from tests.core.test_event_store import fake_batch

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "adapters" / "warehouse.md"

PROMOTION = "0b8c6f1e-warehouse-parity"
#: a promotion id carrying SQL: bound as a value it matches only its own rows and drops nothing
INJECTION = "x'; DROP TABLE events; --"
NULL_REVENUE = "nullrev-promotion"
NULL_ARM = "nullarm-promotion"
#: two requests with a NaN latency: PostgreSQL keeps NaN, SQLite stores it as NULL (and so do the Parquet
#: files exported from it); either way no value may come out of it
NAN_LATENCY = "nanlat-promotion"
STAGE = "canary"
#: requests of users with user_id % 7 == 3 in step 1's second batch are served by the other arm: the
#: mixed-unit rule drops them from both arms
MIXED_MOD = (7, 3)


def _flipped(batch: Any) -> Any:
    """The batch with the arm flipped for users with user_id % 7 == 3 (a split that moved them)."""
    mod, rest = MIXED_MOD
    users = batch.context.user_id
    arm = np.where(users % mod == rest, 1 - batch.arm, batch.arm).astype(np.int8)
    return dataclasses.replace(batch, arm=arm)


def populate(store: EventStore) -> None:
    """Write every test promotion's events (the same rows, in the same order, on every store)."""
    versions = ("1", "2")
    write = store.append_batch
    write(fake_batch(n=400, seed=11, t0=0.0), promotion_id=PROMOTION, stage=STAGE, step=1, versions=versions)
    write(
        _flipped(fake_batch(n=400, seed=12, t0=0.05)),
        promotion_id=PROMOTION,
        stage=STAGE,
        step=1,
        versions=versions,
    )
    write(fake_batch(n=300, seed=13, t0=1.0), promotion_id=PROMOTION, stage=STAGE, step=2, versions=versions)
    write(fake_batch(n=120, seed=14, t0=0.0), promotion_id=INJECTION, stage=STAGE, step=1, versions=versions)
    write(
        fake_batch(n=120, seed=15, t0=0.0), promotion_id=NULL_REVENUE, stage=STAGE, step=1, versions=versions
    )
    write(fake_batch(n=120, seed=16, t0=0.0), promotion_id=NULL_ARM, stage=STAGE, step=1, versions=versions)
    write(
        fake_batch(n=120, seed=17, t0=0.0), promotion_id=NAN_LATENCY, stage=STAGE, step=1, versions=versions
    )
    with store.engine.begin() as conn:
        _set_first(conn, NULL_REVENUE, 3, revenue=None)  # three requests lost their revenue
        _set_first(conn, NULL_ARM, 2, arm=None)  # two requests were logged without their arm
        _set_first(conn, NAN_LATENCY, 2, latency_ms=float("nan"))


def _set_first(conn: Any, promotion_id: str, n: int, **values: Any) -> None:
    """Set ``values`` on the first ``n`` requests (by id) of ``promotion_id``."""
    query = select(events.c.id).where(events.c.promotion_id == promotion_id).order_by(events.c.id).limit(n)
    ids = [row[0] for row in conn.execute(query).all()]
    conn.execute(update(events).where(events.c.id.in_(ids)).values(**values))


def export_parquet(store: EventStore, folder: Path) -> list[Path]:
    """The store's events as two Parquet files (by step), with the columns' own types."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    with store.engine.connect() as conn:
        frame = pd.read_sql(events.select().order_by(events.c.id), conn)
    frame = frame.drop(columns=["shadow_items", "shadow_latency_ms", "shadow_n_out_of_stock"])
    frame["error"] = frame["error"].astype(bool)
    frame["arm"] = frame["arm"].astype("Int64")  # an integer column with NULLs, as in the database
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for step, part in frame.groupby("step"):
        path = folder / f"events-step{step}.parquet"
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path)
        paths.append(path)
    return paths


def doc_examples() -> dict[str, str]:
    """The YAML examples of docs/adapters/warehouse.md by name (``<!-- example: NAME -->`` before each)."""
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- example: (\w+) -->\n```yaml\n(.*?)```", text, flags=re.DOTALL)
    return dict(found)


def doc_metrics(name: str, **overrides: Any) -> dict[str, Any]:
    """The ``metrics`` section of example ``name``, with ``overrides`` in place of its connection fields."""
    section = yaml.safe_load(doc_examples()[name])["metrics"]
    for key in ("url", "password", "parquet", "s3"):
        section.pop(key, None)
    return {**section, **overrides}
