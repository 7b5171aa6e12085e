"""The world's hidden truth, for tests and benchmarks: the oracle view and the ground-truth A/B.

Nothing in the pipeline may call this module: the offline stage, the simulation twin and the canary see only
logs and the public catalogue. Benchmarks use :func:`ground_truth` to label candidates (reference §6.8):
the candidate at 100 % against the champion at 100 %, from the same state, with common random numbers, over
several seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from stagegate.world.schema import ServedBatch

if TYPE_CHECKING:
    from stagegate.models.base import Ranker
    from stagegate.world.users import Users


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
    relative: candidate / champion − 1 of the population totals. Metrics without a suffix are computed from
    the world's expected outcomes per shown slot (low noise); ``*_realised`` from the sampled clicks and
    purchases. Returns ``{"days", "seeds", "n_users", "champion": {metric: mean}, "candidate": {...},
    "effect": {...}, "effect_per_seed": {metric: [...]}, "ci95": {metric: [lo, hi]}}`` with a t interval
    over seeds.
    The world itself is not advanced.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("ground_truth needs at least one seed")
    end_day = world.now + days
    n_users = int((world._users.join_day <= end_day).sum())
    per_arm: dict[str, list[dict[str, float]]] = {"champion": [], "candidate": []}
    for seed in seeds:
        per_arm["champion"].append(_run_arm(world, seed, days, n_users, champion, None, explore_temperature))
        per_arm["candidate"].append(
            _run_arm(world, seed, days, n_users, champion, candidate, explore_temperature)
        )
    effect_per_seed: dict[str, list[float]] = {}
    for m in METRICS:
        effects = []
        for ca, ch in zip(per_arm["candidate"], per_arm["champion"], strict=True):
            if m == "mean_satisfaction":  # an interval quantity around 0: report the difference
                effects.append(ca[m] - ch[m])
            else:
                effects.append(ca[m] / ch[m] - 1.0 if ch[m] else np.nan)
        effect_per_seed[m] = effects
    return {
        "days": days,
        "seeds": seeds,
        "n_users": n_users,
        "champion": {m: float(np.mean([r[m] for r in per_arm["champion"]])) for m in METRICS},
        "candidate": {m: float(np.mean([r[m] for r in per_arm["candidate"]])) for m in METRICS},
        "effect": {m: float(np.mean(v)) for m, v in effect_per_seed.items()},
        "effect_per_seed": effect_per_seed,
        "ci95": {m: _t_interval(v) for m, v in effect_per_seed.items()},
    }


def _t_interval(values: list[float]) -> list[float]:
    x = np.asarray(values, dtype=float)
    if x.size < 2 or not np.all(np.isfinite(x)):
        return [float("nan"), float("nan")]
    from scipy.stats import t as student_t  # lazy: keeps the world import light

    half = float(student_t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return [float(x.mean() - half), float(x.mean() + half)]
