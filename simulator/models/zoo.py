"""The demo zoo: a world with history, and the incumbent and candidates trained from recipes on its logs.

The flow every demo and calibration test repeats (reference §6.4, §6.9):
1. build the live world;
2. a content-based bootstrap policy (``bootstrap.yaml``) serves a warm-up period: a new world has no logs;
3. the incumbent's recipe (``champion.yaml``) trained on the warm-up logs serves the history period,
   stochastically (Plackett–Luce), so the history carries propensities;
4. the history is split in time (train | test); the incumbent's recipe is retrained on the train part (its
   scheduled retrain) and every candidate recipe is trained on exactly the same data, so that the candidates
   differ from the incumbent by recipe only, never by data.
The retrained incumbent is ``models["champion"]``: the model that serves as champion from then on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from simulator.models.common import BaseRanker
from simulator.models.recipe import Recipe, load_recipe
from simulator.models.train import train
from simulator.world.config import WorldConfig
from simulator.world.live import LiveWorld
from stagegate.log_rows import split_by_day
from stagegate.logs import ServedBatch

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CHAMPION = "champion"
BOOTSTRAP = "bootstrap"


@dataclass
class Zoo:
    """A world after its history, with trained models and how long each step took (seconds)."""

    world: LiveWorld
    catalog: pd.DataFrame
    history: ServedBatch  # logged by the incumbent (champion0) with propensities
    train_logs: ServedBatch
    test_logs: ServedBatch
    recipes: dict[str, Recipe]
    models: dict[str, BaseRanker]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def champion(self) -> BaseRanker:
        return self.models[CHAMPION]


def build_zoo(
    config: WorldConfig | None = None,
    candidates: Iterable[str] = ("clickbait", "better"),
    recipe_dir: str | Path = DEFAULT_RECIPES,
    warmup_days: float = 7.0,
    history_days: float = 21.0,
    test_days: float = 7.0,
) -> Zoo:
    """Build a world, log its history with the incumbent and train the incumbent and ``candidates``.

    Recipes are read from ``recipe_dir`` by name (``<name>.yaml``); ``bootstrap`` and ``champion`` must exist.
    """
    recipe_dir = Path(recipe_dir)
    timings: dict[str, float] = {}

    def timed(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 3)

    names = [CHAMPION, *[c for c in candidates if c != CHAMPION]]
    recipes = {n: load_recipe(recipe_dir / f"{n}.yaml") for n in [BOOTSTRAP, *names]}

    t0 = time.perf_counter()
    world = LiveWorld(config)
    catalog = world.catalog_public()
    timed("world_build", t0)

    t0 = time.perf_counter()
    bootstrap = train(recipes[BOOTSTRAP], None, catalog)
    warmup = world.log_history(bootstrap, warmup_days)
    timed("warmup_logs", t0)

    t0 = time.perf_counter()
    champion0 = train(recipes[CHAMPION], warmup, catalog)
    timed("train_champion0", t0)

    t0 = time.perf_counter()
    history = world.log_history(champion0, history_days)
    timed("history_logs", t0)

    train_logs, test_logs = split_by_day(history, world.now - test_days)
    catalog = world.catalog_public()
    models: dict[str, BaseRanker] = {}
    for name in names:
        t0 = time.perf_counter()
        models[name] = train(recipes[name], train_logs, catalog)
        timed(f"train_{name}", t0)
    return Zoo(world, catalog, history, train_logs, test_logs, recipes, models, timings)
