"""Ground truth for candidate recipes: `stagegate world oracle RECIPE` (reference §6.8).

For a recipe (or every recipe in a folder), build the zoo world (bootstrap, incumbent history, champion
retrained on the training log), train the candidate on the same training log, and run
:func:`stagegate.world.oracle.ground_truth`: the candidate at 100 % against the champion at 100 %, from the
same state, with common random numbers, over ``seeds`` seeds and ``days`` simulated days. The label follows
§6.8, on the seeds' 95 % t interval of each relative effect:

- ``reject`` if the upper bound of Δrevenue < −0.5 %, or a guardrail is violated;
- ``promote`` if the lower bound of Δrevenue > +0.5 % and no guardrail is violated;
- ``neutral`` otherwise (either decision is acceptable).

Guardrails (each proven beyond its margin by the interval): cold-start revenue per user upper bound
< −5 %; mean satisfaction difference upper bound < −0.1; out-of-stock click share up by more than 2 points
(realised, when the log carries stock). Labels come from the world, never from the recipe files.
This module reads the world's hidden truth: nothing in the pipeline may import it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REVENUE_MARGIN = 0.005
COLD_START_MARGIN = -0.05
SATISFACTION_MARGIN = -0.1
OOS_SHARE_MARGIN = 0.02
REPORTED = (
    "revenue_per_user",
    "clicks_per_user",
    "purchases_per_user",
    "ctr",
    "conversion",
    "cold_start_revenue_per_user",
    "sessions_per_user",
    "mean_satisfaction",
    "oos_click_share_realised",
)


def recipe_paths(recipe: str | Path) -> list[Path]:
    """A recipe file, or every ``*.yaml`` in a folder (sorted), without ``bootstrap`` and ``champion``."""
    p = Path(recipe)
    if p.is_dir():
        return [f for f in sorted(p.glob("*.yaml")) if f.stem not in {"bootstrap", "champion"}]
    if not p.exists():
        raise FileNotFoundError(f"no recipe at {p}")
    return [p]


def label(truth: dict[str, Any]) -> tuple[str, list[str]]:
    """(promote | reject | neutral, reasons) from a ground-truth result (reference §6.8)."""
    ci = truth["ci95"]
    lo, hi = ci["revenue_per_user"]
    reasons: list[str] = []
    cold_hi = ci["cold_start_revenue_per_user"][1]
    if cold_hi == cold_hi and cold_hi < COLD_START_MARGIN:
        reasons.append(f"cold-start revenue down (upper bound {cold_hi:+.1%})")
    sat_hi = ci["mean_satisfaction"][1]
    if sat_hi == sat_hi and sat_hi < SATISFACTION_MARGIN:
        reasons.append(f"satisfaction down (upper bound {sat_hi:+.2f})")
    oos_ch = truth["champion"].get("oos_click_share_realised", float("nan"))
    oos_ca = truth["candidate"].get("oos_click_share_realised", float("nan"))
    if oos_ch == oos_ch and oos_ca == oos_ca and oos_ca - oos_ch > OOS_SHARE_MARGIN:
        reasons.append(f"out-of-stock click share up {oos_ca - oos_ch:+.1%}")
    if hi == hi and hi < -REVENUE_MARGIN:
        return "reject", [f"revenue down (upper bound {hi:+.1%})", *reasons]
    if reasons:
        return "reject", reasons
    if lo == lo and lo > REVENUE_MARGIN:
        return "promote", [f"revenue up (lower bound {lo:+.1%})"]
    return "neutral", [
        f"revenue effect {truth['effect']['revenue_per_user']:+.1%}, CI [{lo:+.1%}, {hi:+.1%}]"
    ]


def world_config(size: str, seed: int = 7) -> Any:
    from stagegate.setup import world_config as _world_config

    return _world_config(size, seed)


def oracle(
    recipes: Sequence[str | Path],
    *,
    seeds: int = 10,
    days: float = 7.0,
    size: str = "small",
    world_seed: int = 7,
    zoo: Any = None,
) -> dict[str, Any]:
    """Ground truth of every recipe; ``zoo`` (from :func:`stagegate.models.zoo.build_zoo`) is reused if given.

    Returns ``{"config": {...}, "recipes": {name: {"label", "reasons", "effect", "ci95", "seconds"}}}``.
    """
    from stagegate.models.recipe import load_recipe
    from stagegate.models.train import train
    from stagegate.models.zoo import build_zoo

    t0 = time.perf_counter()
    if zoo is None:
        zoo = build_zoo(world_config(size, world_seed), candidates=())
    out: dict[str, Any] = {
        "config": {
            "size": size,
            "world_seed": world_seed,
            "seeds": seeds,
            "days": days,
            "world_config_hash": _config_hash(zoo.world.config),
            "zoo_seconds": round(time.perf_counter() - t0, 2),
        },
        "recipes": {},
    }
    for path in recipes:
        t1 = time.perf_counter()
        recipe = load_recipe(path)
        candidate = train(recipe, zoo.train_logs, zoo.catalog)
        truth = zoo.world.ground_truth(zoo.champion, candidate, days=days, seeds=list(range(seeds)))
        verdict, reasons = label(truth)
        out["recipes"][recipe.name] = {
            "path": str(path),
            "label": verdict,
            "reasons": reasons,
            "effect": {m: truth["effect"][m] for m in REPORTED},
            "ci95": {m: truth["ci95"][m] for m in REPORTED},
            "champion": {m: truth["champion"][m] for m in REPORTED},
            "n_users": truth["n_users"],
            "seconds": round(time.perf_counter() - t1, 2),
        }
    return out


def _config_hash(config: Any) -> str:
    import hashlib

    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def oracle_command(recipe: Path, seeds: int, days: float, size: str) -> None:
    """`stagegate world oracle RECIPE`: print the ground truth of RECIPE (a file or a folder) as JSON."""
    result = oracle(recipe_paths(recipe), seeds=seeds, days=days, size=size)
    print(json.dumps(result, indent=2, default=float))
