"""Property-based tests (hypothesis) of the statistics' input checks: on any input, a test either raises
ValueError with a message, or returns finite numbers. No NaN, infinity or empty array ever comes out as a
result (a NaN p-value compares False with every threshold, so it would read as "not significant"); and any
non-finite value in the input is refused, never summed as zero."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gates.stats.bootstrap import paired_bootstrap, unpaired_bootstrap
from gates.stats.cuped import cuped
from gates.stats.effects import mean_effect
from gates.stats.msprt import msprt
from gates.stats.quantiles import quantile_estimate
from gates.stats.srm import srm_chi_square, srm_sequential

SETTINGS = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# Per-user metrics of the size a metric store returns: moderate magnitudes (revenue, counts, latency).
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
anything = st.floats(allow_nan=True, allow_infinity=True)
bad = st.sampled_from([np.nan, np.inf, -np.inf])


def arrays(elements: st.SearchStrategy = finite, min_size: int = 0, max_size: int = 60) -> st.SearchStrategy:
    return hnp.arrays(np.float64, st.integers(min_size, max_size), elements=elements)


@st.composite
def poisoned(draw: st.DrawFn, min_size: int = 3) -> np.ndarray:
    """A finite array with at least one NaN or infinity put in."""
    values = draw(arrays(finite, min_size=min_size))
    index = draw(st.integers(0, values.size - 1))
    values[index] = draw(bad)
    return values


def _finite(*values: float) -> bool:
    return all(np.isfinite(v) for v in values)


@SETTINGS
@given(arrays(anything), arrays(anything), st.sampled_from(["difference", "relative", "log"]))
def test_mean_effect_is_finite_or_refused(candidate: np.ndarray, champion: np.ndarray, scale: str) -> None:
    try:
        effect = mean_effect(candidate, champion, scale=scale)
    except ValueError as exc:
        assert str(exc)
        return
    assert np.all(np.isfinite(candidate)) and np.all(np.isfinite(champion))  # only finite input gets here
    assert _finite(effect.estimate, effect.variance) and effect.variance >= 0, effect


@SETTINGS
@given(poisoned(), arrays(finite, min_size=3))
def test_one_non_finite_value_is_refused_by_every_estimator(dirty: np.ndarray, clean: np.ndarray) -> None:
    aligned = np.resize(clean, dirty.size)  # the clean arm, user by user beside the dirty one
    calls = [
        lambda: mean_effect(dirty, clean, scale="difference"),
        lambda: mean_effect(clean, dirty, scale="difference"),
        lambda: paired_bootstrap(dirty, aligned, relative=False, n_resamples=50),
        lambda: unpaired_bootstrap(clean, dirty, relative=False, n_resamples=50),
        lambda: quantile_estimate(dirty, 0.5),
        lambda: cuped(dirty, aligned, clean, clean),
        lambda: cuped(aligned, dirty, clean, clean),
    ]
    for call in calls:
        try:
            call()
        except ValueError as exc:
            assert str(exc)
        else:
            raise AssertionError(f"a NaN or infinity was accepted by {call}")


@SETTINGS
@given(arrays(finite, min_size=0), arrays(finite, min_size=0), st.booleans())
def test_bootstrap_intervals_are_ordered_and_finite_or_refused(
    candidate: np.ndarray, champion: np.ndarray, relative: bool
) -> None:
    try:
        result = unpaired_bootstrap(candidate, champion, relative=relative, n_resamples=200, seed=1)
    except ValueError as exc:
        assert str(exc)
        return
    assert _finite(result.ci_low, result.ci_high) and result.ci_low <= result.ci_high, result


@SETTINGS
@given(arrays(anything, min_size=0, max_size=8), arrays(anything, min_size=0, max_size=8))
def test_msprt_p_value_is_a_probability_or_refused(estimates: np.ndarray, variances: np.ndarray) -> None:
    try:
        result = msprt(estimates, variances, tau2=1.0)
    except ValueError as exc:
        assert str(exc)
        return
    assert np.all(np.isfinite(estimates)) and np.all(variances > 0)
    assert 0.0 <= result.p_value <= 1.0, result


@SETTINGS
@given(
    hnp.arrays(np.float64, st.integers(2, 4), elements=st.one_of(st.floats(-5, 1e7), bad)),
    hnp.arrays(np.float64, st.integers(2, 4), elements=st.one_of(st.floats(-1, 1), bad)),
)
def test_srm_p_values_are_probabilities_or_refused(counts: np.ndarray, weights: np.ndarray) -> None:
    for test in (srm_chi_square, srm_sequential):
        try:
            result = test(counts, weights)
        except ValueError as exc:
            assert str(exc)
            continue
        assert counts.size == weights.size and np.all(counts >= 0) and np.all(weights > 0)
        assert 0.0 <= result.p_value <= 1.0, (test.__name__, result)


@SETTINGS
@given(arrays(finite, min_size=0, max_size=400), st.floats(0.01, 0.99))
def test_a_quantile_estimate_is_bounded_by_the_sample_or_refused(values: np.ndarray, q: float) -> None:
    try:
        estimate = quantile_estimate(values, q)
    except ValueError as exc:
        assert str(exc)
        return
    assume(values.size > 0)
    assert values.min() <= estimate.estimate <= values.max() and estimate.se >= 0, estimate
