"""Quantile comparisons: coverage of the interval, and validity of the sequential version over looks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from gates.stats.quantiles import quantile_change, quantile_estimate


@pytest.mark.parametrize("q", [0.5, 0.99])
def test_interval_covers_the_true_ratio(q: float) -> None:
    rng = np.random.default_rng(int(q * 100))
    reps, hits = 400, 0
    for _ in range(reps):
        cand = rng.lognormal(np.log(110), 0.6, 4_000)  # +10% at every quantile
        champ = rng.lognormal(np.log(100), 0.6, 4_000)
        res = quantile_change(cand, champ, q)
        hits += res.ci_low <= 0.10 <= res.ci_high
    assert binomtest(hits, reps, 0.95).pvalue > 0.001, hits / reps


def test_sequential_interval_keeps_its_level_over_repeated_looks() -> None:
    """A/A latency checked after each of 20 batches: the confidence sequence rarely excludes 0."""
    rng = np.random.default_rng(9)
    runs, looks, batch, misses = 300, 20, 500, 0
    for _ in range(runs):
        cand = rng.lognormal(4.6, 0.6, looks * batch)
        champ = rng.lognormal(4.6, 0.6, looks * batch)
        for k in range(1, looks + 1):
            res = quantile_change(
                cand[: k * batch], champ[: k * batch], 0.95, sequential=True, tau=np.log(1.1)
            )
            if not res.ci_low <= 0.0 <= res.ci_high:
                misses += 1
                break
    assert binomtest(misses, runs, 0.05, alternative="greater").pvalue > 0.001, misses / runs


def test_quantile_needs_enough_data_and_finite_values() -> None:
    with pytest.raises(ValueError, match="cannot bound"):
        quantile_estimate(np.arange(50.0), 0.99)
    with pytest.raises(ValueError, match="NaN"):
        quantile_estimate(np.array([1.0, np.nan, 3.0]), 0.5)
    with pytest.raises(ValueError, match="no requests"):
        quantile_estimate(np.array([]), 0.5)
    with pytest.raises(ValueError, match="zero variance"):
        quantile_change(np.full(1_000, 5.0), np.full(1_000, 5.0), 0.5)
