"""One shared suite run against every model family (the scikit-learn estimator-checks idea)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.models import Ranker, common, parse_recipe, train
from simulator.world import take_context

MF = {"family": "mf", "knobs": {"factors": 4, "iterations": 3}}
FAMILIES = {
    "popularity": {"family": "popularity", "label": "click"},
    "popularity_decayed": {"family": "popularity", "knobs": {"half_life_days": 2.0}},
    "itemknn": {"family": "itemknn", "label": "click", "knobs": {"neighbours": 20}},
    "mf": {**MF, "label": "click"},
    "logistic": {"family": "logistic", "label": "click"},
    "logistic_item_only": {
        "family": "logistic",
        "knobs": {"exclude": ["cat_share", "emb_sim"], "context": False},
    },
    "content": {"family": "content"},
    "blend": {
        "family": "blend",
        "components": [{"weight": 1.0, "recipe": MF}, {"recipe": {"family": "popularity"}}],
    },
    "reranker_cap": {"family": "reranker", "knobs": {"category_cap": 2, "freshness_boost": 0.5}, "base": MF},
    "reranker_mmr": {"family": "reranker", "knobs": {"mmr_lambda": 0.7, "category_cap": 3}, "base": MF},
    "reranker_plain": {
        "family": "reranker",
        "knobs": {"in_stock_filter": False, "saliency_weight": 1.0},
        "base": MF,
    },
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def trained(request, tiny):
    recipe = parse_recipe(FAMILIES[request.param], request.param)
    return recipe, train(recipe, tiny.logs, tiny.catalog)


def test_implements_the_ranker_protocol(trained, tiny) -> None:
    recipe, model = trained
    assert isinstance(model, Ranker) and isinstance(model.name, str) and model.name
    ctx = tiny.logs.context
    n_items = len(tiny.catalog)
    s = model.scores(ctx)
    assert s.shape == (ctx.n, n_items) and s.dtype.kind == "f"
    slates = model.recommend(ctx, 10)
    assert slates.shape == (ctx.n, 10) and slates.dtype.kind == "i"
    assert ((slates >= 0) & (slates < n_items)).all()
    srt = np.sort(slates, axis=1)
    assert not (srt[:, 1:] == srt[:, :-1]).any(), "a slate repeats an item"
    assert np.isfinite(ctx.item_age_days[slates]).all(), "an unpublished item was recommended"
    if recipe.family == "reranker" and recipe.typed_knobs().in_stock_filter:
        assert ctx.in_stock[slates].all()


def test_is_deterministic_and_row_independent(trained, tiny) -> None:
    _, model = trained
    ctx = tiny.logs.context
    full = model.recommend(ctx, 10)
    np.testing.assert_array_equal(full, model.recommend(ctx, 10))
    rows = np.arange(0, ctx.n, 7)
    np.testing.assert_array_equal(full[rows], model.recommend(take_context(ctx, rows), 10))


def test_chunking_gives_the_same_answer(trained, tiny, monkeypatch) -> None:
    _, model = trained
    ctx = take_context(tiny.logs.context, np.arange(min(300, tiny.logs.n)))
    expected = model.recommend(ctx, 5)
    monkeypatch.setattr(common, "CHUNK_ROWS", 64)
    np.testing.assert_array_equal(expected, model.recommend(ctx, 5))


def test_serves_unknown_and_cold_users(trained, tiny) -> None:
    _, model = trained
    ctx = take_context(tiny.logs.context, np.arange(4))
    cold = type(ctx)(
        **{**ctx.__dict__, "user_id": ctx.user_id + 10**6, "recent_items": np.full_like(ctx.recent_items, -1)}
    )
    slates = model.recommend(cold, 10)
    assert slates.shape == (4, 10) and np.isfinite(cold.item_age_days[slates]).all()


def test_serves_inside_the_world(trained, tiny) -> None:
    _, model = trained
    world = tiny.world.fork()
    log = world.serve(model, hours=3)
    assert log.n > 0 and not log.error[log.arm == 0].any()
    assert np.isfinite(log.pscore).all()


def test_recommend_with_scores_is_consistent(trained, tiny) -> None:
    _, model = trained
    ctx = take_context(tiny.logs.context, np.arange(50))
    items, scores = model.recommend_with_scores(ctx, 10)
    np.testing.assert_array_equal(items, model.recommend(ctx, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(model.scores(ctx), items, axis=1))
