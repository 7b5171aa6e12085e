"""Shared fixtures for model tests: a tiny world and a few days of its public logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from simulator.models import load_recipe, train
from simulator.world import LiveWorld, ServedBatch, small_config

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@dataclass
class TinyData:
    world: LiveWorld
    catalog: pd.DataFrame
    logs: ServedBatch


@pytest.fixture(scope="session")
def tiny() -> TinyData:
    world = LiveWorld(small_config(seed=17, n_users=500, n_items=120, requests_per_hour=40.0))
    bootstrap = train(load_recipe(RECIPES / "bootstrap.yaml"), None, world.catalog_public())
    logs = world.log_history(bootstrap, days=4)
    return TinyData(world, world.catalog_public(), logs)
