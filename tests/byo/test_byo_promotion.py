"""Bring your own model, end to end: a scikit-learn ranker trained outside stagegate on the workspace's
training log exported to Parquet (examples/sklearn_ranker), logged with mlflow.pyfunc.log_model to the
ranking contract, goes through every stage; a version whose signature breaks the contract is refused at
open-promotion with every problem named, and nothing moves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator.setup import MODEL
from tests.e2e.test_promotion import FAST_STAGES

pytestmark = pytest.mark.slow

# the end-to-end tests' fast stages, with the offline stage validating the hold-out first
STAGES = {
    **FAST_STAGES,
    "offline": {
        **FAST_STAGES["offline"],
        "expectations": str(Path(__file__).resolve().parents[2] / "expectations" / "eval_events.yaml"),
    },
}


def _policy(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"model": MODEL, "approvals": "auto", "stages": STAGES}))
    return path


def _state(root: Path) -> dict:
    from stagegate.runtime import Runtime
    from stagegate.workspace import Workspace

    rt = Runtime(Workspace.from_env(root))
    aliases = {
        a: (v.version if (v := rt.registry.get_alias(MODEL, a)) else None)
        for a in ("champion", "candidate", "previous")
    }
    return {"rt": rt, "aliases": aliases, "split": rt.traffic.get_split()}


def test_external_sklearn_ranker_goes_through_every_stage(byo_workspace: dict, tmp_path: Path) -> None:
    from flows.promote import promote
    from stagegate.contract import check_version
    from stagegate.models.external import ExternalRanker

    version = byo_workspace["versions"]["sklearn"]
    champion = byo_workspace["info"]["champion_version"]
    before = _state(byo_workspace["root"])
    assert check_version(MODEL, version, before["rt"].workspace.mlflow_uri).flavour == "contract"
    assert isinstance(before["rt"].ranker(MODEL, version), ExternalRanker)

    result = promote(model=MODEL, version=version, policy=str(_policy(tmp_path / "p.yaml")))

    assert result.outcome in ("promoted", "rejected", "rolled_back"), result
    assert "failed with an error" not in result.reason, result.reason
    for stage in result.stages:
        assert "failed with an error" not in stage["reason"], stage
    # a lenient policy: the external model is promoted through all five configured stages
    assert result.outcome == "promoted", result.reason
    assert [s["stage"] for s in result.stages] == list(STAGES)
    assert all(s["decision"] == "advance" for s in result.stages), result.stages
    after = _state(byo_workspace["root"])
    assert after["aliases"] == {"champion": version, "candidate": None, "previous": champion}
    assert after["split"].champion == version and after["split"].candidate is None


def test_version_breaking_the_contract_is_refused_and_nothing_moves(
    byo_workspace: dict, tmp_path: Path
) -> None:
    from flows.promote import promote
    from stagegate.contract import ContractError

    version = byo_workspace["versions"]["breaking"]
    before = _state(byo_workspace["root"])
    ledger_before = before["rt"].events.promotions(MODEL)

    with pytest.raises(ContractError) as caught:
        promote(model=MODEL, version=version, policy=str(_policy(tmp_path / "p.yaml")))

    message = str(caught.value)
    for field in ("inputs.request_id", "inputs.candidate_items", "outputs.request_id", "outputs.item_ids"):
        assert field in message, message
    after = _state(byo_workspace["root"])
    assert after["aliases"] == before["aliases"]
    assert after["split"] == before["split"]
    assert after["rt"].events.promotions(MODEL) == ledger_before
    tags = after["rt"].registry.get_version(MODEL, version).tags
    assert "stagegate.status" not in tags or tags["stagegate.status"] != "in_progress"


def test_recipe_models_still_meet_the_contract(byo_workspace: dict) -> None:
    from stagegate.contract import check_version

    rt = _state(byo_workspace["root"])["rt"]
    report = check_version(MODEL, byo_workspace["info"]["champion_version"], rt.workspace.mlflow_uri)
    assert report.ok and report.flavour == "recipe", report


def test_holdout_through_the_port_equals_the_simulator_log(byo_workspace: dict) -> None:
    """The demo takes the same path as your logs: the workspace's hold-out, written as Parquet in
    IMPRESSIONS_SCHEMA and read back through the OfflineData port, is the simulator's log field by field."""
    import pyarrow.parquet as pq

    from stagegate.log_rows import serving_batches, take
    from stagegate.ports import IMPRESSIONS_SCHEMA, check_table

    rt = _state(byo_workspace["root"])["rt"]
    via_port = rt.holdout()
    assert (Path(byo_workspace["root"]) / "offline" / "holdout.parquet").exists()
    check_table(
        pq.read_table(Path(byo_workspace["root"]) / "offline" / "holdout.parquet"), IMPRESSIONS_SCHEMA, "x"
    )
    rows = np.flatnonzero(rt.history.context.t >= float(rt.manifest["holdout_start_day"]))
    publish = rt.world.catalog_public().sort_values("item_id")["publish_day"].to_numpy(float)
    direct = serving_batches(take(rt.history, rows), publish)
    assert len(direct) == len(via_port) > 1
    for a, b in zip(direct, via_port, strict=True):
        for f in dataclasses.fields(a.context):
            x, y = getattr(a.context, f.name), getattr(b.context, f.name)
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        for f in dataclasses.fields(a):
            if f.name == "context" or getattr(a, f.name) is None:
                continue
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
