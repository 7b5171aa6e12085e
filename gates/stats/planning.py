"""Sample-size planning: the fixed-horizon size and the maximum of a group-sequential design.

Fixed horizon (one look, one-sided level ``alpha``, power ``1 - beta`` at effect ``mde``):
``n_fixed = (z_{1-alpha} + z_{1-beta})^2 * unit_variance / mde^2``, where ``unit_variance`` is the variance
of the effect estimate times the number of candidate users (for a 5% canary on a click rate ``p`` with a
relative MDE: ``(p1 (1 - p1) + (p1/p)^2 p (1 - p) f / (1 - f)) / p^2``, see benchmarks/sequential.py).

A group-sequential design with a look every ``look_size`` users needs ``R * n_fixed`` users at most, where
the inflation ``R`` depends on the looks, which depend on the maximum: :func:`plan_group_sequential` solves
that fixed point (a few iterations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from gates.stats.group_sequential import GroupSequentialDesign, Spending, futility_design


@dataclass(frozen=True)
class GroupSequentialPlan:
    """A design with a look every ``look_size`` users, and its maximum ``max_n`` (same units)."""

    design: GroupSequentialDesign
    max_n: float
    n_fixed: float
    look_size: float


def fixed_sample_size(mde: float, unit_variance: float, alpha: float = 0.05, beta: float = 0.2) -> float:
    """Users for a one-look one-sided z-test with power ``1 - beta`` at ``mde``."""
    if not (mde > 0 and unit_variance > 0):
        raise ValueError(f"need a positive mde and unit variance, got {mde}, {unit_variance}")
    return float((ndtri(1 - alpha) + ndtri(1 - beta)) ** 2 * unit_variance / mde**2)


def plan_group_sequential(
    n_fixed: float,
    look_size: float,
    *,
    alpha: float = 0.05,
    beta: float = 0.2,
    spending: Spending = "pocock",
    futility_spending: Spending = "pocock",
) -> GroupSequentialPlan:
    """Maximum sample size and boundaries for a look every ``look_size`` users.

    ``n_fixed`` must be the fixed-horizon size at the same ``alpha`` and ``beta``.
    """
    if not (n_fixed > 0 and look_size > 0):
        raise ValueError(f"need positive n_fixed and look_size, got {n_fixed}, {look_size}")
    inflation, looks, design, max_n = 1.2, 0, None, 0.0
    for _ in range(30):
        new_looks = int(np.ceil(inflation * n_fixed / look_size))
        converged = new_looks == looks and abs(inflation * n_fixed - max_n) <= 1e-4 * max_n
        if converged and design is not None:
            break
        looks, max_n = new_looks, inflation * n_fixed
        t = np.minimum(np.arange(1, looks + 1) * look_size / max_n, 1.0)
        design = futility_design(t, alpha, beta, spending, futility_spending)
        inflation = design.inflation
    assert design is not None
    # The looks sit at k * look_size / max_n, so the design's information fractions are exactly the gate's
    # n / max_users; the solved inflation agrees with max_n / n_fixed to 1e-4.
    return GroupSequentialPlan(design, max_n, n_fixed, look_size)
