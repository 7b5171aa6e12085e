"""The example model on its own: trained from Parquet logs in the impressions schema, logged to a fresh
MLflow store, it meets the contract, loads as an ExternalRanker and ranks only candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.byo.test_contract import _ctx
from tests.byo.test_offline_data import _catalogue, _logs

pytest.importorskip("sklearn")


@pytest.fixture
def fresh_mlflow(tmp_path: Path):
    """MLflow on a SQLite file of this test; the process's URIs are put back afterwards."""
    import mlflow

    old = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(old[0])
    mlflow.set_registry_uri(old[1])


def test_example_trains_logs_and_serves_to_the_contract(tmp_path: Path, fresh_mlflow: str) -> None:
    import mlflow

    from examples.sklearn_ranker.train import log_and_register, main, train
    from stagegate.contract import check_version
    from stagegate.models.external import ExternalRanker
    from stagegate.models.loading import load_ranker

    train_table, _ = _logs()
    pq.write_table(train_table, tmp_path / "train.parquet")
    state = train(pq.read_table(tmp_path / "train.parquet"), _catalogue())
    assert state["weights"]["category"].shape == (state["n_categories"],)

    uri = fresh_mlflow
    experiment = mlflow.create_experiment("byo", artifact_location=(tmp_path / "artifacts").as_uri())
    version = log_and_register(state, "example-ranker", experiment)
    report = check_version("example-ranker", version, uri)
    assert report.ok and report.flavour == "contract", report

    ranker = load_ranker(f"models:/example-ranker/{version}", {})  # untagged: the contract flavour
    assert isinstance(ranker, ExternalRanker) and ranker.accepts_k
    # the fake catalogue has 50 items: a context over them, items 1, 4 out of stock, 7 unpublished
    ctx = _ctx(n=6, n_items=50)
    slates = ranker.recommend(ctx, 10)
    assert slates.shape == (6, 10)
    assert not np.isin(slates, [1, 4, 7]).any()
    assert (np.sort(slates, axis=1)[:, 1:] != np.sort(slates, axis=1)[:, :-1]).all()
    again = ranker.recommend(ctx, 10)
    assert np.array_equal(slates, again)  # deterministic

    with pytest.raises(SystemExit):
        main(["--training-log", str(tmp_path / "train.parquet")])  # no catalogue, no model: usage error
