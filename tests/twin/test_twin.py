"""TwinWorld: fitted from a public log and the public catalogue only; PBM, shrinkage, stock, CRN."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from simulator.models.zoo import build_zoo
from simulator.world import small_config
from simulator.world.twin import TwinWorld
from tests.world.helpers import FixedRanker, RandomRanker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zoo():
    return build_zoo(small_config(seed=5), candidates=())


@pytest.fixture(scope="module")
def twin(zoo):
    return TwinWorld.fit(zoo.train_logs, zoo.catalog)


def test_fit_needs_only_pickled_public_data(zoo, twin, tmp_path: Path) -> None:
    """A fresh process that never builds a LiveWorld fits the same twin from a pickled log + catalogue."""
    data = tmp_path / "public.pkl"
    data.write_bytes(pickle.dumps((zoo.train_logs, zoo.catalog)))
    out = tmp_path / "twin.npz"
    script = textwrap.dedent(
        f"""
        import gc, pickle, sys
        import numpy as np
        logs, catalog = pickle.loads(open({str(data)!r}, "rb").read())
        from simulator.world.live import LiveWorld
        from simulator.world.twin import TwinWorld
        twin = TwinWorld.fit(logs, catalog)
        assert not any(isinstance(o, LiveWorld) for o in gc.get_objects()), "a LiveWorld exists"
        np.savez({str(out)!r}, a=twin.attractiveness, c=twin.conversion, e=twin.examination)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=120)
    got = np.load(out)
    np.testing.assert_allclose(got["a"], twin.attractiveness)
    np.testing.assert_allclose(got["c"], twin.conversion)
    np.testing.assert_allclose(got["e"], twin.examination)
    # what was pickled holds no hidden truth: no world, catalogue truth or oracle classes in the stream
    blob = data.read_bytes()
    for hidden in (b"LiveWorld", b"WorldOracle", b"Catalog\n", b"quality", b"is_bait"):
        assert hidden not in blob


def test_twin_module_reads_no_hidden_state() -> None:
    source = (ROOT / "simulator" / "world" / "twin.py").read_text()
    for forbidden in ("world.live", "world.oracle", "._catalog", ".quality", ".bait", "_taste", "oracle("):
        assert forbidden not in source, forbidden


def test_examination_follows_position_and_device(twin) -> None:
    desktop, mobile = twin.examination
    assert desktop[0] > desktop[2] > desktop[6] > 0.02  # desktop shows 10 slots, decaying
    assert mobile[0] > mobile[1] > mobile[4]
    assert mobile[6:].max() < 0.02  # mobile shows 6 slots: positions 7..10 are never examined
    assert mobile[2] < desktop[2]  # steeper decay on mobile


def test_shrinkage_keeps_rates_in_range_and_fills_unseen_items(zoo, twin) -> None:
    shown = np.bincount(zoo.train_logs.items.ravel(), minlength=twin.n_items) > 0
    for rate in (twin.attractiveness, twin.conversion):
        assert np.all((rate > 0) & (rate < 1))
    category = zoo.catalog.sort_values("item_id")["category"].to_numpy()
    unseen = np.flatnonzero(~shown)
    if unseen.size:  # an item never shown gets exactly its category's prior mean
        same = [
            np.unique(twin.attractiveness[unseen][category[unseen] == c]).size
            for c in np.unique(category[unseen])
        ]
        assert max(same) == 1


def test_common_random_numbers_and_stock_depletion(zoo, twin) -> None:
    traffic = zoo.test_logs.context
    champ = twin.ab(zoo.champion, zoo.champion, traffic, days=3)
    for m in champ["champion"].metrics:
        np.testing.assert_array_equal(champ["champion"].metrics[m], champ["candidate"].metrics[m])
    # a ranker that always shows the same ten items sells them out; with no stock it earns nothing
    order = np.argsort(-twin.attractiveness * twin.conversion * twin.price)
    fixed = FixedRanker(np.where(np.isin(np.arange(twin.n_items), order[:10]), 1.0, 0.0))
    run = twin.simulate(fixed, traffic, days=7)
    assert (run.stock_end[order[:10]] < twin.stock[order[:10]]).any()
    empty = TwinWorld(**{**twin.__dict__, "stock": np.zeros_like(twin.stock)})
    assert empty.simulate(fixed, traffic, days=1).totals["revenue_per_user"] == 0.0


def test_twin_prefers_the_champion_over_random_slates(zoo, twin) -> None:
    # the fitted response model, without stock: with stock, whether a concentrated deterministic slate sells
    # out before random slates do flips with the world's path (seeds 5-7: champion ahead, behind, ahead)
    unlimited = TwinWorld(**{**twin.__dict__, "stock": np.full_like(twin.stock, 10**9)})
    res = unlimited.ab(RandomRanker(twin.n_items), zoo.champion, zoo.test_logs.context, days=7)
    assert res["candidate"].totals["revenue_per_user"] > res["champion"].totals["revenue_per_user"]
    assert res["candidate"].totals["clicks_per_user"] > res["champion"].totals["clicks_per_user"]


def test_simulation_stage_evidence_is_paired_with_twin_and_ope_metrics(zoo) -> None:
    from flows.stages.simulation import simulation_evidence
    from stagegate.log_rows import serving_batches
    from stagegate.policy.schema import SimulationStage

    publish_day = zoo.catalog.sort_values("item_id")["publish_day"].to_numpy(float)
    holdout = serving_batches(zoo.test_logs, publish_day)  # the runtime's shape: one batch per snapshot
    config = SimulationStage(days=2, estimators=["ips", "dr"])
    evidence, records = simulation_evidence(
        zoo.champion, zoo.champion, zoo.train_logs, holdout, zoo.catalog, config
    )
    cand, champ = evidence.arms["candidate"], evidence.arms["champion"]
    assert evidence.paired and evidence.stage == "simulation"
    np.testing.assert_array_equal(cand.user_ids, champ.user_ids)
    for name in (
        "revenue_per_user",
        "clicks_per_user",
        "purchases_per_user",
        "revenue_per_user:dr",
        "revenue_per_user:snips",
        "clicks_per_user:ips",
    ):
        assert cand.metrics[name].shape == cand.user_ids.shape
    # the same model in both arms: identical twin outcomes (common random numbers)
    np.testing.assert_array_equal(cand.metrics["revenue_per_user"], champ.metrics["revenue_per_user"])
    assert records["twin"]["days"] == 2 and "ope_revenue" in records


def test_policies_validate_with_the_new_simulation_fields() -> None:
    from stagegate.policy.load import load_policy

    for name in ("default", "demo"):
        sim = load_policy(ROOT / "policies" / f"{name}.yaml").stages.simulation
        assert sim is not None and sim.days > 0 and "dr" in sim.estimators


def test_taste_weight_is_chosen_out_of_sample(zoo, twin) -> None:
    assert twin.info["taste_weight_source"].startswith("hold-out")
    assert twin.info["taste_weight"] <= twin.info["taste_weight_in_sample"]
    before = TwinWorld.fit(zoo.train_logs, zoo.catalog, taste_holdout=0.0)
    assert before.info["taste_weight_source"] == "in-sample"
    assert before.info["taste_weight"] == twin.info["taste_weight_in_sample"]
    with pytest.raises(ValueError, match="taste_holdout"):
        TwinWorld.fit(zoo.train_logs, zoo.catalog, taste_holdout=1.0)


def test_no_taste_in_the_log_means_no_taste_term(zoo) -> None:
    """Known truth: with the click rows shuffled across requests, clicks carry no user-item affinity. The
    factors still memorise them in sample (a positive weight there); the hold-out weight is 0."""
    from dataclasses import replace

    from stagegate.log_rows import concat

    logs = zoo.train_logs if not isinstance(zoo.train_logs, list) else concat(zoo.train_logs)
    perm = np.random.default_rng(3).permutation(logs.n)
    shuffled = replace(logs, clicks=logs.clicks[perm], purchases=logs.purchases[perm])
    twin = TwinWorld.fit(shuffled, zoo.catalog)
    assert twin.info["taste_weight_in_sample"] > 0
    assert twin.info["taste_weight"] == 0.0
