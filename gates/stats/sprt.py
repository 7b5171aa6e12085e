"""Wald's sequential probability ratio test: the oracle lower bound on expected sample size.

For ``H0: theta = theta0`` against ``H1: theta = theta1`` with an estimate ``D ~ N(theta, v)``, the log
likelihood ratio is ``L = ((theta1 - theta0) (D - theta0) - (theta1 - theta0)^2 / 2) / v``. Stop for H1 when
``L >= A = log((1 - beta) / alpha)`` and for H0 when ``L <= B = log(beta / (1 - alpha))`` (Wald 1945).
Among all tests with those error rates it minimises the expected sample size at both hypotheses
(Wald & Wolfowitz 1948), so it is the benchmark's oracle. Wald's approximations (overshoot ignored):

    E_1[N] ~ ((1 - beta) A + beta B) / KL,   E_0[N] ~ ((1 - alpha)(-B) - alpha A) / KL,

with ``KL`` the per-unit Kullback-Leibler divergence between the two hypotheses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WaldThresholds:
    """``upper`` = A (decide H1), ``lower`` = B (decide H0)."""

    upper: float
    lower: float
    alpha: float
    beta: float


def wald_thresholds(alpha: float, beta: float) -> WaldThresholds:
    if not (0.0 < alpha < 1.0 and 0.0 < beta < 1.0 and alpha + beta < 1.0):
        raise ValueError(f"need 0 < alpha, beta and alpha + beta < 1, got {alpha}, {beta}")
    upper, lower = np.log((1.0 - beta) / alpha), np.log(beta / (1.0 - alpha))
    return WaldThresholds(float(upper), float(lower), alpha, beta)


def log_likelihood_ratio(
    estimate: np.ndarray | float, variance: np.ndarray | float, theta1: float, theta0: float = 0.0
) -> np.ndarray:
    """Gaussian log likelihood ratio of ``theta1`` over ``theta0`` for ``D ~ N(theta, v)`` (vectorised)."""
    d = np.asarray(estimate, dtype=float) - theta0
    delta = theta1 - theta0
    return (delta * d - 0.5 * delta**2) / np.asarray(variance, dtype=float)


def expected_sample_size(alpha: float, beta: float, kl: float, *, under: str) -> float:
    """Wald's approximation of E[N] (in the units of ``1 / kl``) under ``"h1"`` or ``"h0"``."""
    w = wald_thresholds(alpha, beta)
    if under == "h1":
        return ((1.0 - beta) * w.upper + beta * w.lower) / kl
    if under == "h0":
        return ((1.0 - alpha) * -w.lower - alpha * w.upper) / kl
    raise ValueError(f"under must be 'h1' or 'h0', got {under!r}")
