"""Paired / unpaired bootstrap: coverage by simulation with known truth, and refusal of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from gates.stats.bootstrap import BootstrapResult, paired_bootstrap, unpaired_bootstrap

REPS = 500  # coverage within the exact binomial bound at 500 repetitions


def _coverage_ok(hits: int, reps: int, confidence: float = 0.95) -> bool:
    # Two-sided exact binomial test of "coverage == nominal" at a strict 0.001 so the test is not flaky.
    return binomtest(hits, reps, confidence).pvalue > 0.001


@pytest.mark.parametrize("relative", [False, True])
def test_paired_coverage(relative: bool) -> None:
    rng = np.random.default_rng(1)
    n, hits = 150, 0
    for rep in range(REPS):
        # Correlated pairs (user effect shared by both models), skewed values, known means 1.0 and 1.05.
        user = rng.exponential(1.0, n)
        champ = user + rng.normal(0, 0.5, n)
        cand = user + 0.05 + rng.normal(0, 0.5, n)
        truth = 0.05  # mean(champ) = E[exponential(1)] = 1, so the relative truth is also 5%
        res = paired_bootstrap(cand, champ, relative=relative, n_resamples=500, seed=rep)
        hits += res.ci_low <= truth <= res.ci_high
    assert _coverage_ok(hits, REPS), f"coverage {hits / REPS:.3f}"


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_unpaired_coverage(method: str) -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for rep in range(REPS):
        cand = rng.lognormal(0.0, 0.8, 150)
        champ = rng.lognormal(0.0, 0.8, 240)
        truth = 0.0
        res = unpaired_bootstrap(cand, champ, relative=True, n_resamples=500, seed=rep, method=method)
        hits += res.ci_low <= truth <= res.ci_high
    assert _coverage_ok(hits, REPS), f"coverage {hits / REPS:.3f}"


def test_result_fields_and_pairing_tightens_interval() -> None:
    rng = np.random.default_rng(3)
    user = rng.normal(10, 3, 500)
    champ, cand = user + rng.normal(0, 0.1, 500), user + 0.2 + rng.normal(0, 0.1, 500)
    paired = paired_bootstrap(cand, champ, relative=False)
    unpaired = unpaired_bootstrap(cand, champ, relative=False)
    assert isinstance(paired, BootstrapResult)
    assert paired.n == 500 and unpaired.n == 1000 and paired.n_resamples == 2000
    assert paired.ci_low < paired.statistic < paired.ci_high
    assert paired.confidence_interval() == (paired.ci_low, paired.ci_high)
    assert (paired.ci_high - paired.ci_low) < 0.2 * (unpaired.ci_high - unpaired.ci_low)
    # Same seed, same answer.
    assert paired_bootstrap(cand, champ, relative=False) == paired


def test_bca_is_close_to_percentile_on_symmetric_data() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(1, 1, 400), rng.normal(1.1, 1, 400)
    p = paired_bootstrap(b, a, relative=False)
    q = paired_bootstrap(b, a, relative=False, method="bca")
    assert abs(p.ci_low - q.ci_low) < 0.03 and abs(p.ci_high - q.ci_high) < 0.03


@pytest.mark.parametrize(
    ("cand", "champ", "relative", "match"),
    [
        ([], [], False, "empty"),
        ([1.0, np.nan], [1.0, 2.0], False, "NaN"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], False, "aligned"),
        ([1.0, 2.0], [0.0, 0.0], True, "zero"),
    ],
)
def test_paired_refuses_bad_input(cand: list, champ: list, relative: bool, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(np.array(cand), np.array(champ), relative=relative)


def test_unpaired_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        unpaired_bootstrap(np.array([1.0]), np.array([]), relative=False)
    with pytest.raises(ValueError, match="zero"):
        unpaired_bootstrap(np.array([1.0, 2.0]), np.array([0.0, 0.0, 0.0]), relative=True)
    with pytest.raises(ValueError, match="confidence"):
        unpaired_bootstrap(np.array([1.0, 2.0]), np.array([1.0]), relative=False, confidence=1.5)
