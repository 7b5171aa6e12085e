"""The world's hidden truth, for tests and benchmarks: the oracle view and the ground-truth A/B.

Nothing in the pipeline may call this module: the offline stage, the simulation twin and the canary see only
logs and the public catalogue. Benchmarks use :func:`ground_truth` to label candidates (reference §6.8):
the candidate at 100 % against the champion at 100 %, from the same state, with common random numbers, over
several seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from stagegate.logs import ServedBatch

if TYPE_CHECKING:
    from simulator.world.users import Users
    from stagegate.models.base import Ranker


class TruthWorld(Protocol):
    """What the ground truth needs of a world (LiveWorld). A protocol, so that this module does not import
    the world it judges: live.py imports oracle.py, never the other way round."""

    _users: Users
    _satisfaction: np.ndarray
    _expected: dict[str, float]

    @property
    def now(self) -> float: ...

    def fork(self, truth_seed: int | None = None) -> TruthWorld: ...

    def serve(
        self,
        champion: Ranker,
        candidate: Ranker | None = None,
        candidate_share: float = 0.0,
        hours: float = 1.0,
        shadow: Ranker | None = None,
        explore_temperature: float | None = 0.3,
    ) -> ServedBatch: ...


METRICS = (  # the keys of every "champion", "candidate", "effect", ... mapping
    "revenue_per_user",
    "purchases_per_user",
    "clicks_per_user",
    "requests_per_user",
    "sessions_per_user",
    "ctr",
    "conversion",
    "cold_start_revenue_per_user",
    "revenue_per_user_realised",
    "purchases_per_user_realised",
    "clicks_per_user_realised",
    "oos_click_share_realised",
    "cold_start_revenue_per_user_realised",
    "mean_satisfaction",
)


@dataclass(frozen=True)
class WorldOracle:
    """A read-only copy of the hidden parameters and state of a world at one moment."""

    item_quality: np.ndarray
    item_bait: np.ndarray
    item_is_bait: np.ndarray
    item_embedding: np.ndarray
    stock_level: np.ndarray  # restock target per item
    user_taste: np.ndarray  # current (after drift)
    user_satisfaction: np.ndarray
    user_activity: np.ndarray
    user_join_day: np.ndarray
    user_history_length: np.ndarray


def summarise(batch: ServedBatch, n_users: int, satisfaction: np.ndarray | None = None) -> dict[str, float]:
    """Population-level totals of a public log, per eligible user (so that fewer visits count as a loss)."""
    clicks = float(batch.clicks.sum())
    purchases = float(batch.purchases.sum())
    oos = (
        float((batch.clicks & (batch.stock_at_serve <= 0)).sum())
        if batch.stock_at_serve is not None
        else np.nan
    )
    cold = batch.context.user_segment == 0
    sessions = float(np.unique(batch.session_id).size) if batch.session_id is not None else np.nan
    return {
        "revenue_per_user_realised": float(batch.revenue.sum()) / n_users,
        "purchases_per_user_realised": purchases / n_users,
        "clicks_per_user_realised": clicks / n_users,
        "requests_per_user": batch.n / n_users,
        "sessions_per_user": sessions / n_users,
        "oos_click_share_realised": oos / clicks if clicks else np.nan,
        "cold_start_revenue_per_user_realised": float(batch.revenue[cold].sum()) / n_users,
        "mean_satisfaction": float(np.mean(satisfaction)) if satisfaction is not None else np.nan,
    }


def _expected_summary(expected: dict[str, float], batch: ServedBatch, n_users: int) -> dict[str, float]:
    """Metrics from the world's expected outcomes (click and purchase probabilities of every shown slot).

    The expectation removes the Bernoulli noise of individual clicks and purchases (Rao–Blackwellisation)
    while keeping the realised path of the world (who came back, what sold out), so that a few seeds of a
    small world measure effects of a few per cent.
    """
    impressions = float(batch.items.size)
    return {
        "revenue_per_user": expected["revenue"] / n_users,
        "purchases_per_user": expected["purchases"] / n_users,
        "clicks_per_user": expected["clicks"] / n_users,
        "ctr": expected["clicks"] / impressions if impressions else np.nan,
        "conversion": expected["purchases"] / expected["clicks"] if expected["clicks"] else np.nan,
        "cold_start_revenue_per_user": expected["cold_start_revenue"] / n_users,
    }


def _run_arm(
    world: TruthWorld,
    seed: int,
    days: float,
    n_users: int,
    champion: Ranker,
    candidate: Ranker | None,
    explore_temperature: float | None,
) -> dict[str, float]:
    fork = world.fork(truth_seed=seed)
    share = 1.0 if candidate is not None else 0.0
    log = fork.serve(
        champion, candidate, candidate_share=share, hours=days * 24.0, explore_temperature=explore_temperature
    )
    out = summarise(log, n_users, fork._satisfaction)
    out.update(_expected_summary(fork._expected, log, n_users))
    return out


def _seed_pair(
    world: TruthWorld,
    seed: int,
    days: float,
    n_users: int,
    champion: Ranker,
    candidate: Ranker,
    explore_temperature: float | None,
) -> tuple[dict[str, float], dict[str, float]]:
    """(champion arm, candidate arm) of one seed: two forks with the same random numbers."""
    return (
        _run_arm(world, seed, days, n_users, champion, None, explore_temperature),
        _run_arm(world, seed, days, n_users, champion, candidate, explore_temperature),
    )


def effects(champion: np.ndarray, candidate: np.ndarray, scale: str) -> np.ndarray:
    """Per-seed effects, vectorised: ``relative`` (candidate / champion − 1, NaN where the champion is 0)
    or ``difference`` (candidate − champion)."""
    ch, ca = np.asarray(champion, dtype=float), np.asarray(candidate, dtype=float)
    if scale == "difference":
        return ca - ch
    if scale != "relative":
        raise ValueError(f"unknown effect scale {scale!r} (relative or difference)")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ch != 0, ca / np.where(ch != 0, ch, 1.0) - 1.0, np.nan)


#: the default scale of each metric: satisfaction is an interval quantity around 0, the rest are relative
SCALES = {m: ("difference" if m == "mean_satisfaction" else "relative") for m in METRICS}


def _collect(
    per_arm: dict[str, list[dict[str, float]]], days: float, seeds: list[int], n_users: int
) -> dict[str, Any]:
    per_seed = {
        arm: {m: np.array([r[m] for r in rows], dtype=float) for m in METRICS}
        for arm, rows in per_arm.items()
    }
    effect_per_seed = {
        m: effects(per_seed["champion"][m], per_seed["candidate"][m], SCALES[m]) for m in METRICS
    }
    return {
        "days": days,
        "seeds": seeds,
        "n_users": n_users,
        "champion": {m: float(np.mean(v)) for m, v in per_seed["champion"].items()},
        "candidate": {m: float(np.mean(v)) for m, v in per_seed["candidate"].items()},
        "effect": {m: float(np.mean(v)) for m, v in effect_per_seed.items()},
        "effect_per_seed": {m: v.tolist() for m, v in effect_per_seed.items()},
        "ci95": {m: _t_interval(v) for m, v in effect_per_seed.items()},
        "per_seed": {arm: {m: v.tolist() for m, v in d.items()} for arm, d in per_seed.items()},
    }


def ground_truth(
    world: TruthWorld,
    champion: Ranker,
    candidate: Ranker,
    days: float = 7.0,
    seeds: tuple[int, ...] | list[int] = (0, 1, 2),
    explore_temperature: float | None = 0.3,
) -> dict[str, Any]:
    """True effect of replacing ``champion`` by ``candidate`` for everyone, from the world's current state.

    For each seed, two forks of the world share their random numbers (CRN); one serves the champion to
    everyone, the other the candidate, both served alike (Plackett–Luce at ``explore_temperature``, as every
    arm is served live), so that an exact copy of the champion has an effect of exactly 0. Effects are
    relative: candidate / champion − 1 of the population totals (``mean_satisfaction``: the difference).
    Metrics without a suffix are computed from the world's expected outcomes per shown slot (low noise);
    ``*_realised`` from the sampled clicks and purchases. Returns ``{"days", "seeds", "n_users", "champion":
    {metric: mean}, "candidate": {...}, "effect": {...}, "effect_per_seed": {metric: [...]}, "ci95": {metric:
    [lo, hi]}, "per_seed": {arm: {metric: [...]}}}`` with a t interval over seeds.
    The world itself is not advanced.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("ground_truth needs at least one seed")
    n_users = _eligible(world, days)
    per_arm: dict[str, list[dict[str, float]]] = {"champion": [], "candidate": []}
    for seed in seeds:
        ch, ca = _seed_pair(world, seed, days, n_users, champion, candidate, explore_temperature)
        per_arm["champion"].append(ch)
        per_arm["candidate"].append(ca)
    return _collect(per_arm, days, seeds, n_users)


def _eligible(world: TruthWorld, days: float) -> int:
    return int((world._users.join_day <= world.now + days).sum())


def half_widths(
    per_seed: dict[str, dict[str, Any]], resolution: Mapping[str, tuple[str, float]]
) -> dict[str, float]:
    """Half-width of the 95 % t interval of each metric's effect (on its scale), NaN when undefined."""
    out = {}
    for m, (scale, _) in resolution.items():
        lo, hi = _t_interval(effects(per_seed["champion"][m], per_seed["candidate"][m], scale))
        out[m] = (hi - lo) / 2.0
    return out


def adaptive_ground_truth(
    world: TruthWorld,
    champion: Ranker,
    candidate: Ranker,
    resolution: Mapping[str, tuple[str, float]],
    *,
    days: float = 7.0,
    min_seeds: int = 4,
    max_seeds: int = 16,
    step: int = 4,
    explore_temperature: float | None = 0.3,
) -> dict[str, Any]:
    """:func:`ground_truth` with as many seeds as the labelled metrics need, within a cap.

    ``resolution`` maps each labelled metric to (scale, half-width target). Seeds 0, 1, … are added ``step``
    at a time from ``min_seeds`` until the 95 % t interval of every labelled metric has a half-width below
    its target, or ``max_seeds`` is reached. The stopping rule looks only at the spread of the per-seed
    effects, never at their mean, so the intervals keep (nearly) their coverage: a variance-only stopping
    rule is Stein's two-stage idea, while stopping when a label is proven would be optional stopping.
    Adds ``"stopped": "resolved" | "cap"``, ``"half_width": {metric: ...}``, ``"unresolved": [metrics above
    their target]`` and ``"not_applicable": [metrics the world cannot measure]`` to the result.
    """
    if min_seeds < 2 or max_seeds < min_seeds or step < 1:
        raise ValueError(
            f"need 2 <= min_seeds <= max_seeds and step >= 1, got {min_seeds}, {max_seeds}, {step}"
        )
    unknown = sorted(set(resolution) - set(METRICS))
    if unknown:
        raise ValueError(f"no ground truth for metrics {unknown}; known: {', '.join(METRICS)}")
    n_users = _eligible(world, days)
    per_arm: dict[str, list[dict[str, float]]] = {"champion": [], "candidate": []}
    seeds: list[int] = []
    target = min_seeds
    while True:
        for seed in range(len(seeds), target):
            ch, ca = _seed_pair(world, seed, days, n_users, champion, candidate, explore_temperature)
            per_arm["champion"].append(ch)
            per_arm["candidate"].append(ca)
            seeds.append(seed)
        out = _collect(per_arm, days, seeds, n_users)
        widths = half_widths(out["per_seed"], resolution)
        # a metric the world cannot measure (the champion's own value is NaN on every seed, e.g. out-of-stock
        # clicks in a world without stock) is not applicable; otherwise NaN counts as unresolved
        na = [m for m in resolution if not np.isfinite(out["per_seed"]["champion"][m]).any()]
        unresolved = [m for m, w in widths.items() if m not in na and not w <= resolution[m][1]]
        if not unresolved or len(seeds) >= max_seeds:
            break
        target = min(len(seeds) + step, max_seeds)
    out["stopped"] = "cap" if unresolved else "resolved"
    out["half_width"] = widths
    out["unresolved"] = unresolved
    out["not_applicable"] = na
    return out


def _t_interval(values: list[float]) -> list[float]:
    x = np.asarray(values, dtype=float)
    if x.size < 2 or not np.all(np.isfinite(x)):
        return [float("nan"), float("nan")]
    from scipy.stats import t as student_t  # lazy: keeps the world import light

    half = float(student_t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return [float(x.mean() - half), float(x.mean() + half)]
