"""Train a recipe on logged interactions and the public catalogue: ``train(recipe, logs, catalog)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.models.common import BaseRanker
from simulator.models.interactions import training_window
from simulator.models.recipe import Recipe
from simulator.world.catalog import public_embeddings
from simulator.world.threads import single_threaded_blas
from stagegate.logs import ServedBatch

if TYPE_CHECKING:
    import pandas as pd


def _leaf_fitters() -> dict[str, Callable[..., BaseRanker]]:
    from simulator.models.content import fit_content
    from simulator.models.itemknn import fit_itemknn
    from simulator.models.logistic import fit_logistic
    from simulator.models.mf import fit_mf
    from simulator.models.popularity import fit_popularity

    return {
        "popularity": fit_popularity,
        "itemknn": fit_itemknn,
        "mf": fit_mf,
        "logistic": fit_logistic,
        "content": fit_content,
    }


NEEDS_NO_LOGS = frozenset({"content"})


def train(recipe: Recipe, logs: ServedBatch | None, catalog: pd.DataFrame) -> BaseRanker:
    """Fit the model a recipe describes. Each (sub-)recipe reads its own label and training window.

    ``logs`` may be None only for families that need no interactions (content): the bootstrap policy that
    produces a new world's first logs.
    """
    with single_threaded_blas():
        return _train(recipe.resolved(), logs, catalog)


def _train(recipe: Recipe, logs: ServedBatch | None, catalog: pd.DataFrame) -> BaseRanker:
    if logs is None and recipe.family not in NEEDS_NO_LOGS | {"blend", "reranker"}:
        raise ValueError(f"recipe {recipe.name!r}: family {recipe.family!r} needs training logs")
    window = training_window(logs, recipe.train_days) if logs is not None else None
    if recipe.family == "blend":
        from simulator.models.blend import Blend

        model: BaseRanker = Blend(
            recipe.name, [(c.weight, _train(c.recipe, logs, catalog)) for c in recipe.components]
        )
    elif recipe.family == "reranker":
        from simulator.models.reranker import Reranker

        assert recipe.base is not None  # guaranteed by the schema
        frame = catalog.sort_values("item_id")
        price = frame["price"].to_numpy(dtype=float)
        model = Reranker(
            recipe.name,
            _train(recipe.base, logs, catalog),
            recipe.typed_knobs(),  # type: ignore[arg-type]
            category=frame["category"].to_numpy(dtype=np.int64),
            embeddings=public_embeddings(frame),
            saliency=frame["saliency"].to_numpy(dtype=float),
            log_price=np.log(price),
        )
    else:
        fit = _leaf_fitters()[recipe.family]
        model = fit(window, catalog, recipe.label, recipe.typed_knobs(), recipe.name)
    _apply_serving_overrides(model, recipe)
    model.recipe = recipe  # type: ignore[attr-defined]  # provenance: what was trained
    return model


def _apply_serving_overrides(model: Any, recipe: Recipe) -> None:
    if recipe.latency_ms_median is not None:
        model.latency_ms_median = recipe.latency_ms_median
    if recipe.error_rate is not None:
        model.error_rate = recipe.error_rate
