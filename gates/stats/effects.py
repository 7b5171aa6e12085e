"""Treatment-effect estimates with their variance, for independent arms (canary: candidate vs champion).

Users are the unit: inputs are per-user aggregates. The effect is on one of three scales, with delta-method
variances (Deng, Knoblich & Lu, *Applying the Delta Method in Metric Analytics*, KDD 2018), ``v`` being the
variance of an arm's mean:

- ``difference``: ``m_c - m_0``,          ``v_c + v_0``
- ``relative``:   ``m_c / m_0 - 1``,      ``v_c / m_0^2 + m_c^2 v_0 / m_0^4``
- ``log``:        ``log(m_c / m_0)``,     ``v_c / m_c^2 + v_0 / m_0^2``

The canary's sequential gate does not use these: with each arm studentised by its own variance both the
relative and the log scale roll back harmless candidates on zero-inflated heavy-tailed revenue (the log
ratio 9-59% in docs/statistics.md); it uses :mod:`gates.stats.two_sample` (pooled-variance max,
Fieller-linear relative test, minimum expected events). These remain for offline and reporting uses.

Ratio metrics (clicks / impressions) are pooled per arm, ``R = sum(num) / sum(den)``, with
``Var(R) ~ Var(num - R den) / (n mean(den)^2)`` (same reference, §3), so users with many impressions do
not count as many independent units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Scale = Literal["difference", "relative", "log"]


@dataclass(frozen=True)
class EffectEstimate:
    """An effect estimate and its sampling variance.

    Attributes
    ----------
    estimate : float
        The effect on ``scale`` (see the module docstring).
    variance : float
        The (delta-method) variance of ``estimate``.
    candidate_mean, champion_mean : float
        The arm means (pooled ratios for ratio metrics).
    n_candidate, n_champion : int
        Users per arm.
    scale : str
        ``difference``, ``relative`` or ``log``.
    """

    estimate: float
    variance: float
    candidate_mean: float
    champion_mean: float
    n_candidate: int
    n_champion: int
    scale: Scale

    @property
    def se(self) -> float:
        return float(np.sqrt(self.variance))


def combine_arms(
    mean_c: np.ndarray | float,
    var_mean_c: np.ndarray | float,
    mean_0: np.ndarray | float,
    var_mean_0: np.ndarray | float,
    *,
    scale: Scale,
) -> tuple[np.ndarray, np.ndarray]:
    """Effect and its variance from two arm means and the variances *of those means* (vectorised)."""
    mean_c, mean_0 = np.asarray(mean_c, dtype=float), np.asarray(mean_0, dtype=float)
    var_mean_c, var_mean_0 = np.asarray(var_mean_c, dtype=float), np.asarray(var_mean_0, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if scale == "difference":
            return mean_c - mean_0, var_mean_c + var_mean_0
        if scale == "relative":
            return mean_c / mean_0 - 1.0, var_mean_c / mean_0**2 + mean_c**2 * var_mean_0 / mean_0**4
        if scale == "log":
            return np.log(mean_c / mean_0), var_mean_c / mean_c**2 + var_mean_0 / mean_0**2
    raise ValueError(f"scale must be difference, relative or log, got {scale!r}")


def mean_effect(candidate: np.ndarray, champion: np.ndarray, *, scale: Scale) -> EffectEstimate:
    """Effect on a per-user mean metric. Raises ValueError on empty/NaN/constant input or a zero baseline."""
    y = _finite(candidate, "candidate", 2)
    x = _finite(champion, "champion", 2)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused by _effect, by name
        var_c, var_0 = y.var(ddof=1), x.var(ddof=1)
        mean_c, mean_0 = float(y.mean()), float(x.mean())
    if var_c == 0.0 and var_0 == 0.0:
        raise ValueError(f"zero variance: every user has the same value ({y[0]:g} vs {x[0]:g})")
    return _effect(mean_c, var_c / y.size, mean_0, var_0 / x.size, y.size, x.size, scale)


def ratio_effect(
    candidate_num: np.ndarray,
    candidate_den: np.ndarray,
    champion_num: np.ndarray,
    champion_den: np.ndarray,
    *,
    scale: Scale,
) -> EffectEstimate:
    """Effect on a ratio metric (sum of numerators / sum of denominators per arm), delta-method variance."""
    rc, vc, nc = _pooled_ratio(candidate_num, candidate_den, "candidate")
    r0, v0, n0 = _pooled_ratio(champion_num, champion_den, "champion")
    if vc == 0.0 and v0 == 0.0:
        raise ValueError("zero variance: the ratio is the same for every user in both arms")
    return _effect(rc, vc, r0, v0, nc, n0, scale)


def _effect(mc: float, vc: float, m0: float, v0: float, nc: int, n0: int, scale: Scale) -> EffectEstimate:
    if scale != "difference" and m0 == 0.0:
        raise ValueError("the champion's mean is zero, so a relative change is undefined")
    if scale == "log" and (mc <= 0.0 or m0 <= 0.0):
        raise ValueError(f"a log ratio needs positive means, got candidate {mc:g} and champion {m0:g}")
    with np.errstate(over="ignore"):
        est, var = combine_arms(mc, vc, m0, v0, scale=scale)
    if not (np.isfinite(est) and np.isfinite(var)):  # finite values whose squares overflow float64
        raise ValueError(
            f"the effect or its variance overflows float64 (means {mc:g} and {m0:g}, variances of the means "
            f"{vc:g} and {v0:g}): rescale the metric"
        )
    return EffectEstimate(float(est), float(var), mc, m0, nc, n0, scale)


def _pooled_ratio(num: np.ndarray, den: np.ndarray, what: str) -> tuple[float, float, int]:
    num = _finite(num, f"{what} numerator", 2)
    den = _finite(den, f"{what} denominator", 2)
    if num.size != den.size:
        raise ValueError(f"{what}: {num.size} numerators but {den.size} denominators")
    total = den.sum()
    if total <= 0:
        raise ValueError(f"{what}: the ratio's denominator sums to {total:g}")
    ratio = float(num.sum() / total)
    resid = num - ratio * den
    return ratio, float(resid.var(ddof=1) * num.size / total**2), num.size


def _finite(values: np.ndarray, what: str, min_n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size < min_n:
        raise ValueError(f"{what}: {arr.size} users, need at least {min_n}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{what}: {bad} of {arr.size} values are NaN or infinite")
    return arr
