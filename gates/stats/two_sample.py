"""Canary effects (candidate vs champion) that stay valid on skewed, zero-inflated, sparse per-user metrics.

Per-user revenue is zero for most users and heavy-tailed for the rest; purchases and clicks are sparse
counts; a 1% canary has a few dozen users a batch. Three things break the textbook delta method there, and
each has a remedy here (docs/statistics.md has the simulations behind them):

1. **Studentising with the small arm's own variance.** With right-skewed data a sample that happens to miss
   the big spenders has both a low mean and a low variance, so the z-statistic of a harmless candidate is
   skewed towards harm (Welch's t on 90% zeros + lognormal spend: 25-70% false rollbacks at a 1-10% canary,
   Pocock, 10 looks). Each arm's variance is taken as ``max(own, pooled under H0)``: under
   ``H0: mu_c = rho mu_0`` the candidate's values are ``rho`` times the champion's, so the within-arm pooled
   variance ``s2_H0 = ((n_c - 1) s2_c + (n_0 - 1) rho^2 s2_0) / (n_c + n_0 - 2)`` estimates the candidate's
   variance from both arms (the big champion arm dominates). The max keeps a candidate whose own variance
   is larger (a harmless candidate with a wider spread) from being judged with a variance too small.
2. **Dividing by a random small mean.** The log ratio ``log(m_c / m_0)`` with ``v_c / m_c^2`` has a heavy
   left tail when the candidate arm holds a handful of buyers (``log(1/5)`` when one buyer turns up where
   five were expected), and its variance *grows* as the candidate's mean falls, so a real drop widens the
   interval (the purchases gate of issue 12: bounds -95.8% to +1842.5% at an observed -47% to -80%). The
   relative change is tested through the linear, Fieller-type statistic instead:

       z = (rho m_0 - m_c) / sqrt(V_c + rho^2 V_0),     rho = 1 - margin,

   which is what ``estimate = m_c / m_0 - 1`` with ``variance = (V_c + rho^2 V_0) / m_0^2`` gives on the
   relative scale (``m_0`` cancels): no division by the candidate's mean, and the left tail of a
   right-skewed candidate mean is lighter than the normal's, so the harm test errs on the safe side
   (Fieller 1954, J. R. Stat. Soc. B 16: 175-185; Kohavi, Tang & Xu 2020, §18 on ratio metrics).
3. **Too few events for a normal approximation.** A Poisson count with mean 2.7 is zero 6.7% of the time,
   where a normal z-test promises 5%. A look is trusted once both arms *expect* at least ``min_events``
   users with a non-zero value under H0 (pooled share of such users times the arm's users); before that,
   and while the champion's mean is zero, it is "not enough data yet", never an error.

Heavy tails are also winsorised by default at a high quantile of the pooled data
(:func:`winsorize_pooled`; per-user capping with one cap for both arms, Kohavi et al. 2020 §22.2).

Everything is vectorised over leading axes: ``candidate`` of shape ``(runs, n_c)`` gives one estimate per
run, which is how the validity simulations in tests/stats/test_heavy_tails.py call the very functions the
``sequential`` gate calls on one look.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

import numpy as np

Scale = Literal["difference", "relative"]


class Status(IntEnum):
    """Why a look can or cannot be tested: ``OK``, a reason to wait (:data:`WAIT`), or broken data."""

    OK = 0
    TOO_FEW_USERS = 1  # fewer than two users in an arm
    NO_EVENTS = 2  # every value is zero in both arms
    CHAMPION_MEAN_ZERO = 3  # relative change undefined: the champion has no events yet
    TOO_FEW_EVENTS = 4  # fewer than min_events expected users with an event in an arm
    ZERO_VARIANCE = 5  # every user has the same non-zero value: degenerate data (ERROR)
    NEGATIVE_BASELINE = 6  # relative change of a metric whose champion mean is negative (ERROR)


#: Status codes that mean "not enough data yet" (INCONCLUSIVE), as opposed to unusable data (ERROR).
WAIT = frozenset({Status.TOO_FEW_USERS, Status.NO_EVENTS, Status.CHAMPION_MEAN_ZERO, Status.TOO_FEW_EVENTS})


@dataclass(frozen=True)
class TwoSampleEffect:
    """Effect of the candidate against the champion at one look (arrays when the input has leading axes).

    Attributes
    ----------
    estimate : ndarray
        ``m_c / m_0 - 1`` (relative) or ``m_c - m_0`` (difference).
    variance : ndarray
        ``(V_c + rho^2 V_0) / m_0^2`` (relative) or ``V_c + V_0``, with the conservative per-arm variances of
        the module docstring; NaN where ``status`` is not OK.
    candidate_mean, champion_mean : ndarray
        Arm means (pooled ratios for ratio metrics), after winsorisation.
    n_candidate, n_champion : int
    expected_events : ndarray
        Users with a non-zero value the smaller arm expects under H0.
    status : ndarray of int
        :class:`Status` codes.
    scale : str
    null_ratio : float
        ``rho``: the candidate/champion ratio under the harm hypothesis (1 - harm margin; 1 on the
        difference scale).
    """

    estimate: np.ndarray
    variance: np.ndarray
    candidate_mean: np.ndarray
    champion_mean: np.ndarray
    n_candidate: int
    n_champion: int
    expected_events: np.ndarray
    status: np.ndarray
    scale: Scale
    null_ratio: float

    @property
    def ok(self) -> np.ndarray:
        return self.status == Status.OK


def winsorize_pooled(
    candidate: np.ndarray, champion: np.ndarray, upper: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cap both arms at the ``upper`` quantile of the pooled values (per row); returns (c, 0, cap)."""
    if not 0.5 < upper < 1.0:
        raise ValueError(f"the winsorisation quantile must be in (0.5, 1), got {upper}")
    pooled = np.concatenate([candidate, champion], axis=-1)
    cap = np.quantile(pooled, upper, axis=-1, keepdims=True)
    return np.minimum(candidate, cap), np.minimum(champion, cap), cap[..., 0]


def expected_events(candidate: np.ndarray, champion: np.ndarray) -> np.ndarray:
    """Users with a non-zero value that the smaller arm expects under H0 (pooled share x its users)."""
    n_c, n_0 = candidate.shape[-1], champion.shape[-1]
    nonzero = np.count_nonzero(candidate, axis=-1) + np.count_nonzero(champion, axis=-1)
    return nonzero / (n_c + n_0) * min(n_c, n_0)


def mean_effect(
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    scale: Scale = "relative",
    null_ratio: float = 1.0,
    min_events: float = 10.0,
    winsorize: float | None = None,
    events: np.ndarray | None = None,
) -> TwoSampleEffect:
    """Effect on a per-user mean metric (module docstring), vectorised over leading axes.

    ``null_ratio`` is ``rho`` of the harm hypothesis (``1 - harm margin`` when higher is better,
    ``1 + margin`` when lower is better; relative scale only) for the pooled variance; ``events`` overrides
    the expected-events count (e.g. counted on the raw values when ``candidate`` is CUPED-adjusted).
    Values must be finite (the gate checks them first).
    """
    y_c, y_0 = np.asarray(candidate, dtype=float), np.asarray(champion, dtype=float)
    n_c, n_0 = y_c.shape[-1], y_0.shape[-1]
    if events is None:
        events = expected_events(y_c, y_0)
    if winsorize is not None:
        y_c, y_0, _ = winsorize_pooled(y_c, y_0, winsorize)
    m_c, m_0 = y_c.mean(axis=-1), y_0.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_c = y_c.var(axis=-1, ddof=1) if n_c > 1 else np.full(m_c.shape, np.nan)
        s_0 = y_0.var(axis=-1, ddof=1) if n_0 > 1 else np.full(m_0.shape, np.nan)
    all_zero = ~(np.any(y_c != 0, axis=-1) | np.any(y_0 != 0, axis=-1))
    return _combine(m_c, s_c, n_c, m_0, s_0, n_0, 1.0, 1.0, events, all_zero, scale, null_ratio, min_events)


def ratio_effect(
    candidate_num: np.ndarray,
    candidate_den: np.ndarray,
    champion_num: np.ndarray,
    champion_den: np.ndarray,
    *,
    scale: Scale = "relative",
    null_ratio: float = 1.0,
    min_events: float = 10.0,
) -> TwoSampleEffect:
    """Effect on a ratio metric ``sum(num) / sum(den)`` per arm (clicks / impressions), vectorised.

    Delta method per arm (Deng, Knoblich & Lu, KDD 2018, §3): ``Var(R) ~ Var(num - R den) / (n mean(den)^2)``;
    the residual variances are pooled under H0 as the per-user variances of :func:`mean_effect` are.
    Events are users with a non-zero numerator.
    """
    nc_, dc = np.asarray(candidate_num, dtype=float), np.asarray(candidate_den, dtype=float)
    n0_, d0 = np.asarray(champion_num, dtype=float), np.asarray(champion_den, dtype=float)
    if nc_.shape != dc.shape or n0_.shape != d0.shape:
        raise ValueError(
            f"numerators and denominators differ in shape: {nc_.shape}/{dc.shape}, {n0_.shape}/{d0.shape}"
        )
    if np.any(dc.sum(axis=-1) <= 0) or np.any(d0.sum(axis=-1) <= 0):
        raise ValueError("a ratio's denominator sums to zero in an arm")
    n_c, n_0 = nc_.shape[-1], n0_.shape[-1]
    r_c, r_0 = nc_.sum(axis=-1) / dc.sum(axis=-1), n0_.sum(axis=-1) / d0.sum(axis=-1)
    dbar_c, dbar_0 = dc.mean(axis=-1), d0.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_c = (nc_ - r_c[..., None] * dc).var(axis=-1, ddof=1) if n_c > 1 else np.full(r_c.shape, np.nan)
        s_0 = (n0_ - r_0[..., None] * d0).var(axis=-1, ddof=1) if n_0 > 1 else np.full(r_0.shape, np.nan)
    all_zero = ~(np.any(nc_ != 0, axis=-1) | np.any(n0_ != 0, axis=-1))
    events = expected_events(nc_, n0_)
    return _combine(
        r_c, s_c, n_c, r_0, s_0, n_0, dbar_c, dbar_0, events, all_zero, scale, null_ratio, min_events
    )


def from_moments(
    candidate_mean: np.ndarray,
    candidate_var: np.ndarray,
    n_candidate: int,
    champion_mean: np.ndarray,
    champion_var: np.ndarray,
    n_champion: int,
    *,
    scale: Scale = "relative",
    null_ratio: float = 1.0,
    events: np.ndarray | float = np.inf,
    min_events: float = 10.0,
) -> TwoSampleEffect:
    """The same effect from per-arm means and per-user variances (``ddof=1``), e.g. Bernoulli click counts.

    Used where per-user arrays are too big to hold (benchmarks/sequential.py: 100,000 canaries of 80,000
    users a batch); ``events`` is the expected-events count of :func:`expected_events`.
    """
    m_c, m_0 = np.asarray(candidate_mean, dtype=float), np.asarray(champion_mean, dtype=float)
    all_zero = (m_c == 0) & (m_0 == 0) & (np.asarray(candidate_var) == 0) & (np.asarray(champion_var) == 0)
    events = np.broadcast_to(np.asarray(events, dtype=float), np.shape(m_c))
    return _combine(
        m_c,
        np.asarray(candidate_var, dtype=float),
        n_candidate,
        m_0,
        np.asarray(champion_var, dtype=float),
        n_champion,
        1.0,
        1.0,
        events,
        all_zero,
        scale,
        null_ratio,
        min_events,
    )


def _combine(
    m_c: np.ndarray,
    s_c: np.ndarray,
    n_c: int,
    m_0: np.ndarray,
    s_0: np.ndarray,
    n_0: int,
    dbar_c: np.ndarray | float,
    dbar_0: np.ndarray | float,
    events: np.ndarray,
    all_zero: np.ndarray,
    scale: Scale,
    null_ratio: float,
    min_events: float,
) -> TwoSampleEffect:
    if scale not in ("difference", "relative"):
        raise ValueError(f"scale must be difference or relative, got {scale!r}")
    if not null_ratio > 0:
        raise ValueError(f"the null ratio must be positive, got {null_ratio}")
    rho = float(null_ratio) if scale == "relative" else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = ((n_c - 1) * s_c + (n_0 - 1) * rho**2 * s_0) / (n_c + n_0 - 2)
        var_c = np.maximum(s_c, pooled) / (n_c * np.square(dbar_c))
        var_0 = np.maximum(s_0, pooled / rho**2) / (n_0 * np.square(dbar_0))
        if scale == "difference":
            estimate, variance = m_c - m_0, var_c + var_0
        else:
            estimate, variance = m_c / m_0 - 1.0, (var_c + rho**2 * var_0) / m_0**2
    status = np.full(np.shape(m_c), Status.OK, dtype=int)
    status = np.where(~(variance > 0) & ~all_zero, Status.ZERO_VARIANCE, status)
    if scale == "relative":
        status = np.where(m_0 < 0, Status.NEGATIVE_BASELINE, status)
        status = np.where(m_0 == 0, Status.CHAMPION_MEAN_ZERO, status)
    status = np.where(np.asarray(events) < min_events, Status.TOO_FEW_EVENTS, status)
    status = np.where(all_zero, Status.NO_EVENTS, status)
    if min(n_c, n_0) < 2:
        status = np.full(np.shape(m_c), Status.TOO_FEW_USERS, dtype=int)
    ok = status == Status.OK
    return TwoSampleEffect(
        estimate=np.where(ok, estimate, np.nan),
        variance=np.where(ok, variance, np.nan),
        candidate_mean=m_c,
        champion_mean=m_0,
        n_candidate=n_c,
        n_champion=n_0,
        expected_events=np.asarray(events, dtype=float),
        status=status,
        scale=scale,
        null_ratio=rho,
    )
