"""Winsorisation of heavy-tailed per-user metrics.

Per-user aggregates (revenue per user, sessions per user) are heavy-tailed: a few users dominate the mean
and its variance. Capping each *user's* value at a quantile of the pooled distribution (both arms together,
so the cap cannot differ by arm and bias the comparison) trades a small, arm-symmetric bias for a large
variance reduction (Kohavi, Tang & Xu, *Trustworthy Online Controlled Experiments*, 2020, §22.2; the
per-unit capping of GrowthBook / ep-stats issues cited in the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WinsorizeResult:
    """Capped copies of the arrays, the caps used and how many values were capped."""

    values: tuple[np.ndarray, ...]
    lower_cap: float
    upper_cap: float
    n_capped: int


def winsorize(
    *arrays: np.ndarray, upper: float | None = 0.999, lower: float | None = None
) -> WinsorizeResult:
    """Cap every array at pooled quantiles ``lower`` and ``upper`` (None = do not cap that side)."""
    if not arrays:
        raise ValueError("winsorize needs at least one array")
    arrs = tuple(np.asarray(a, dtype=float).ravel() for a in arrays)
    pooled = np.concatenate(arrs)
    if pooled.size == 0:
        raise ValueError("winsorize: no data")
    if not np.all(np.isfinite(pooled)):
        raise ValueError("winsorize: NaN or infinite values")
    for q in (upper, lower):
        if q is not None and not 0.0 < q < 1.0:
            raise ValueError(f"winsorize quantiles must be in (0, 1), got {q}")
    hi = float(np.quantile(pooled, upper)) if upper is not None else np.inf
    lo = float(np.quantile(pooled, lower)) if lower is not None else -np.inf
    capped = tuple(np.clip(a, lo, hi) for a in arrs)
    n_capped = int(np.count_nonzero((pooled > hi) | (pooled < lo)))
    return WinsorizeResult(capped, lo, hi, n_capped)
