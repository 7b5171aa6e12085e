"""The ``workspace`` offline-data source: the simulated world's logged history and public catalogue, as
Arrow tables in the port's schema (stagegate.ports.IMPRESSIONS_SCHEMA, CATALOGUE_SCHEMA).

The same columns written as Parquet (``pyarrow.parquet.write_table``) are what a warehouse or a folder
of Parquet files must provide to replace it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from stagegate.ports import CATALOGUE_SCHEMA, EMBEDDING_PREFIX, IMPRESSIONS_SCHEMA, check_table


def _list_column(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """(n, k) numpy array -> Arrow list<k> column without a Python loop."""
    n, k = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=type_.value_type))


def impressions_table(batch: Any) -> pa.Table:
    """A ServedBatch (stagegate.world.schema) as a table of IMPRESSIONS_SCHEMA."""
    ctx = batch.context
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(ctx.request_id, pa.int64()),
        "t": pa.array(ctx.t, pa.float64()),
        "user_id": pa.array(ctx.user_id, pa.int64()),
        "user_segment": pa.array(ctx.user_segment, pa.int8()),
        "device": pa.array(ctx.device, pa.int8()),
        "hour": pa.array(ctx.hour, pa.int8()),
        "arm": pa.array(batch.arm, pa.int8()),
        "items": _list_column(np.asarray(batch.items, np.int32), IMPRESSIONS_SCHEMA.field("items").type),
        "pscore": _list_column(np.asarray(batch.pscore, float), IMPRESSIONS_SCHEMA.field("pscore").type),
        "clicks": _list_column(np.asarray(batch.clicks, bool), IMPRESSIONS_SCHEMA.field("clicks").type),
        "purchases": _list_column(
            np.asarray(batch.purchases, bool), IMPRESSIONS_SCHEMA.field("purchases").type
        ),
        "revenue": pa.array(batch.revenue, pa.float64()),
        "latency_ms": pa.array(batch.latency_ms, pa.float64()),
        "error": pa.array(batch.error, pa.bool_()),
    }
    optional = {
        "pscore_prefix": lambda v: _list_column(np.asarray(v, float), pa.list_(pa.float64())),
        "session_id": lambda v: pa.array(v, pa.int64()),
        "slate_index": lambda v: pa.array(v, pa.int16()),
        "stock_at_serve": lambda v: _list_column(np.asarray(v, np.int64), pa.list_(pa.int64())),
        "in_stock_at_serve": lambda v: pa.array(
            [row.tobytes() for row in np.asarray(v, np.uint8)], pa.binary()
        ),
    }
    for name, convert in optional.items():
        value = getattr(batch, name, None)
        if value is not None:
            columns[name] = convert(value)
    schema = pa.schema([IMPRESSIONS_SCHEMA.field(name) for name in columns])
    return check_table(pa.Table.from_pydict(columns, schema=schema), IMPRESSIONS_SCHEMA, "impressions")


def catalogue_table(frame: Any) -> pa.Table:
    """The public catalogue frame (stagegate.world.catalog.public_frame) as a table of CATALOGUE_SCHEMA."""
    fields = [CATALOGUE_SCHEMA.field(name) for name in CATALOGUE_SCHEMA.names if name in frame.columns]
    emb = [c for c in frame.columns if str(c).startswith(EMBEDDING_PREFIX)]
    fields += [pa.field(c, pa.float64()) for c in emb]
    schema = pa.schema(fields)
    table = pa.Table.from_pandas(frame[[f.name for f in fields]], schema=schema, preserve_index=False)
    return check_table(table, CATALOGUE_SCHEMA, "catalogue", extra_prefix=EMBEDDING_PREFIX)


class WorkspaceOfflineData:
    """Hold-out and training log split at the workspace manifest's ``holdout_start_day``."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, host: Any) -> None:
        self.host = host

    @classmethod
    def from_config(cls, config: Config, host: Any) -> WorkspaceOfflineData:
        return cls(host)

    def holdout(self) -> pa.Table:
        from stagegate.world.batch import take

        history = self.host.history
        cut = float(self.host.manifest["holdout_start_day"])
        return impressions_table(take(history, np.flatnonzero(history.context.t >= cut)))

    def training_log(self) -> pa.Table:
        return impressions_table(self.host.training_log())

    def catalogue(self) -> pa.Table:
        return catalogue_table(self.host.world.catalog_public())
