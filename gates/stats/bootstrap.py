"""Bootstrap confidence intervals for the difference (or relative change) of two arms' means.

Users are the unit: every array holds one value per user (a per-user aggregate), and resampling draws users
with replacement, never requests. Resampling is vectorised: each chunk of resamples is an index matrix of
shape (chunk, n), so the cost is O(n_resamples * n) array work and no Python loop over resamples.

Reference: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 13 (percentile interval) and
ch. 14 (BCa interval, with the jackknife acceleration of eq. 14.15).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri

Method = Literal["percentile", "bca"]

# Index matrices are built in chunks of at most this many elements (~32 MB of int64) to bound memory.
_CHUNK_ELEMENTS = 1 << 22


class ConfidenceInterval(NamedTuple):
    low: float
    high: float


@dataclass(frozen=True)
class BootstrapResult:
    """Result of :func:`paired_bootstrap` / :func:`unpaired_bootstrap` (scipy.stats result style).

    Attributes
    ----------
    statistic : float
        The estimate on the full sample: mean(candidate) - mean(champion), or
        mean(candidate) / mean(champion) - 1 when ``relative``.
    ci_low, ci_high : float
        The two-sided bootstrap confidence interval at level ``confidence``.
    confidence : float
        The confidence level of the interval.
    n : int
        Users behind the estimate: the number of pairs (paired), or the sum of both arms (unpaired).
    n_resamples : int
        Bootstrap resamples drawn.
    method : str
        ``"percentile"`` or ``"bca"``.
    relative : bool
        Whether ``statistic`` is a relative change.
    """

    statistic: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    n_resamples: int
    method: str = "percentile"
    relative: bool = False

    def confidence_interval(self) -> ConfidenceInterval:
        return ConfidenceInterval(self.ci_low, self.ci_high)


def paired_bootstrap(
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    relative: bool,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: Method = "percentile",
) -> BootstrapResult:
    """Paired bootstrap CI for the change in mean from ``champion`` to ``candidate``.

    The arrays are aligned user by user (both models scored on the same users), so one resample draws user
    indices ``i_1..i_n`` with replacement and evaluates both arms on the *same* users; this keeps the
    between-model correlation and gives a much tighter interval than resampling the arms independently.

    Statistic: ``d = mean(y) - mean(x)``, or ``r = mean(y) / mean(x) - 1`` when ``relative``, with ``y`` the
    candidate and ``x`` the champion. Interval: percentile ``[q_{a/2}, q_{1-a/2}]`` of the resampled
    statistic (Efron & Tibshirani 1993, §13.3), or BCa (§14.3) with bias correction
    ``z0 = Phi^-1(#{d* < d} / B)`` and jackknife acceleration ``a = sum(u^3) / (6 (sum u^2)^1.5)``.

    Raises ValueError on empty, non-finite or misaligned input, and, when ``relative``, if the champion's
    mean is zero (in the sample or in any resample), where a relative change is undefined.
    """
    y = _as_finite(candidate, "candidate")
    x = _as_finite(champion, "champion")
    if y.size != x.size:
        raise ValueError(
            f"paired bootstrap needs arrays aligned user by user: candidate has {y.size} users, "
            f"champion has {x.size}"
        )
    _check_args(confidence, n_resamples)
    _check_denominator(x, relative)
    n = y.size
    stat_fn = _stat_function(relative)
    statistic = stat_fn(np.array([y.mean()]), np.array([x.mean()]))[0]

    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        boot[start:stop] = stat_fn(y[idx].mean(axis=1), x[idx].mean(axis=1))
    _check_resamples(boot, relative)

    if method == "bca":
        # Leave-one-out means in closed form: (sum - value_i) / (n - 1), O(n) instead of n refits.
        if n < 3:
            raise ValueError(f"BCa needs at least 3 users, got {n}")
        jack = stat_fn((y.sum() - y) / (n - 1), (x.sum() - x) / (n - 1))
        low, high = _bca_interval(boot, statistic, jack, confidence)
    else:
        low, high = _percentile_interval(boot, confidence)
    return BootstrapResult(float(statistic), low, high, confidence, n, n_resamples, method, relative)


def unpaired_bootstrap(
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    relative: bool,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: Method = "percentile",
) -> BootstrapResult:
    """Bootstrap CI for the change in mean between two *independent* arms (online A/B, canary).

    Each arm's users are resampled with replacement separately, keeping each arm's size (the stratified
    two-sample bootstrap, Efron & Tibshirani 1993, §8.3). Statistic and interval as in
    :func:`paired_bootstrap`; for BCa, the jackknife leaves out one user of either arm in turn.
    ``n`` in the result is the total number of users in both arms.
    """
    y = _as_finite(candidate, "candidate")
    x = _as_finite(champion, "champion")
    _check_args(confidence, n_resamples)
    _check_denominator(x, relative)
    stat_fn = _stat_function(relative)
    statistic = stat_fn(np.array([y.mean()]), np.array([x.mean()]))[0]

    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    chunk = max(1, _CHUNK_ELEMENTS // max(y.size, x.size))
    for start in range(0, n_resamples, chunk):
        rows = min(start + chunk, n_resamples) - start
        y_means = y[rng.integers(0, y.size, size=(rows, y.size))].mean(axis=1)
        x_means = x[rng.integers(0, x.size, size=(rows, x.size))].mean(axis=1)
        boot[start : start + rows] = stat_fn(y_means, x_means)
    _check_resamples(boot, relative)

    if method == "bca":
        if min(y.size, x.size) < 3:
            raise ValueError(f"BCa needs at least 3 users per arm, got {y.size} and {x.size}")
        jack_y = stat_fn((y.sum() - y) / (y.size - 1), np.full(y.size, x.mean()))
        jack_x = stat_fn(np.full(x.size, y.mean()), (x.sum() - x) / (x.size - 1))
        low, high = _bca_interval(boot, statistic, np.concatenate([jack_y, jack_x]), confidence)
    else:
        low, high = _percentile_interval(boot, confidence)
    return BootstrapResult(
        float(statistic), low, high, confidence, y.size + x.size, n_resamples, method, relative
    )


def _stat_function(relative: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if relative:
        return _relative_change
    return np.subtract


def _relative_change(y_mean: np.ndarray, x_mean: np.ndarray) -> np.ndarray:
    # A zero denominator gives inf/NaN here on purpose; _check_resamples turns it into a clear ValueError.
    with np.errstate(divide="ignore", invalid="ignore"):
        return y_mean / x_mean - 1.0


def _as_finite(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{what}: no data (empty array)")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{what}: {bad} of {arr.size} values are NaN or infinite")
    return arr


def _check_args(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")


def _check_denominator(champion: np.ndarray, relative: bool) -> None:
    if relative and champion.mean() == 0.0:
        raise ValueError("relative change undefined: the champion's mean is zero")


def _check_resamples(boot: np.ndarray, relative: bool) -> None:
    # With relative=True a zero champion mean (in the sample or a resample) makes the ratio undefined;
    # refuse rather than return an interval built from inf/NaN.
    bad = int(np.count_nonzero(~np.isfinite(boot)))
    if bad:
        what = "the champion's mean is zero" if relative else "non-finite statistics"
        raise ValueError(f"relative change undefined: {what} in {bad} of {boot.size} resamples")


def _percentile_interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return float(low), float(high)


def _bca_interval(
    boot: np.ndarray, statistic: float, jack: np.ndarray, confidence: float
) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    # Bias correction; ties count half so that a degenerate (constant) bootstrap gives z0 = 0.
    share_below = (np.count_nonzero(boot < statistic) + 0.5 * np.count_nonzero(boot == statistic)) / boot.size
    z0 = ndtri(np.clip(share_below, 1.0 / (boot.size + 1), boot.size / (boot.size + 1)))
    u = jack.mean() - jack
    denom = 6.0 * np.sum(u**2) ** 1.5
    accel = np.sum(u**3) / denom if denom > 0 else 0.0
    z = ndtri(np.array([tail, 1.0 - tail]))
    adjusted = ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    low, high = np.quantile(boot, adjusted)
    return float(low), float(high)
