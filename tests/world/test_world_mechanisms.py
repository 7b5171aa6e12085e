"""The mechanisms that make clicks and revenue disagree, each checked against the world's hidden truth."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.world import LiveWorld, Mechanisms
from tests.world.helpers import FixedRanker, random_ranker, tiny_config


@pytest.fixture(scope="module")
def random_log():
    """Three days of a random ranker: every kind of item gets shown, so rates can be compared by kind."""
    world = LiveWorld(tiny_config(seed=21, n_users=800, requests_per_hour=60.0))
    log = world.log_history(random_ranker(world, 4, in_stock_only=False), days=3)
    return world, log


def _rates(log, mask: np.ndarray) -> tuple[float, float]:
    """CTR of the impressions in ``mask`` and conversion of their clicks."""
    clicks = log.clicks[mask].sum()
    return clicks / mask.sum(), log.purchases[mask].sum() / max(clicks, 1)


def test_bait_raises_clicks_not_purchases(random_log) -> None:
    world, log = random_log
    bait = world.oracle().item_is_bait[log.items]
    in_stock = log.stock_at_serve > 0
    ctr_bait, conv_bait = _rates(log, bait & in_stock)
    ctr_other, conv_other = _rates(log, ~bait & in_stock)
    assert ctr_bait > 1.5 * ctr_other, (ctr_bait, ctr_other)
    assert conv_bait < 0.7 * conv_other, (conv_bait, conv_other)


def test_without_the_bait_mechanism_bait_items_are_not_clickier() -> None:
    world = LiveWorld(
        tiny_config(seed=21, n_users=800, requests_per_hour=60.0, mechanisms=Mechanisms(bait=False))
    )
    log = world.log_history(random_ranker(world, 4), days=3)
    bait = world.oracle().item_is_bait[log.items]
    ctr_bait, _ = _rates(log, bait)
    ctr_other, _ = _rates(log, ~bait)
    assert ctr_bait < 1.2 * ctr_other, (ctr_bait, ctr_other)


def test_saliency_is_a_public_noisy_proxy_of_bait(random_log) -> None:
    world, _ = random_log
    catalog = world.catalog_public()
    assert {"quality", "bait", "is_bait"}.isdisjoint(catalog.columns)
    corr = np.corrcoef(catalog["saliency"], world.oracle().item_bait)[0, 1]
    assert 0.5 < corr < 0.95


def test_out_of_stock_items_are_clicked_but_never_bought(random_log) -> None:
    _, log = random_log
    oos = log.stock_at_serve <= 0
    assert oos.any() and log.clicks[oos].any()
    assert not log.purchases[oos].any()


def test_stock_depletes_with_purchases_and_never_oversells() -> None:
    world = LiveWorld(tiny_config(seed=8, requests_per_hour=80.0))
    ranker = random_ranker(world, 1)
    world.serve(ranker, hours=1)  # stay inside day 0: no restock in the window below
    before = world.public_stock()
    log = world.serve(ranker, hours=6)
    sold = np.bincount(log.items[log.purchases], minlength=world.n_items)
    assert sold.sum() > 0
    np.testing.assert_array_equal(world.public_stock(), before - sold)
    assert (world.public_stock() >= 0).all()


def test_weekly_restock_refills_sold_out_items() -> None:
    world = LiveWorld(tiny_config(seed=8, requests_per_hour=80.0))
    popular = np.zeros(world.n_items)
    popular[:15] = 10.0  # everyone is shown the same few items: they sell out
    ranker = FixedRanker(popular - 0.01 * np.arange(world.n_items))
    sold_out_days = {}
    for day in range(9):
        world.serve(ranker, hours=24)
        stock = world.public_stock()
        for item in np.flatnonzero(stock <= 0):
            sold_out_days.setdefault(int(item), day)
    assert sold_out_days, "the concentrated ranker should sell something out"
    stock = world.public_stock()
    restocked = [i for i in sold_out_days if stock[i] > 0]
    assert restocked, "sold-out items come back after a weekly restock"


def test_default_world_calibration_targets() -> None:
    """Reference §6.3 item 5, loosely: CTR 2-6 %, conversion 5-20 %, ~2.5 slates per session."""
    world = LiveWorld(tiny_config(seed=4, n_users=800, requests_per_hour=50.0))
    log = world.log_history(random_ranker(world, 2), days=3)
    ctr = log.clicks.mean()
    conversion = log.purchases.sum() / log.clicks.sum()
    slates_per_session = log.n / np.unique(log.session_id).size
    assert 0.02 < ctr < 0.08, ctr
    assert 0.03 < conversion < 0.2, conversion
    assert 1.8 < slates_per_session < 3.5, slates_per_session
    assert set(np.unique(log.context.user_segment)) <= {0, 1, 2}
    assert (log.context.user_segment == 0).mean() > 0.05  # cold-start users keep arriving
