"""The demo zoo, measured on a small world: the offline winner loses live, the offline-flat model wins.

Numbers come from the world (ground_truth: each ranker at 100 % from the same state, common random numbers)
and from logged clicks (NDCG@10); nothing is hard-coded but the direction the demo is built to show.
"""

from __future__ import annotations

import pytest

from simulator.models.zoo import build_zoo
from simulator.world import small_config
from stagegate.evaluation.offline import evaluate_offline
from tests.models.conftest import RECIPES


@pytest.fixture(scope="module")
def zoo():
    return build_zoo(small_config(seed=2), recipe_dir=RECIPES, warmup_days=7, history_days=14, test_days=5)


def test_clickbait_wins_offline_on_click_ndcg(zoo) -> None:
    catalog = zoo.world.catalog_public()

    def ndcg(model) -> float:
        return float(
            evaluate_offline(model, zoo.test_logs, catalog, k=10, label="click").metrics["ndcg@10"].mean()
        )

    champion, clickbait = ndcg(zoo.champion), ndcg(zoo.models["clickbait"])
    assert clickbait > 1.05 * champion, (clickbait, champion)


def test_true_effects_have_the_designed_signs(zoo) -> None:
    world, champion = zoo.world, zoo.champion
    clickbait = world.ground_truth(champion, zoo.models["clickbait"], days=5, seeds=[0, 1])
    better = world.ground_truth(champion, zoo.models["better"], days=5, seeds=[0, 1])
    # clickbait: more clicks per impression, fewer purchases per click, less revenue per user
    assert clickbait["effect"]["ctr"] > 0
    assert clickbait["effect"]["conversion"] < 0
    assert max(clickbait["effect_per_seed"]["revenue_per_user"]) < 0, clickbait["effect_per_seed"]
    assert min(better["effect_per_seed"]["revenue_per_user"]) > 0, better["effect_per_seed"]
