"""Quantile comparisons (latency p50 / p95 / p99) with a distribution-free standard error.

A quantile's standard error comes from the order statistics that bracket it (Price & Bonett 2001; the
"outer CI" of Deng, Knoblich & Lu, KDD 2018, used by GrowthBook's quantile metrics): with
``z = z_{0.975}`` and ranks ``L, U = n q -/+ z sqrt(n q (1 - q))``, ``se(q_hat) = (Y_(U) - Y_(L)) / (2 z)``.
This is the binomial (order-statistic) interval read as a normal one, so it needs no density estimate.

Two arms are compared on the log scale, where independent quantiles combine by adding variances:
``log(q_c / q_0) +/- k sqrt(se_c^2 / q_c^2 + se_0^2 / q_0^2)``, reported as a relative change
``q_c / q_0 - 1``. ``k`` is ``z_{1 - alpha/2}`` for a single look, or the normal-mixture confidence-sequence
width (:mod:`gates.stats.msprt`) when the comparison is repeated after every batch; the latter is
asymptotically valid under continuous monitoring because a sample quantile is asymptotically linear
(Bahadur's representation), cf. Howard & Ramdas, *Sequential estimation of quantiles*, Bernoulli 2022.

Requests are treated as independent; when one user or host sends many requests the interval is too narrow
(a cluster-robust variance needs the request-to-user map, which the evidence does not carry yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from gates.stats.msprt import confidence_bounds

_Z_RANK = float(ndtri(0.975))


@dataclass(frozen=True)
class QuantileEstimate:
    """A sample quantile with its order-statistic standard error."""

    quantile: float
    estimate: float
    se: float
    n: int


@dataclass(frozen=True)
class QuantileComparison:
    """Relative change of a quantile from champion to candidate, with its interval.

    Attributes
    ----------
    statistic : float
        ``q_c / q_0 - 1``.
    ci_low, ci_high : float
        Interval for the relative change at ``confidence`` (a confidence sequence if ``sequential``).
    candidate, champion : QuantileEstimate
    quantile, confidence : float
    sequential : bool
    """

    statistic: float
    ci_low: float
    ci_high: float
    candidate: QuantileEstimate
    champion: QuantileEstimate
    quantile: float
    confidence: float
    sequential: bool


def min_sample_size(q: float) -> int:
    """Fewest values whose order statistics can bound the ``q`` quantile (see :func:`quantile_estimate`)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    # Continuous solution of n q - b sqrt(n) >= 1 and n (1 - q) - b sqrt(n) >= 0, then an exact scan above
    # it (the integer ranks only add a little).
    b = _Z_RANK * np.sqrt(q * (1.0 - q))
    root = max((b + np.sqrt(b**2 + 4.0 * q)) / (2.0 * q), b / (1.0 - q)) ** 2
    n = np.arange(max(2, int(root) - 2), int(root) + 1_000 + int(root) // 10)
    spread = _Z_RANK * np.sqrt(n * q * (1.0 - q))
    ok = (np.floor(n * q - spread) >= 1) & (np.ceil(n * q + spread) <= n)
    return int(n[np.argmax(ok)])


def quantile_estimate(values: np.ndarray, q: float) -> QuantileEstimate:
    """Sample quantile and its order-statistic standard error; ValueError if ``values`` cannot bound it."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    y = np.asarray(values, dtype=float).ravel()
    if y.size == 0:
        raise ValueError("no requests")
    bad = int(np.count_nonzero(~np.isfinite(y)))
    if bad:
        raise ValueError(f"{bad} of {y.size} values are NaN or infinite")
    n = y.size
    spread = _Z_RANK * np.sqrt(n * q * (1.0 - q))
    low_rank, high_rank = int(np.floor(n * q - spread)), int(np.ceil(n * q + spread))
    if low_rank < 1 or high_rank > n:
        raise ValueError(f"{n} values cannot bound the {q:g} quantile; need {min_sample_size(q)}")
    ordered = np.partition(y, [low_rank - 1, high_rank - 1])
    se = (ordered[high_rank - 1] - ordered[low_rank - 1]) / (2.0 * _Z_RANK)
    return QuantileEstimate(q, float(np.quantile(y, q)), float(se), n)


def quantile_change(
    candidate: np.ndarray,
    champion: np.ndarray,
    q: float,
    *,
    confidence: float = 0.95,
    sequential: bool = False,
    tau: float = 0.1,
) -> QuantileComparison:
    """Compare the ``q`` quantile of two independent samples; see the module docstring.

    ``tau`` is the mixing scale of the confidence sequence on the log scale (set it to the smallest
    relative change that matters, e.g. ``log(1 + max_increase)``).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    cand = quantile_estimate(candidate, q)
    champ = quantile_estimate(champion, q)
    if cand.estimate <= 0 or champ.estimate <= 0:
        raise ValueError("quantiles must be positive to compare them as a ratio")
    var_log = (cand.se / cand.estimate) ** 2 + (champ.se / champ.estimate) ** 2
    if var_log <= 0:
        raise ValueError("zero variance: the order statistics around the quantile are all equal")
    log_ratio = np.log(cand.estimate / champ.estimate)
    if sequential:
        low, high = confidence_bounds(log_ratio, var_log, tau**2, 1.0 - confidence)
        low, high = float(low), float(high)
    else:
        half = float(ndtri(0.5 + confidence / 2.0)) * np.sqrt(var_log)
        low, high = log_ratio - half, log_ratio + half
    return QuantileComparison(
        statistic=float(np.expm1(log_ratio)),
        ci_low=float(np.expm1(low)),
        ci_high=float(np.expm1(high)),
        candidate=cand,
        champion=champ,
        quantile=q,
        confidence=confidence,
        sequential=sequential,
    )
