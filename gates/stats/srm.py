"""Sample-ratio mismatch: are users split across arms as configured?

Fixed-horizon: Pearson's chi-square goodness of fit of the observed user counts against the configured
weights (not 50/50: a 5% canary is tested against 5/95), ``X^2 = sum (O_i - E_i)^2 / E_i`` on ``k - 1``
degrees of freedom; the usual alarm is ``p < 0.001`` (Fabijan et al., KDD 2019; GrowthBook, Eppo).

Sequential (valid under continuous monitoring): the Dirichlet-multinomial Bayes factor of Lindon & Malek,
*Anytime-valid inference for multinomial count data*, NeurIPS 2022. With prior ``Dir(c p)`` centred on the
configured weights ``p`` and cumulative counts ``n``:

    log BF = log B(c p + n) - log B(c p) - sum n_i log p_i,   B(a) = prod Gamma(a_i) / Gamma(sum a_i),

a non-negative martingale under H0 whatever the look schedule, so ``p_t = min(1, min_{s<=t} 1 / BF_s)``
is an always-valid p-value (Ville's inequality).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import gammaln


@dataclass(frozen=True)
class SrmResult:
    """Result of :func:`srm_chi_square` or :func:`srm_sequential`.

    Attributes
    ----------
    statistic : float
        Chi-square statistic (fixed), or log Bayes factor at the latest look (sequential).
    p_value : float
        The test's p-value (always-valid for the sequential test).
    observed, expected : ndarray
        Latest user counts per arm and those the configured weights imply.
    weights : ndarray
        The configured shares (normalised).
    n : int
        Total users.
    method : str
    """

    statistic: float
    p_value: float
    observed: np.ndarray
    expected: np.ndarray
    weights: np.ndarray
    n: int
    method: str

    @property
    def observed_shares(self) -> np.ndarray:
        return self.observed / self.n


def srm_chi_square(counts: np.ndarray, weights: np.ndarray) -> SrmResult:
    """Pearson chi-square goodness of fit of ``counts`` (users per arm) against ``weights``."""
    n_obs, p = _check(np.atleast_2d(counts), weights)
    observed = n_obs[-1]
    n = int(observed.sum())
    expected = n * p
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    p_value = float(stats.chi2.sf(statistic, df=p.size - 1))
    return SrmResult(statistic, p_value, observed, expected, p, n, "chi_square")


def srm_sequential(counts: np.ndarray, weights: np.ndarray, *, concentration: float = 10_000.0) -> SrmResult:
    """Dirichlet-multinomial sequential SRM test over looks.

    ``counts`` has one row per look (cumulative users per arm, oldest first) or is a single row.
    ``concentration`` is the prior's total pseudo-count: larger is more sensitive to small imbalances and
    slower to react to large ones (GrowthBook's default is 10,000).
    """
    if not concentration > 0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    n_obs, p = _check(np.atleast_2d(counts), weights)
    log_bf = log_bayes_factor(n_obs, p, concentration)
    p_value = float(min(1.0, np.exp(-np.max(log_bf))))
    observed = n_obs[-1]
    n = int(observed.sum())
    return SrmResult(float(log_bf[-1]), p_value, observed, n * p, p, n, "sequential")


def log_bayes_factor(counts: np.ndarray, weights: np.ndarray, concentration: float) -> np.ndarray:
    """``log BF`` of the Dirichlet-multinomial against the configured multinomial, per row (vectorised)."""
    counts = np.asarray(counts, dtype=float)
    prior = concentration * np.asarray(weights, dtype=float)
    log_beta_post = gammaln(prior + counts).sum(axis=-1) - gammaln(prior.sum() + counts.sum(axis=-1))
    log_beta_prior = gammaln(prior).sum() - gammaln(prior.sum())
    return log_beta_post - log_beta_prior - (counts * np.log(weights)).sum(axis=-1)


def _check(counts: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(counts, dtype=float)
    w = np.asarray(weights, dtype=float).ravel()
    if w.size < 2 or counts.shape[-1] != w.size:
        raise ValueError(f"need counts and weights for the same 2+ arms, got {counts.shape} and {w.size}")
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError(f"configured weights must be positive, got {w.tolist()}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("user counts must be finite and non-negative")
    if np.any(counts != np.floor(counts)):  # a count of 0.5 users is a bug upstream, not a sample
        raise ValueError(f"user counts must be whole numbers, got {counts[-1].tolist()}")
    if counts[-1].sum() <= 0:
        raise ValueError("no users in any arm")
    return counts, w / w.sum()
