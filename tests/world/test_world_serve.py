"""Serving: propensities, shadow slates, failures and fallbacks, latency, the clock and the public view."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.world import LiveWorld, concat, split_by_day, take
from simulator.world import plackett_luce as pl
from stagegate.log_rows import serving_batches
from tests.world.helpers import BadIdsRanker, BrokenRanker, FixedRanker, random_ranker, tiny_config


@pytest.fixture
def world() -> LiveWorld:
    return LiveWorld(tiny_config(seed=13))


def test_champion_log_carries_plackett_luce_propensities(world: LiveWorld) -> None:
    log = world.serve(random_ranker(world), hours=12)
    assert log.n > 0 and (log.arm == 0).all()
    assert ((log.pscore > 0) & (log.pscore <= 1)).all()
    prefix = log.pscore_prefix
    assert ((prefix > 0) & (prefix <= 1)).all() and (np.diff(prefix, axis=1) <= 1e-12).all()
    np.testing.assert_allclose(log.pscore[:, 0], prefix[:, 0], rtol=1e-6)  # position 1 is exact
    srt = np.sort(log.items, axis=1)
    assert not (srt[:, 1:] == srt[:, :-1]).any()  # slates have distinct items


def test_deterministic_serving_has_unit_propensities(world: LiveWorld) -> None:
    ranker = random_ranker(world)
    log = world.serve(ranker, hours=6, explore_temperature=None)
    assert (log.pscore == 1.0).all()


def test_rao_blackwellised_marginals_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 8)) * 1.5
    order = pl.sample(logits, 4, rng.random((3, 8)))
    estimate = pl.item_position_marginals(logits, order, 3000, rng)
    draws = pl.topk_order(logits[:, None, :] + rng.gumbel(size=(3, 100_000, 8)), 4)
    brute = (draws == order[:, None, :]).mean(axis=1)
    np.testing.assert_allclose(estimate, brute, atol=0.01)


def test_candidate_arm_and_shadow(world: LiveWorld) -> None:
    champion, candidate, shadow = (
        random_ranker(world, 1),
        random_ranker(world, 2, "c"),
        random_ranker(world, 3, "s"),
    )
    log = world.serve(champion, candidate, candidate_share=0.5, hours=12, shadow=shadow)
    cand = log.arm == 1
    assert cand.any() and (~cand).any()
    # the candidate arm is served like the champion's (Plackett–Luce), so it logs propensities too
    assert ((log.pscore[cand] > 0) & (log.pscore[cand] <= 1)).all() and (log.pscore[cand] < 1).any()
    assert log.shadow_items is not None and log.shadow_items.shape == log.items.shape
    assert not log.shadow_error.any() and (log.shadow_latency_ms > 0).all()
    assert not np.array_equal(log.shadow_items, log.items)  # computed, never shown


def test_failing_candidate_is_logged_and_falls_back_to_the_champion(world: LiveWorld) -> None:
    champion = random_ranker(world, 1)
    log = world.serve(champion, BrokenRanker(np.zeros(world.n_items)), candidate_share=1.0, hours=6)
    assert log.n > 0 and (log.arm == 1).all() and log.error.all()
    assert ((log.items >= 0) & (log.items < world.n_items)).all()
    log = world.serve(champion, BadIdsRanker(np.arange(world.n_items, 0, -1.0)), candidate_share=1.0, hours=6)
    assert 0.3 < log.error.mean() < 0.7
    assert (log.items < world.n_items).all()


def test_latency_follows_the_rankers_median(world: LiveWorld) -> None:
    fast = FixedRanker(np.zeros(world.n_items), latency_ms_median=5.0)
    slow = FixedRanker(np.zeros(world.n_items), latency_ms_median=50.0)
    log = world.serve(fast, slow, candidate_share=0.5, hours=24)
    assert 3.0 < np.median(log.latency_ms[log.arm == 0]) < 8.0
    assert 35.0 < np.median(log.latency_ms[log.arm == 1]) < 70.0


def test_clock_and_fractional_windows(world: LiveWorld) -> None:
    ranker = random_ranker(world)
    world.serve(ranker, hours=0.5)
    world.serve(ranker, hours=1.25)
    assert world.now == pytest.approx(1.75 / 24)
    log = world.serve(ranker, hours=30)
    assert log.context.t.min() >= 1.75 / 24 and log.context.t.max() < 31.75 / 24 + 0.1
    assert (np.diff(log.context.t) >= 0).all() or log.n == 0
    with pytest.raises(ValueError):
        world.serve(ranker, hours=0)
    with pytest.raises(ValueError):
        world.serve(ranker, candidate_share=0.5)  # a share without a candidate


def test_unpublished_items_are_never_shown(world: LiveWorld) -> None:
    log = world.serve(random_ranker(world), hours=24)
    publish = world.catalog_public()["publish_day"].to_numpy()
    assert (publish[log.items] <= log.context.t[:, None]).all()
    assert (publish > world.now).any()  # some items are announced for later


def test_batch_operations_and_serving_snapshots(world: LiveWorld) -> None:
    log = world.log_history(random_ranker(world), days=2)
    first, second = split_by_day(log, 1.0)
    assert first.n + second.n == log.n and (first.context.t < 1.0).all()
    again = concat([first, second])
    np.testing.assert_array_equal(again.items, log.items)
    assert take(log, np.arange(3)).n == 3
    parts = serving_batches(log, world.catalog_public()["publish_day"].to_numpy())
    assert sum(p.n for p in parts) == log.n
    for part in parts:  # every shown item was in stock in its own snapshot... or sold out in that step
        assert part.context.in_stock.shape == (world.n_items,)
        unpacked = np.unpackbits(part.in_stock_at_serve[0], count=world.n_items, bitorder="little").astype(
            bool
        )
        np.testing.assert_array_equal(unpacked, part.context.in_stock)


def test_ground_truth_of_a_ranker_against_itself_is_zero(world: LiveWorld) -> None:
    ranker = random_ranker(world)
    world.log_history(ranker, 1)
    truth = world.ground_truth(ranker, ranker, days=1, seeds=[0], explore_temperature=None)
    assert truth["effect"]["revenue_per_user"] == pytest.approx(0.0, abs=1e-12)
    assert truth["effect"]["clicks_per_user_realised"] == pytest.approx(0.0, abs=1e-12)
    assert world.now == 1.0  # ground truth never moves the world
