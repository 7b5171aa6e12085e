"""Offline-data sources: logged impressions and the public catalogue as Arrow tables in the port's schema
(stagegate.ports.IMPRESSIONS_SCHEMA, CATALOGUE_SCHEMA), read from Parquet.

- ``parquet`` (:class:`ParquetOfflineData`): your own logs. Three locations, each a local path, a
  ``file://`` URL or an ``s3://bucket/key`` URL (read with boto3, credentials from boto3's own chain:
  environment, ``~/.aws``, instance role; ``endpoint_url`` for S3-compatible stores such as SeaweedFS or
  MinIO). A location ending in ``/`` (or a local folder) is every ``*.parquet`` under it, concatenated in
  name order.
- ``workspace`` (simulator.adapters.WorkspaceOfflineData, registered by the simulator package): the
  simulator's history, written once as Parquet in exactly that schema and read back through
  :class:`ParquetOfflineData`, so the demo takes the same path as your logs.

Every table is checked against its schema (:func:`stagegate.ports.check_table`), and the hold-out must
start after the training log ends: a source that breaks either raises ValueError naming the location.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from stagegate.ports import CATALOGUE_SCHEMA, EMBEDDING_PREFIX, IMPRESSIONS_SCHEMA, check_table


def _list_column(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """(n, k) numpy array -> Arrow list<k> column without a Python loop."""
    n, k = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=type_.value_type))


def impressions_table(batch: Any) -> pa.Table:
    """A ServedBatch (stagegate.logs) as a table of IMPRESSIONS_SCHEMA."""
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
    columns["recent_items"] = _list_column(np.asarray(ctx.recent_items, np.int32), pa.list_(pa.int32()))
    for name, convert in optional.items():
        value = getattr(batch, name, None)
        if value is not None:
            columns[name] = convert(value)
    schema = pa.schema([IMPRESSIONS_SCHEMA.field(name) for name in columns])
    return check_table(pa.Table.from_pydict(columns, schema=schema), IMPRESSIONS_SCHEMA, "impressions")


def catalogue_table(frame: Any) -> pa.Table:
    """The public catalogue frame (simulator.world.catalog.public_frame) as a table of CATALOGUE_SCHEMA."""
    fields = [CATALOGUE_SCHEMA.field(name) for name in CATALOGUE_SCHEMA.names if name in frame.columns]
    emb = [c for c in frame.columns if str(c).startswith(EMBEDDING_PREFIX)]
    fields += [pa.field(c, pa.float64()) for c in emb]
    schema = pa.schema(fields)
    table = pa.Table.from_pandas(frame[[f.name for f in fields]], schema=schema, preserve_index=False)
    return check_table(table, CATALOGUE_SCHEMA, "catalogue", extra_prefix=EMBEDDING_PREFIX)


def _s3_client(endpoint_url: str | None, region: str | None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region)


def read_parquet(location: str, *, endpoint_url: str | None = None, region: str | None = None) -> pa.Table:
    """One Arrow table from a Parquet file or folder, local or on S3 (see the module docstring).

    OSError names the location when it cannot be read (missing file, no such bucket or key, no access).
    """
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        client = _s3_client(endpoint_url, region)
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        try:
            if key.endswith("/") or not key:
                pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                keys = sorted(
                    o["Key"]
                    for page in pages
                    for o in page.get("Contents", [])
                    if o["Key"].endswith(".parquet")
                )
                if not keys:
                    raise OSError(f"{location}: no .parquet objects under this prefix")
            else:
                keys = [key]
            parts = [
                pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read()))
                for k in keys
            ]
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"{location}: cannot read from S3: {exc}") from exc
        return _concat(parts, location)
    if parsed.scheme not in ("", "file"):
        raise OSError(f"{location}: unsupported scheme {parsed.scheme!r} (use a path, file:// or s3://)")
    path = Path(parsed.path if parsed.scheme == "file" else location)
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise OSError(f"{location}: no .parquet files in this folder")
        return _concat([pq.read_table(f) for f in files], location)
    if not path.exists():
        raise OSError(f"{location}: no such file")
    return pq.read_table(path)


def _concat(parts: list[pa.Table], location: str) -> pa.Table:
    try:
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{location}: the Parquet files disagree on their schema: {exc}") from exc


def check_no_overlap(training: pa.Table, holdout: pa.Table, where: str) -> None:
    """The hold-out must begin after the training log ends (the OfflineData contract)."""
    import pyarrow.compute as pc

    if training.num_rows and holdout.num_rows:
        last, first = pc.max(training["t"]).as_py(), pc.min(holdout["t"]).as_py()
        if last >= first:
            raise ValueError(
                f"{where}: the training log (up to t={last}) overlaps the hold-out (from t={first})"
            )


def export_parquet(source: Any, folder: str | Path) -> dict[str, Path]:
    """Write an OfflineData source's three tables as ``holdout.parquet``, ``training_log.parquet`` and
    ``catalogue.parquet`` in ``folder`` (atomically, file by file); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("holdout", "training_log", "catalogue"):
        path = folder / f"{name}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(getattr(source, name)(), tmp)
        tmp.replace(path)
        out[name] = path
    return out


class ParquetOfflineData:
    """Your logs as Parquet: hold-out and training log (IMPRESSIONS_SCHEMA), catalogue (CATALOGUE_SCHEMA)."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        holdout: str
        training_log: str
        catalogue: str
        #: an S3-compatible endpoint (SeaweedFS, MinIO, ...); None for AWS itself
        endpoint_url: str | None = None
        region: str | None = None

    def __init__(self, config: Config) -> None:
        self.config = config
        self._tables: dict[str, pa.Table] = {}

    @classmethod
    def from_config(cls, config: Config, host: Any = None) -> ParquetOfflineData:
        return cls(config)

    def _read(self, name: str, schema: pa.Schema, extra_prefix: str | None = None) -> pa.Table:
        if name not in self._tables:
            location = getattr(self.config, name)
            table = read_parquet(location, endpoint_url=self.config.endpoint_url, region=self.config.region)
            self._tables[name] = check_table(table, schema, f"{name} ({location})", extra_prefix=extra_prefix)
        return self._tables[name]

    def holdout(self) -> pa.Table:
        holdout = self._read("holdout", IMPRESSIONS_SCHEMA)
        check_no_overlap(self._read("training_log", IMPRESSIONS_SCHEMA), holdout, self.config.holdout)
        return holdout

    def training_log(self) -> pa.Table:
        return self._read("training_log", IMPRESSIONS_SCHEMA)

    def catalogue(self) -> pa.Table:
        return self._read("catalogue", CATALOGUE_SCHEMA, extra_prefix=EMBEDDING_PREFIX)
