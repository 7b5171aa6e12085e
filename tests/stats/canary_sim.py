"""Simulated canaries with known truth, judged by the very functions the ``sequential`` gate calls.

Vectorised over runs: every look computes :func:`gates.stats.two_sample.mean_effect` (or ``ratio_effect``)
on ``(runs, users)`` arrays of the cumulative data, exactly as the gate does on one run's look; looks whose
status is not OK are skipped (the gate says INCONCLUSIVE there and they add nothing). Then

- group sequential: Lan-DeMets Pocock-type efficacy bounds on the information fractions of the looks that
  counted (runs are grouped by their first counted look, so each run gets the bounds the gate would
  compute), planned maximum = the candidate users at the last look;
- always valid: the one-sided scale mixture of :func:`gates.stats.decision.default_mixture`.

A run is a false rollback if harm is proven at *any* look, ignoring earlier promotions: an upper bound on
the rate of the gate, which stops at the first decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gates.stats.decision import default_mixture
from gates.stats.group_sequential import efficacy_bounds
from gates.stats.msprt import log_mixture_lr
from gates.stats.two_sample import TwoSampleEffect, mean_effect

ALPHA = 0.05


@dataclass(frozen=True)
class Looks:
    """Cumulative users per arm at each look (shared by all runs: irregular, but common)."""

    candidate: np.ndarray
    champion: np.ndarray


def irregular_looks(
    rng: np.random.Generator, share: float, batch: tuple[int, int], looks: int, total: int | None = None
) -> Looks:
    """Candidate users per batch uniform in ``batch``; champion users so that the split is ``share``.

    With ``total``, the candidate users are rescaled so that the last look has ``total`` of them.
    """
    cand = rng.integers(batch[0], batch[1] + 1, looks)
    champ = np.maximum(1, rng.binomial(np.round(cand * (1 - share) / share).astype(int), 1.0))
    return Looks(np.cumsum(cand), np.cumsum(champ))


def rollbacks(
    effect_at: Callable[[int, int], TwoSampleEffect],
    looks: Looks,
    *,
    min_users: int = 100,
    mde: float = 0.10,
    methods: tuple[str, ...] = ("group_sequential", "always_valid"),
) -> dict[str, np.ndarray]:
    """Per method, a bool per run: harm proven at some look. ``effect_at(n_c, n_0)`` gives one look."""
    z_cols, est_cols, var_cols = [], [], []
    for n_c, n_0 in zip(looks.candidate, looks.champion, strict=True):
        e = effect_at(int(n_c), int(n_0))
        ok = e.ok & (min(n_c, n_0) >= min_users)
        est_cols.append(np.where(ok, e.estimate, np.nan))
        var_cols.append(np.where(ok, e.variance, np.nan))
        z_cols.append(np.where(ok, -e.estimate / np.sqrt(np.where(ok, e.variance, 1.0)), np.nan))
    z, est, var = np.stack(z_cols, 1), np.stack(est_cols, 1), np.stack(var_cols, 1)
    counted = np.isfinite(z)
    out: dict[str, np.ndarray] = {}
    if "group_sequential" in methods:
        t_all = looks.candidate / looks.candidate[-1]
        first = np.where(counted.any(axis=1), counted.argmax(axis=1), -1)
        crossed = np.zeros(z.shape[0], dtype=bool)
        for f in np.unique(first[first >= 0]):
            rows = first == f
            # Once trusted a look stays trusted here (events only accumulate), so looks f.. all count.
            sub = counted[rows][:, f:]
            bounds = efficacy_bounds(t_all[f:], ALPHA, "pocock").efficacy
            crossed[rows] = (np.where(sub, z[rows][:, f:], -np.inf) >= bounds).any(axis=1)
        out["group_sequential"] = crossed
    if "always_valid" in methods:
        tau2, w = default_mixture(mde)
        safe_est, safe_var = np.where(counted, est, 0.0), np.where(counted, var, 1.0)
        log_e = log_mixture_lr(safe_est, safe_var, tau2, weights=w, null=0.0, alternative="less")
        out["always_valid"] = (np.where(counted, log_e, -np.inf) >= np.log(1 / ALPHA)).any(axis=1)
    return out


def revenue(
    rng: np.random.Generator, shape: tuple[int, int], zero: float, tail: str, param: float
) -> np.ndarray:
    """Zero-inflated heavy-tailed revenue: 0 with probability ``zero``, else lognormal(0, param) or Pareto.

    ``tail="pareto"``: Pareto (Lomax + 1) with shape ``param``; below 2 the spend has infinite variance.
    """
    buys = rng.random(shape) >= zero
    if tail == "lognormal":
        spend = rng.lognormal(0.0, param, shape)
    elif tail == "pareto":
        spend = rng.pareto(param, shape) + 1.0
    else:
        raise ValueError(tail)
    return np.where(buys, spend, 0.0)


def mean_metric_rollbacks(
    rng: np.random.Generator,
    runs: int,
    looks: Looks,
    draw: Callable[[np.random.Generator, tuple[int, int]], np.ndarray],
    *,
    effect: float = 0.0,
    winsorize: float | None = 0.999,
    candidate_draw: Callable[[np.random.Generator, tuple[int, int]], np.ndarray] | None = None,
    **kwargs: object,
) -> dict[str, np.ndarray]:
    """Rollbacks of a per-user mean metric; candidate values are ``(1 + effect)`` x the champion law's.

    ``candidate_draw`` gives the candidate its own law (e.g. fewer buyers rather than smaller baskets).
    """
    y_c = (candidate_draw or draw)(rng, (runs, int(looks.candidate[-1]))) * (1.0 + effect)
    y_0 = draw(rng, (runs, int(looks.champion[-1])))
    return rollbacks(
        lambda n_c, n_0: mean_effect(y_c[:, :n_c], y_0[:, :n_0], winsorize=winsorize),
        looks,
        **kwargs,  # type: ignore[arg-type]
    )
