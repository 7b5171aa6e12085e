"""Setting up a workspace: the world, a bootstrap champion and its logged history; registering candidates.

``init_workspace`` is what `stagegate world init` runs:

1. build the live world from its config and seed;
2. serve a warm-up period with the content-based bootstrap recipe (no model exists yet);
3. train the champion recipe on those logs and let it serve the history period (stochastically, so that
   every logged slot has a propensity); the last ``holdout_days`` are the offline stage's evaluation data,
   the rest is what the champion and the candidates train on;
4. retrain the champion recipe on the training log, register it, give it the ``champion`` alias and all
   traffic.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from stagegate.datasets import save_batch
from stagegate.registry import CHAMPION_ALIAS
from stagegate.traffic import Split
from stagegate.workspace import Workspace

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
MODEL = "recsys-ranker"
SIZES = {"demo", "small"}


def world_config(size: str, seed: int) -> Any:
    from simulator.world import WorldConfig, small_config

    if size not in SIZES:
        raise ValueError(f"unknown world size {size!r}; choose one of {sorted(SIZES)}")
    return small_config(seed=seed) if size == "small" else WorldConfig(seed=seed)


def _register(ranker: Any, recipe: Any, model: str, ws: Workspace) -> str:
    import mlflow

    from simulator.models.pyfunc import log_ranker
    from stagegate.runtime import use_tracking

    experiment_id = use_tracking(ws.mlflow_uri, ws.artifact_root)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train {recipe.name}"):
        mlflow.log_params({"recipe": recipe.name, "family": recipe.family})
        version = log_ranker(ranker, recipe, registered_model_name=model)
    from stagegate.registry import Registry

    Registry(ws.mlflow_uri).tag(model, str(version.version), status="registered", stage="registered")
    return str(version.version)


def init_workspace(
    seed: int = 7,
    size: str = "demo",
    root: str | Path | None = None,
    warmup_days: float = 7.0,
    history_days: float = 21.0,
    holdout_days: float = 7.0,
    model: str = MODEL,
) -> dict[str, Any]:
    from simulator.models.recipe import load_recipe
    from simulator.models.train import train
    from simulator.world import LiveWorld, take

    ws = Workspace.from_env(root)
    world = LiveWorld(world_config(size, seed))
    bootstrap = train(load_recipe(RECIPES / "bootstrap.yaml"), None, world.catalog_public())
    warmup = world.log_history(bootstrap, days=warmup_days)
    champion_recipe = load_recipe(RECIPES / "champion.yaml")
    # The model that logs the history is the champion recipe trained on the warm-up week. The champion that
    # candidates are compared with is the same recipe retrained on the training log, so that the incumbent
    # and the candidates differ by recipe only, not by data, and none of them is the logger (which would
    # start the offline comparison with an unfair advantage).
    logger = train(champion_recipe, warmup, world.catalog_public())
    history = world.log_history(logger, days=history_days)
    save_batch(history, ws.history_path)
    holdout_start = warmup_days + history_days - holdout_days
    training_log = take(history, np.flatnonzero(history.context.t < holdout_start))
    champion = train(champion_recipe, training_log, world.catalog_public())
    version = _register(champion, champion_recipe, model, ws)

    from stagegate.registry import Registry

    registry = Registry(ws.mlflow_uri)
    registry.set_alias(model, CHAMPION_ALIAS, version)
    registry.tag(model, version, status="promoted", stage="bootstrap", reason="first champion of a new world")
    from simulator.world_state import create_key, save_world

    create_key(ws.world_key_path)  # a new world, a new key: no state signed before this one verifies
    save_world(world, ws.world_path, ws.world_key_path)
    from stagegate.runtime import Runtime

    # The first champion gets all traffic through the traffic port in force (the connections file).
    Runtime(ws).traffic.set_split(Split(champion=version))
    manifest = {
        "world": world.config.model_dump(mode="json"),
        "size": size,
        "model": model,
        "warmup_days": warmup_days,
        "history_start_day": warmup_days,
        "holdout_start_day": holdout_start,
        "history_requests": int(history.n),
        "champion_version": version,
    }
    ws.manifest_path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return {**manifest, "workspace": str(ws.root)}


def register_candidate(recipe_path: str | Path, model: str = MODEL, root: str | Path | None = None) -> str:
    """Train ``recipe_path`` on the workspace's training log (before the hold-out) and register it."""
    from simulator.models.recipe import load_recipe
    from simulator.models.train import train
    from stagegate.runtime import Runtime

    recipe = load_recipe(recipe_path)  # RecipeError names the file and field
    rt = Runtime(Workspace.from_env(root))
    ranker = train(recipe, rt.training_log(), rt.world.catalog_public())
    return _register(ranker, recipe, model, rt.workspace)


def fresh_workspace(root: Path) -> Path:
    """Empty ``root`` (only a stagegate workspace or an empty folder) and point STAGEGATE_HOME at it."""
    root = root.resolve()
    if root.exists() and any(root.iterdir()):
        if not (root / "manifest.json").exists() and not (root / "mlflow.db").exists():
            raise FileExistsError(f"{root} is not empty and not a stagegate workspace; refusing to delete it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    os.environ["STAGEGATE_HOME"] = str(root)
    return root
