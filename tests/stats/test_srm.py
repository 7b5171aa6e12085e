"""Sample-ratio mismatch: chi-square against the configured split, and the sequential test's validity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gates.stats.srm import log_bayes_factor, srm_chi_square, srm_sequential


def test_chi_square_matches_scipy_and_uses_the_configured_split() -> None:
    counts = np.array([94_800, 5_200])
    res = srm_chi_square(counts, [95, 5])
    expected = stats.chisquare(counts, f_exp=[95_000, 5_000])
    assert res.statistic == pytest.approx(expected.statistic) and res.p_value == pytest.approx(
        expected.pvalue
    )
    # A correct 5/95 split is not an SRM, although against 50/50 it would be a huge one.
    assert srm_chi_square([9_500, 500], [0.95, 0.05]).p_value == pytest.approx(1.0)
    assert srm_chi_square([9_500, 500], [0.5, 0.5]).p_value < 1e-100


def test_bayes_factor_is_the_dirichlet_multinomial_likelihood_ratio() -> None:
    counts, weights, c = np.array([130, 870]), np.array([0.1, 0.9]), 50.0
    dm = stats.dirichlet_multinomial.logpmf(counts, c * weights, counts.sum())
    mn = stats.multinomial.logpmf(counts, counts.sum(), weights)
    assert log_bayes_factor(counts, weights, c) == pytest.approx(dm - mn, rel=1e-9)


def test_sequential_srm_false_alarms_under_continuous_monitoring() -> None:
    """2,000 correctly split canaries, checked after each of 100 batches: alarms within p < 0.001."""
    rng = np.random.default_rng(3)
    runs, looks, batch = 2_000, 100, 20_000
    canary = rng.binomial(batch, 0.05, size=(runs, looks)).cumsum(axis=1)
    total = batch * np.arange(1, looks + 1)
    counts = np.stack([canary, total - canary], axis=-1)
    alarms = int(
        (log_bayes_factor(counts, np.array([0.05, 0.95]), 10_000.0) >= np.log(1_000)).any(axis=1).sum()
    )
    assert stats.binomtest(alarms, runs, 0.001, alternative="greater").pvalue > 0.001
    # The same checks with a repeated chi-square raise many more alarms.
    chi2 = (canary - 0.05 * total) ** 2 / (0.05 * total) + (canary - 0.05 * total) ** 2 / (0.95 * total)
    assert int((stats.chi2.sf(chi2, 1) < 0.001).any(axis=1).sum()) > alarms


def test_sequential_srm_detects_a_lost_canary_share() -> None:
    looks = np.arange(1, 41)[:, None] * np.array([4_750, 95_250])  # canary at 4.75% instead of 5%
    res = srm_sequential(looks, [0.05, 0.95])
    assert res.p_value < 0.001 and res.method == "sequential" and res.n == 4_000_000


@pytest.mark.parametrize(
    ("counts", "weights", "match"),
    [([10, 10], [1.0], "same 2"), ([0, 0], [0.5, 0.5], "no users"), ([5, -1], [0.5, 0.5], "non-negative"),
     ([5, np.nan], [0.5, 0.5], "finite"), ([5, 5], [0.0, 1.0], "positive")],
)  # fmt: skip
def test_srm_refuses_bad_input(counts: list, weights: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        srm_chi_square(np.array(counts), np.array(weights))
