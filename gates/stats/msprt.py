"""Always-valid inference: the normal-mixture SPRT, always-valid p-values and confidence sequences.

Work on an asymptotically normal estimate ``D_k ~ N(theta, v_k)`` at looks ``k = 1, 2, ...`` (a difference
or relative change of means, a delta-method ratio metric, a CUPED-adjusted difference). Mixing the
likelihood ratio over ``theta ~ N(theta0, tau^2)`` gives (Robbins 1970; Johari, Pekelis & Walsh, *Always
Valid Inference: Continuous Monitoring of A/B Tests*, Operations Research 70(3) 2022, eq. for the normal
mSPRT written with ``v = V / n``):

    Lambda_k = sqrt(v / (v + tau^2)) * exp(tau^2 (D - theta0)^2 / (2 v (v + tau^2)))

a non-negative martingale with mean 1 under ``theta = theta0``, so by Ville's inequality
``P(exists k: Lambda_k >= 1/alpha) <= alpha`` however often one looks. One-sided (mixing over
``theta < theta0`` with a half-normal, which puts all of alpha on one side):

    Lambda^-_k = 2 Lambda_k Phi(-tau (D - theta0) / sqrt(v (v + tau^2)))      (``alternative="less"``)

and symmetrically ``Lambda^+`` with ``Phi(+...)`` for ``"greater"``. The always-valid p-value is
``p_k = min(1, min_{j<=k} 1 / Lambda_j)``. Inverting the test gives the confidence sequence; two-sided
(Howard, Ramdas, McAuliffe & Sekhon, Ann. Statist. 49(2) 2021, normal mixture):

    D_k +/- sqrt(v (v + tau^2) / tau^2 * [2 log(1/alpha) + log((v + tau^2) / v)])

and the one-sided bound solves ``Lambda^-(theta0) = 1/alpha`` for ``theta0`` (no closed form; a monotone
1-D root). Bounds may be intersected over looks (``running=True``) because they hold uniformly in time.

The mixing variance. One component ``tau = mde`` is within a few percent of the best tuning for power at
the MDE when the estimate's variance ``v`` is small against ``tau^2`` (large canaries). When it is not
(sparse counts, a small world), the single mixture is hopeless for large effects: the e-value of an
estimate ``D`` is at most about ``exp(tau^2 D^2 / (2 v^2))`` once ``v >> tau^2`` and the interval's
half-width grows like ``v / tau`` instead of ``sqrt(v)``: a -80% drop with ``v = 0.12`` and ``tau = 0.1``
(z = 4.6) gives ``log Lambda^- = 1.5 < log 20``. A scale mixture, ``sum_j w_j Lambda_j(tau_j)`` over a few
``tau_j`` (still a test martingale), keeps the MDE-tuned component and adds wider ones for large effects:
:func:`gates.stats.decision.default_mixture`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import log_ndtr

Alternative = Literal["two-sided", "less", "greater"]

_LOG2 = float(np.log(2.0))


@dataclass(frozen=True)
class AlwaysValidResult:
    """Result of :func:`msprt` at the latest look (scipy.stats result style).

    Attributes
    ----------
    estimate : float
        The latest estimate ``D_K``.
    log_e_value : float
        ``log Lambda_K`` against ``null``; reject once it reaches ``log(1/alpha)``.
    p_value : float
        Always-valid p-value: the running minimum of ``1 / Lambda_k`` over all looks.
    ci_low, ci_high : float
        Confidence sequence at level ``1 - alpha`` (intersected over looks); one-sided tests leave the
        other side infinite.
    reject : bool
        ``p_value <= alpha``: the null was rejected at some look.
    alpha, tau2, null : float
    alternative : str
    n_looks : int
    """

    estimate: float
    log_e_value: float
    p_value: float
    ci_low: float
    ci_high: float
    reject: bool
    alpha: float
    tau2: float
    null: float
    alternative: str
    n_looks: int


def log_mixture_lr(
    estimate: np.ndarray | float,
    variance: np.ndarray | float,
    tau2: float | Sequence[float] | np.ndarray,
    *,
    null: float = 0.0,
    alternative: Alternative = "two-sided",
    weights: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """``log Lambda`` (two-sided normal mixture) or ``log Lambda^-/+`` (half-normal), vectorised.

    With several mixing variances ``tau2_j`` (and ``weights`` summing to 1, equal by default) the result is
    the log of ``sum_j w_j Lambda_j``: a mixture of test martingales is a test martingale.
    """
    taus, w = _components(tau2, weights)
    if taus.size > 1:
        parts = [
            np.log(w_j) + _log_lr_one(estimate, variance, float(t), null, alternative)
            for t, w_j in zip(taus, w, strict=True)
        ]
        return _logsumexp0(np.stack(parts))
    return _log_lr_one(estimate, variance, float(taus[0]), null, alternative)


def _logsumexp0(parts: np.ndarray) -> np.ndarray:
    """``log(sum(exp(parts), axis=0))`` for a few stacked components, stable (max subtracted). Plain numpy:
    scipy's logsumexp costs ~0.1 ms a call in its argument handling, and the bisection below calls this
    80 times per look."""
    top = parts.max(axis=0)
    finite = np.isfinite(top)
    shift = np.where(finite, top, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(finite, shift + np.log(np.exp(parts - shift).sum(axis=0)), top)


def _components(
    tau2: float | Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    taus = np.atleast_1d(np.asarray(tau2, dtype=float))
    if taus.size == 0 or not np.all(taus > 0):
        raise ValueError(f"the mixing variances tau2 must be positive, got {taus.tolist()}")
    w = np.full(taus.size, 1.0 / taus.size) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != taus.shape or np.any(w <= 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError(
            f"need one positive weight per tau2, summing to 1, got {np.asarray(weights).tolist()}"
        )
    return taus, w


def _log_lr_one(
    estimate: np.ndarray | float, variance: np.ndarray | float, tau2: float, null: float, alternative: str
) -> np.ndarray:
    d = np.asarray(estimate, dtype=float) - null
    v = np.asarray(variance, dtype=float)
    s = v + tau2
    log_lr = 0.5 * np.log(v / s) + tau2 * d**2 / (2.0 * v * s)
    if alternative == "two-sided":
        return log_lr
    u = np.sqrt(tau2) * d / np.sqrt(v * s)
    if alternative == "less":
        return _LOG2 + log_lr + log_ndtr(-u)
    if alternative == "greater":
        return _LOG2 + log_lr + log_ndtr(u)
    raise ValueError(f"alternative must be two-sided, less or greater, got {alternative!r}")


def confidence_bounds(
    estimate: np.ndarray | float,
    variance: np.ndarray | float,
    tau2: float | Sequence[float] | np.ndarray,
    alpha: float,
    *,
    alternative: Alternative = "two-sided",
    weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-look confidence-sequence bounds (not intersected), vectorised; see the module docstring.

    For a mixture of several ``tau2`` the bound solves ``log Lambda(theta0) = log(1/alpha)`` by bisection
    between the single-component bounds at levels ``alpha`` and ``alpha w_j`` (which bracket it, because
    ``w_j Lambda_j <= Lambda <= max_j Lambda_j``).
    """
    taus, w = _components(tau2, weights)
    if taus.size > 1:
        return _mixture_bounds(estimate, variance, taus, w, alpha, alternative)
    return _bounds_one(estimate, variance, float(taus[0]), alpha, alternative)


def _mixture_bounds(
    estimate: np.ndarray | float,
    variance: np.ndarray | float,
    taus: np.ndarray,
    w: np.ndarray,
    alpha: float,
    alternative: Alternative,
) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(estimate, dtype=float)
    v = np.asarray(variance, dtype=float)
    side: Alternative = "less" if alternative in ("less", "two-sided") else "greater"

    # Distance from the estimate to the bound, bracketed by single-component distances.
    def distance(level: float, t: float) -> np.ndarray:
        low, high = _bounds_one(d, v, t, level, side if alternative != "two-sided" else "two-sided")
        return (high - d) if side == "less" else (d - low)

    lo = np.min([distance(alpha, t) for t in taus], axis=0)
    hi = np.min([distance(alpha * w_j, t) for t, w_j in zip(taus, w, strict=True)], axis=0)
    target = np.log(1.0 / alpha)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if alternative == "two-sided":
            log_lr = log_mixture_lr(d, v, taus, null=d + mid, alternative="two-sided", weights=w)
        elif side == "less":
            log_lr = log_mixture_lr(d, v, taus, null=d + mid, alternative="less", weights=w)
        else:
            log_lr = log_mixture_lr(d, v, taus, null=d - mid, alternative="greater", weights=w)
        inside = log_lr < target  # theta0 = d +/- mid is not rejected yet: the bound lies further out
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    width = 0.5 * (lo + hi)
    if alternative == "two-sided":
        return d - width, d + width
    if side == "less":
        return np.full_like(d + width, -np.inf), d + width
    return d - width, np.full_like(d - width, np.inf)


def _bounds_one(
    estimate: np.ndarray | float, variance: np.ndarray | float, tau2: float, alpha: float, alternative: str
) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(estimate, dtype=float)
    v = np.asarray(variance, dtype=float)
    s = v + tau2
    if alternative == "two-sided":
        half = np.sqrt(v * s / tau2 * (2.0 * np.log(1.0 / alpha) + np.log(s / v)))
        return d - half, d + half
    # One-sided: with u = tau (D - theta0) / sqrt(v s), log Lambda^- = log 2 - log(s/v)/2 + g(u) where
    # g(u) = u^2/2 + log Phi(-u) is convex and decreasing; the bound is where g(u) = c.
    c = np.log(1.0 / alpha) - _LOG2 + 0.5 * np.log(s / v)
    u = _solve_g(np.broadcast_to(c, np.broadcast(d, v).shape))
    width = -u * np.sqrt(v * s) / np.sqrt(tau2)  # u < 0, so the bound lies beyond the estimate
    if alternative == "less":  # an upper bound on theta
        return np.full_like(d + width, -np.inf), d + width
    if alternative == "greater":  # a lower bound on theta
        return d - width, np.full_like(d - width, np.inf)
    raise ValueError(f"alternative must be two-sided, less or greater, got {alternative!r}")


def msprt(
    estimates: np.ndarray,
    variances: np.ndarray,
    *,
    tau2: float | Sequence[float] | np.ndarray,
    alpha: float = 0.05,
    null: float = 0.0,
    alternative: Alternative = "two-sided",
    weights: Sequence[float] | np.ndarray | None = None,
) -> AlwaysValidResult:
    """Normal-mixture SPRT over a sequence of looks (oldest first).

    ``estimates[k]`` and ``variances[k]`` are the cumulative estimate and its variance at look ``k``. Returns
    the always-valid p-value (minimum over looks) and the confidence sequence intersected over looks.
    Raises ValueError for empty, non-finite or non-positive-variance input.
    """
    d = np.atleast_1d(np.asarray(estimates, dtype=float))
    v = np.atleast_1d(np.asarray(variances, dtype=float))
    if d.size == 0 or d.shape != v.shape:
        raise ValueError(f"need one variance per estimate and at least one look, got {d.size} and {v.size}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(v))):
        raise ValueError("estimates and variances must be finite")
    if np.any(v <= 0):
        raise ValueError("zero variance: the estimate's variance must be positive at every look")
    taus, w = _components(tau2, weights)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    log_lr = log_mixture_lr(d, v, taus, null=null, alternative=alternative, weights=w)
    p_value = float(min(1.0, np.exp(-np.max(log_lr))))
    low, high = confidence_bounds(d, v, taus, alpha, alternative=alternative, weights=w)
    return AlwaysValidResult(
        estimate=float(d[-1]),
        log_e_value=float(log_lr[-1]),
        p_value=p_value,
        ci_low=float(np.max(low)),
        ci_high=float(np.min(high)),
        reject=p_value <= alpha,
        alpha=alpha,
        tau2=float(np.dot(w, taus)),
        null=null,
        alternative=alternative,
        n_looks=d.size,
    )


def _solve_g(c: np.ndarray) -> np.ndarray:
    """Solve ``u^2/2 + log Phi(-u) = c`` (c > 0) for u < 0 by Newton's method, vectorised.

    g is convex and decreasing, so Newton started left of the root climbs to it monotonically; the start
    ``-sqrt(2 (c + log 2))`` is left of the root because ``g(u) >= u^2/2 - log 2`` for ``u <= 0``.
    """
    c = np.asarray(c, dtype=float)
    u = -np.sqrt(2.0 * (c + _LOG2))
    for _ in range(60):
        log_tail = log_ndtr(-u)
        g = 0.5 * u**2 + log_tail
        mills = np.exp(-0.5 * u**2 - 0.5 * np.log(2.0 * np.pi) - log_tail)  # phi(u) / Phi(-u)
        step = (g - c) / (u - mills)
        u = u - step
        if np.all(np.abs(step) < 1e-12):
            break
    return u
