"""The canary's decision rule: roll back once harm is proven, promote once non-inferiority is proven.

Two hypotheses are tested on the effect ``theta`` (candidate vs champion, oriented so that higher is better):

- harm: ``H0: theta >= -harm_margin`` at level ``alpha``. Rejecting it proves harm: **roll back**.
  The error controlled is a false rollback of a harmless candidate.
- non-inferiority: ``H1: theta <= -mde`` at level ``beta``. Rejecting it proves the candidate is no worse
  than the MDE (or better): **promote**. The error controlled is a missed regression at the MDE.

(Spotify's decision rule: Schultzberg, Ankargren & Frånberg, *Risk-aware product decisions in A/B tests
with multiple metrics*, arXiv 2402.11609, 2024; non-inferiority guardrails need no multiplicity correction
of the false-positive rate.) Neither proven: **continue**.

Two ways to keep both tests valid when the canary is looked at after every batch:

- ``group_sequential_decision`` (the default rule): Lan-DeMets alpha spending on the harm test and
  beta-spending futility (non-binding) for promotion, planned to a maximum sample size
  (:mod:`gates.stats.group_sequential`). Pocock-type spending on both sides decides early in every
  scenario of the benchmark (docs/benchmarks.md) and needs a planned maximum.
- ``always_valid_decision``: a pair of one-sided normal-mixture SPRTs / confidence sequences
  (:mod:`gates.stats.msprt`), valid at any stopping time with no planned maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.special import ndtr, ndtri

from gates.stats.group_sequential import Spending, futility_design
from gates.stats.msprt import msprt


class Decision(StrEnum):
    ROLLBACK = "rollback"
    PROMOTE = "promote"
    CONTINUE = "continue"


@dataclass(frozen=True)
class SequentialDecision:
    """Outcome of the decision rule at the latest look.

    Attributes
    ----------
    decision : Decision
    method : str
        ``"group_sequential"`` or ``"always_valid"``.
    estimate, se : float
        The latest effect estimate and its standard error.
    ci_low : float
        Lower bound used for promotion (level ``1 - beta``): promote once it is at or above ``-mde``.
    ci_high : float
        Upper bound used for rollback (level ``1 - alpha``): roll back once it is below ``-harm_margin``.
        Group-sequential bounds are repeated confidence bounds (Jennison & Turnbull 2000, ch. 9);
        always-valid bounds are confidence sequences.
    harm_statistic, harm_boundary : float
        The harm test's statistic and the boundary it must reach: ``z`` and ``b_k`` (group sequential), or
        ``log Lambda`` and ``log(1/alpha)`` (always valid).
    promote_statistic, promote_boundary : float
        The same for promotion: ``z`` and futility bound ``a_k`` (promote when ``z <= a_k``), or the
        non-inferiority ``log Lambda`` and ``log(1/beta)``.
    p_value : float
        One-sided p-value of harm: nominal at this look (group sequential) or always-valid.
    information : float
        Information fraction of the latest look (1.0 = planned maximum); NaN for always-valid.
    looks : int
        Looks used.
    final : bool
        Group sequential: the planned maximum was reached; the decision is the final analysis's.
    """

    decision: Decision
    method: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    harm_statistic: float
    harm_boundary: float
    promote_statistic: float
    promote_boundary: float
    p_value: float
    information: float
    looks: int
    final: bool = False


@dataclass(frozen=True)
class NonInferiorityResult:
    """Fixed-horizon non-inferiority z-test of ``H0: theta <= -margin``."""

    statistic: float
    p_value: float
    lower_bound: float
    margin: float
    reject: bool


def noninferiority(estimate: float, se: float, margin: float, alpha: float = 0.05) -> NonInferiorityResult:
    """One look: ``z = (estimate + margin) / se``; non-inferior when the lower bound clears ``-margin``."""
    if not (np.isfinite(estimate) and np.isfinite(se)) or se <= 0:
        raise ValueError(f"need a finite estimate and a positive standard error, got {estimate}, {se}")
    z = (estimate + margin) / se
    p = float(ndtr(-z))
    return NonInferiorityResult(float(z), p, float(estimate - ndtri(1 - alpha) * se), margin, p <= alpha)


#: Scale-mixture components (multiples of the MDE) and their weights: half the mass on ``tau = mde`` (the
#: tuning for power at the MDE), the rest on wider priors so that large effects measured with a large
#: variance (sparse counts, small worlds) can still be proven (see :mod:`gates.stats.msprt`).
MIXTURE_SCALES = (1.0, 3.0, 9.0)
MIXTURE_WEIGHTS = (0.5, 0.25, 0.25)


def default_mixture(mde: float) -> tuple[np.ndarray, np.ndarray]:
    """``(tau2_j, w_j)`` of the always-valid rule: ``tau_j = mde * (1, 3, 9)``, weights (1/2, 1/4, 1/4)."""
    return (mde * np.asarray(MIXTURE_SCALES)) ** 2, np.asarray(MIXTURE_WEIGHTS)


def always_valid_decision(
    estimates: np.ndarray,
    variances: np.ndarray,
    *,
    mde: float,
    alpha: float = 0.05,
    beta: float = 0.2,
    harm_margin: float = 0.0,
    tau: float | None = None,
) -> SequentialDecision:
    """Decision from a pair of one-sided mixture SPRTs over all looks (oldest first).

    Mixing: :func:`default_mixture` of ``mde``, or the single ``tau`` if given.
    """
    _check_margins(mde, harm_margin, alpha, beta)
    tau2, weights = default_mixture(mde) if tau is None else (np.array([tau**2]), np.array([1.0]))
    harm = msprt(
        estimates, variances, tau2=tau2, weights=weights, alpha=alpha, null=-harm_margin, alternative="less"
    )
    ni = msprt(estimates, variances, tau2=tau2, weights=weights, alpha=beta, null=-mde, alternative="greater")
    decision = Decision.ROLLBACK if harm.reject else Decision.PROMOTE if ni.reject else Decision.CONTINUE
    return SequentialDecision(
        decision=decision,
        method="always_valid",
        estimate=harm.estimate,
        se=float(np.sqrt(np.atleast_1d(variances)[-1])),
        ci_low=ni.ci_low,
        ci_high=harm.ci_high,
        harm_statistic=harm.log_e_value,
        harm_boundary=float(np.log(1.0 / alpha)),
        promote_statistic=ni.log_e_value,
        promote_boundary=float(np.log(1.0 / beta)),
        p_value=harm.p_value,
        information=float("nan"),
        looks=harm.n_looks,
    )


def group_sequential_decision(
    estimates: np.ndarray,
    variances: np.ndarray,
    sample_sizes: np.ndarray,
    *,
    max_sample_size: float,
    mde: float,
    alpha: float = 0.05,
    beta: float = 0.2,
    harm_margin: float = 0.0,
    spending: Spending = "pocock",
    futility_spending: Spending = "pocock",
) -> SequentialDecision:
    """Decision of the group-sequential test at the latest look.

    Information fractions are ``n_k / max_sample_size``. The first look at or past the maximum is the final
    analysis: it must decide (``a_K = b_K``), and looks after it are **not** tested again; the decision
    stays the one taken there (``final`` is True), because re-testing at the final bound after every
    further batch spends alpha the design never had (6.3% false rollbacks after 10 extra looks). Harm
    proven at an earlier look stays proven (the test stopped there, whatever a later look shows). Looks
    that add no information are dropped. The alternative's drift for the futility bounds,
    ``(mde - harm_margin) / se_max``, uses the latest variance scaled to the maximum.
    """
    _check_margins(mde, harm_margin, alpha, beta)
    est = np.atleast_1d(np.asarray(estimates, dtype=float))
    var = np.atleast_1d(np.asarray(variances, dtype=float))
    n = np.atleast_1d(np.asarray(sample_sizes, dtype=float))
    if not (est.size == var.size == n.size and est.size > 0):
        raise ValueError("need one estimate, variance and sample size per look")
    if not (np.all(np.isfinite(est)) and np.all(np.isfinite(var)) and np.all(n > 0)):
        raise ValueError("estimates, variances and sample sizes must be finite (and sizes positive)")
    if np.any(var <= 0):
        raise ValueError("zero variance: the estimate's variance must be positive at every look")
    if not max_sample_size > 0:
        raise ValueError(f"max_sample_size must be positive, got {max_sample_size}")
    reached = np.flatnonzero(n >= max_sample_size)
    final = reached.size > 0
    if final:  # the final analysis happened at the first look past the maximum: judge up to it, no further
        last = int(reached[0])
        est, var, n = est[: last + 1], var[: last + 1], n[: last + 1]
    t_all = np.minimum(n / max_sample_size, 1.0)
    # Keep a look only if it adds information over every earlier kept look; the latest look always counts
    # (it replaces an earlier look at the same information).
    keep = np.zeros(t_all.size, dtype=bool)
    best = 0.0
    for k in range(t_all.size - 1):
        if t_all[k] > best and t_all[k] < t_all[-1]:
            keep[k], best = True, t_all[k]
    keep[-1] = True
    t = t_all[keep]
    se = float(np.sqrt(var[-1]))
    z_all = (-harm_margin - est[keep]) / np.sqrt(var[keep])
    z = float(z_all[-1])
    drift = (mde - harm_margin) / np.sqrt(var[-1] * n[-1] / max_sample_size)
    design = futility_design(t, alpha, beta, spending, futility_spending, drift=float(drift))
    b, a = float(design.efficacy[-1]), float(design.futility[-1])
    if np.any(z_all >= design.efficacy):
        decision = Decision.ROLLBACK
    elif z <= a:
        decision = Decision.PROMOTE
    else:
        decision = Decision.CONTINUE
    # Repeated confidence bounds hold simultaneously over looks (Jennison & Turnbull ch. 9): intersect them.
    with np.errstate(invalid="ignore"):
        upper = np.where(
            np.isfinite(design.efficacy), est[keep] + design.efficacy * np.sqrt(var[keep]), np.inf
        )
    ci_high = float(np.min(upper))
    ci_low = est[-1] + harm_margin + a * se - mde if np.isfinite(a) else -np.inf
    return SequentialDecision(
        decision=decision,
        method="group_sequential",
        estimate=float(est[-1]),
        se=se,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        harm_statistic=float(z),
        harm_boundary=b,
        promote_statistic=float(z),
        promote_boundary=a,
        p_value=float(ndtr(-z)),
        information=float(t[-1]),
        looks=int(t.size),
        final=final,
    )


def first_decision(rollback: np.ndarray, promote: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised over runs (rows) and looks (columns): the first look where either rule fires.

    Returns ``(decision, look)``: decision is +1 rollback, -1 promote, 0 none (then look = -1). A look where
    both fire counts as a rollback (harm proven wins).
    """
    rollback = np.asarray(rollback, dtype=bool)
    promote = np.asarray(promote, dtype=bool)
    fired = rollback | promote
    any_fired = fired.any(axis=-1)
    look = np.where(any_fired, fired.argmax(axis=-1), -1)
    at = np.clip(look, 0, None)[..., None]
    is_rollback = np.take_along_axis(rollback, at, axis=-1)[..., 0]
    decision = np.where(any_fired, np.where(is_rollback, 1, -1), 0)
    return decision, look


def _check_margins(mde: float, harm_margin: float, alpha: float, beta: float) -> None:
    if not mde > 0:
        raise ValueError(f"mde must be positive, got {mde}")
    if not 0 <= harm_margin < mde:
        raise ValueError(f"harm_margin must be in [0, mde), got {harm_margin} with mde {mde}")
    for name, level in (("alpha", alpha), ("beta", beta)):
        if not 0.0 < level < 0.5:
            raise ValueError(f"{name} must be in (0, 0.5), got {level}")
