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
    """Decision from a pair of one-sided mixture SPRTs over all looks (oldest first); mixing ``tau = mde``."""
    _check_margins(mde, harm_margin, alpha, beta)
    tau2 = (mde if tau is None else tau) ** 2
    harm = msprt(estimates, variances, tau2=tau2, alpha=alpha, null=-harm_margin, alternative="less")
    ni = msprt(estimates, variances, tau2=tau2, alpha=beta, null=-mde, alternative="greater")
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

    Information fractions are ``n_k / max_sample_size`` (capped at 1; a look at or past the maximum is the
    final one and must decide). Looks that add no information are dropped. The alternative's drift for the
    futility bounds, ``(mde - harm_margin) / se_max``, uses the latest variance scaled to the maximum.
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
    t_all = np.minimum(n / max_sample_size, 1.0)
    # Keep a look only if it adds information over every earlier kept look; the latest look always counts
    # (it replaces an earlier look at the same information, e.g. past the planned maximum).
    keep = np.zeros(t_all.size, dtype=bool)
    best = 0.0
    for k in range(t_all.size - 1):
        if t_all[k] > best and t_all[k] < t_all[-1]:
            keep[k], best = True, t_all[k]
    keep[-1] = True
    t = t_all[keep]
    se = float(np.sqrt(var[-1]))
    z = (-harm_margin - est[-1]) / se
    drift = (mde - harm_margin) / np.sqrt(var[-1] * n[-1] / max_sample_size)
    design = futility_design(t, alpha, beta, spending, futility_spending, drift=float(drift))
    b, a = float(design.efficacy[-1]), float(design.futility[-1])
    if z >= b:
        decision = Decision.ROLLBACK
    elif z <= a:
        decision = Decision.PROMOTE
    else:
        decision = Decision.CONTINUE
    ci_high = est[-1] + b * se if np.isfinite(b) else np.inf
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
