"""A/A: an exact copy of the champion in the candidate arm is indistinguishable from the champion.

Both arms are served by the same policy (Plackett–Luce over the arm's ranker, shared Gumbel uniforms), so a
copy shows exactly the champion's slates; before, the candidate arm was served deterministically and a copy
of the champion showed −3 % cold-start revenue in truth.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from simulator.models import load_recipe, train
from simulator.world import LiveWorld
from tests.models.conftest import RECIPES
from tests.world.helpers import random_ranker, tiny_config


@pytest.fixture(scope="module")
def trained() -> tuple[LiveWorld, object]:
    """A tiny world after a bootstrap week, and the champion recipe trained on that week's log."""
    world = LiveWorld(tiny_config(seed=21))
    catalog = world.catalog_public()
    logs = world.log_history(train(load_recipe(RECIPES / "bootstrap.yaml"), None, catalog), days=4)
    champion = train(load_recipe(RECIPES / "champion.yaml"), logs, world.catalog_public())
    return world, champion


def test_a_copy_in_the_candidate_arm_shows_the_champions_slates(trained) -> None:
    world, champion = trained
    alone = world.fork(truth_seed=4).serve(champion, hours=24)
    split = world.fork(truth_seed=4).serve(champion, copy.deepcopy(champion), candidate_share=0.5, hours=24)
    assert (split.arm == 1).any() and (split.arm == 0).any()
    for field in ("items", "clicks", "purchases", "revenue"):
        np.testing.assert_array_equal(getattr(split, field), getattr(alone, field), err_msg=field)
    # the copy's arm logs the champion's propensities (forks skip the Monte-Carlo marginals); equal up to the
    # last bits, which move with the batch a request is scored in (BLAS blocking)
    np.testing.assert_allclose(split.pscore_prefix, alone.pscore_prefix, rtol=1e-9)


@pytest.mark.parametrize("temperature", [0.3, None])
def test_ground_truth_of_an_exact_copy_is_zero_with_intervals_covering_zero(trained, temperature) -> None:
    world, champion = trained
    truth = world.ground_truth(
        champion, copy.deepcopy(champion), days=2, seeds=[0, 1, 2], explore_temperature=temperature
    )
    for metric in ("revenue_per_user", "cold_start_revenue_per_user", "purchases_per_user"):
        lo, hi = truth["ci95"][metric]
        assert lo <= 0.0 <= hi, (metric, lo, hi)
        assert truth["effect"][metric] == pytest.approx(0.0, abs=1e-12), metric
    assert truth["champion"]["cold_start_revenue_per_user"] > 0  # the metric is not vacuously zero


def test_ground_truth_still_tells_a_different_ranker_apart(trained) -> None:
    """The same call is not blind: a random ranker against the trained champion has a clear effect."""
    world, champion = trained
    truth = world.ground_truth(champion, random_ranker(world, 9), days=2, seeds=[0, 1, 2])
    lo, hi = truth["ci95"]["revenue_per_user"]
    assert hi < 0.0, (lo, hi)
