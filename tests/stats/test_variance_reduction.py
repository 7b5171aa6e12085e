"""CUPED, winsorisation and delta-method effects: unbiasedness and the variance they claim."""

from __future__ import annotations

import numpy as np
import pytest

from gates.stats.cuped import cuped
from gates.stats.effects import mean_effect, ratio_effect
from gates.stats.robust import winsorize


def test_cuped_reports_the_realised_reduction_and_keeps_the_effect() -> None:
    rng = np.random.default_rng(5)
    effects, variances, reductions = [], [], []
    for _ in range(300):
        pre = rng.gamma(2.0, 1.0, size=(2, 2_000))
        y = 0.8 * pre + rng.normal(0, 1.0, size=(2, 2_000))
        y[0] += 0.05  # the candidate's true effect
        res = cuped(y[0], pre[0], y[1], pre[1])
        effects.append(res.candidate.mean() - res.champion.mean())
        variances.append(mean_effect(res.candidate, res.champion, scale="difference").variance)
        reductions.append(res.variance_reduction)
    rho2 = 0.8**2 * 2.0 / (0.8**2 * 2.0 + 1.0)  # Var(pre) = 2 for gamma(2, 1)
    assert np.mean(reductions) == pytest.approx(rho2, abs=0.01)
    assert np.mean(effects) == pytest.approx(0.05, abs=3 * np.std(effects) / np.sqrt(300))
    # The claimed variance is the actual sampling variance of the adjusted effect.
    assert np.var(effects) == pytest.approx(np.mean(variances), rel=0.2)


def test_cuped_refuses_a_constant_covariate_or_metric() -> None:
    with pytest.raises(ValueError, match="covariate has zero variance"):
        cuped(np.arange(5.0), np.ones(5), np.arange(5.0), np.ones(5))
    with pytest.raises(ValueError, match="zero variance"):
        cuped(np.ones(5), np.arange(5.0), np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="NaN"):
        cuped(np.array([1.0, np.nan]), np.arange(2.0), np.arange(2.0), np.arange(2.0))


def test_relative_effect_variance_matches_simulation() -> None:
    rng = np.random.default_rng(6)
    sims = [
        mean_effect(rng.lognormal(0.02, 1.0, 3_000), rng.lognormal(0.0, 1.0, 5_000), scale="relative")
        for _ in range(400)
    ]
    estimates = np.array([s.estimate for s in sims])
    assert np.var(estimates) == pytest.approx(np.mean([s.variance for s in sims]), rel=0.2)
    assert np.mean(estimates) == pytest.approx(np.expm1(0.02), abs=0.01)


def test_ratio_metric_pools_users() -> None:
    rng = np.random.default_rng(8)
    estimates, variances = [], []
    for _ in range(400):
        imp_c, imp_0 = rng.poisson(20, 2_000) + 1, rng.poisson(20, 2_000) + 1
        ctr_c, ctr_0 = rng.beta(2, 38, 2_000), rng.beta(2, 38, 2_000)  # users differ: clustered clicks
        res = ratio_effect(rng.binomial(imp_c, ctr_c), imp_c, rng.binomial(imp_0, ctr_0), imp_0, scale="log")
        estimates.append(res.estimate)
        variances.append(res.variance)
    assert np.var(estimates) == pytest.approx(np.mean(variances), rel=0.2)


def test_effects_fail_closed() -> None:
    with pytest.raises(ValueError, match="zero variance"):
        mean_effect(np.ones(10), np.ones(10), scale="difference")
    with pytest.raises(ValueError, match="mean is zero"):
        mean_effect(np.arange(3.0), np.array([-1.0, 0.0, 1.0]), scale="relative")
    with pytest.raises(ValueError, match="positive means"):
        mean_effect(np.array([-1.0, 0.0, 0.5]), np.arange(3.0), scale="log")
    with pytest.raises(ValueError, match="at least 2"):
        mean_effect(np.array([1.0]), np.arange(3.0), scale="difference")
    with pytest.raises(ValueError, match="sums to 0"):
        ratio_effect(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), scale="log")


def test_winsorize_uses_one_pooled_cap() -> None:
    a, b = np.arange(100.0), np.arange(100.0) + 1000
    res = winsorize(a, b, upper=0.9)
    assert res.upper_cap == pytest.approx(np.quantile(np.concatenate([a, b]), 0.9))
    assert res.values[0].max() == 99 and res.values[1].max() == res.upper_cap and res.n_capped == 20
    with pytest.raises(ValueError, match="NaN"):
        winsorize(np.array([1.0, np.nan]))
