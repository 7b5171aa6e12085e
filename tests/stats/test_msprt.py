"""Mixture SPRT: the closed forms against numerical integration, and validity under continuous monitoring."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.stats import binomtest

from gates.stats.msprt import confidence_bounds, log_mixture_lr, msprt


def _mixture_by_quadrature(d: float, v: float, tau2: float, side: str) -> float:
    """Integral of N(d; theta, v) / N(d; 0, v) against the (half-)normal mixing density."""

    def integrand(theta: float) -> float:
        lr = np.exp((theta * d - theta**2 / 2) / v)
        return lr * stats.norm.pdf(theta, scale=np.sqrt(tau2)) * (1.0 if side == "two-sided" else 2.0)

    lo, hi = {"two-sided": (-np.inf, np.inf), "less": (-np.inf, 0.0), "greater": (0.0, np.inf)}[side]
    return integrate.quad(integrand, lo, hi)[0]


@pytest.mark.parametrize("side", ["two-sided", "less", "greater"])
@pytest.mark.parametrize(("d", "v", "tau2"), [(0.01, 1e-4, 4e-4), (-0.03, 2e-4, 4e-4), (0.0, 1e-3, 1e-4)])
def test_closed_form_equals_the_mixture_integral(side: str, d: float, v: float, tau2: float) -> None:
    expected = np.log(_mixture_by_quadrature(d, v, tau2, side))
    assert log_mixture_lr(d, v, tau2, alternative=side) == pytest.approx(expected, rel=1e-6, abs=1e-9)  # type: ignore[arg-type]


@pytest.mark.parametrize("side", ["two-sided", "less", "greater"])
def test_confidence_bound_is_where_the_test_just_rejects(side: str) -> None:
    d, v, tau2, alpha = np.array([0.01, -0.02]), np.array([1e-4, 4e-5]), 4e-4, 0.05
    low, high = confidence_bounds(d, v, tau2, alpha, alternative=side)  # type: ignore[arg-type]
    # The upper bound is the null that the "less" test (or the two-sided one) rejects exactly at 1/alpha;
    # the lower bound likewise for "greater".
    for bound, test in ((high, "less"), (low, "greater")):
        if np.all(np.isfinite(bound)):
            test = "two-sided" if side == "two-sided" else test
            log_lr = log_mixture_lr(d, v, tau2, null=bound, alternative=test)  # type: ignore[arg-type]
            np.testing.assert_allclose(log_lr, np.log(1 / alpha), rtol=1e-7)
    assert np.all(low < d) and np.all(d < high)


def test_always_valid_under_continuous_monitoring() -> None:
    """2,000 A/A paths observed 500 times each: rejections stay within alpha; naive peeking does not."""
    rng = np.random.default_rng(11)
    runs, looks, unit_var = 2_000, 500, 1.0
    n = np.arange(1, looks + 1) * 50.0
    sums = (rng.standard_normal((runs, looks)) * np.sqrt(50.0 * unit_var)).cumsum(axis=1)
    est, var = sums / n, unit_var / n
    tau2 = 0.02**2 * 100  # an effect of the order the horizon can detect
    for side in ("less", "two-sided"):
        rejected = int((log_mixture_lr(est, var, tau2, alternative=side) >= np.log(20)).any(axis=1).sum())
        assert binomtest(rejected, runs, 0.05, alternative="greater").pvalue > 0.001, (side, rejected / runs)
    naive = int((est / np.sqrt(var) <= -1.645).any(axis=1).sum())
    assert naive / runs > 0.15  # the bug this module exists to prevent


def test_msprt_result_over_looks() -> None:
    est = np.array([-0.05, -0.04, -0.035])
    var = np.array([4e-4, 2e-4, 1e-4])
    res = msprt(est, var, tau2=0.02**2, alpha=0.05, alternative="less")
    per_look = log_mixture_lr(est, var, 0.02**2, alternative="less")
    assert res.p_value == pytest.approx(min(1.0, float(np.exp(-per_look.max()))))
    assert res.log_e_value == pytest.approx(per_look[-1])
    assert res.ci_low == -np.inf and res.ci_high == pytest.approx(
        confidence_bounds(est, var, 4e-4, 0.05, alternative="less")[1].min()
    )
    assert res.reject == (res.p_value <= 0.05) and res.n_looks == 3


@pytest.mark.parametrize(
    ("est", "var", "match"),
    [([], [], "at least one"), ([0.1, np.nan], [1.0, 1.0], "finite"), ([0.1], [0.0], "zero variance")],
)
def test_msprt_refuses_bad_input(est: list, var: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        msprt(np.array(est), np.array(var), tau2=0.01)
