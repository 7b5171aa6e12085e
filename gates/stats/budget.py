"""One false-rollback budget for the whole canary: all ramp steps and all metric gates together.

The canary restarts its evidence at every ramp step (the split changes, users move between arms), and each
of its G metric gates tests harm at level alpha. Without more, a harmless candidate meets K steps x G gates
chances of a false rollback: up to ``K G alpha`` (3 steps x 2 metrics at 5%: up to 30%; measured 10-15% on
normal data, tests/stats/test_canary_budget.py).

Steps: the harm statistic of the always-valid rule is a test (super)martingale ``L_s(t)`` within step s
(the one-sided normal mixture of :mod:`gates.stats.msprt`, started at 1 when the step starts). Evidence is
carried across steps by multiplying the steps' values at the end of each step (Vovk & Wang,
*E-values: calibration, combination and applications*, Ann. Statist. 49(3) 2021, §4; Grünwald, de Heide &
Koolen, *Safe testing*, 2024, on optional continuation):

    E(t) = L_1(tau_1) * ... * L_{s-1}(tau_{s-1}) * L_s(t),      t in step s,

which is again a test supermartingale under "no harm" in every step, so by Ville's inequality
``P(sup_t E(t) >= 1/alpha) <= alpha`` over the whole canary, whatever the steps' lengths and however they
were chosen from the data. A harm that persists across steps accumulates evidence instead of restarting.

Metrics: each of the G gates gets ``alpha / G`` (Bonferroni: valid under any dependence between metrics,
e.g. revenue and purchases of the same users).

Caveat: within a step the martingale property holds for the normal approximation of the estimate; across
steps it needs each step's data to be new (a new window of events), which is what the canary collects. The
same users appear in several steps, so their outcomes can be correlated over time; the simulation checks
the budget with independent users per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gates.stats.decision import default_mixture
from gates.stats.msprt import log_mixture_lr


@dataclass(frozen=True)
class CanaryBudgetResult:
    """The canary-wide harm test at the latest look (arrays when the input has leading axes).

    Attributes
    ----------
    log_e_value : ndarray
        ``log E`` at the latest look: the completed steps' final log e-values plus the current step's.
    max_log_e_value : ndarray
        The largest ``log E`` over every look so far (rejection is sticky).
    threshold : float
        ``log(n_metrics / alpha)``.
    reject : ndarray of bool
        Harm proven at some look of some step: roll back.
    carried : ndarray
        The sum of the completed steps' final log e-values (what the current step starts from).
    """

    log_e_value: np.ndarray
    max_log_e_value: np.ndarray
    threshold: float
    reject: np.ndarray
    carried: np.ndarray


def canary_harm_test(
    steps: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    mde: float,
    alpha: float = 0.05,
    n_metrics: int = 1,
    harm_margin: float = 0.0,
    tau2: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> CanaryBudgetResult:
    """Harm test over all the canary's steps so far, with the budget shared by ``n_metrics`` gates.

    ``steps[s] = (estimates, variances)``: step s's cumulative estimates at each of its looks (oldest
    first; last axis = looks, leading axes = runs in a simulation), on the gate's test scale, oriented so
    that higher is better. The last entry is the current step. Mixing: ``default_mixture(mde)`` unless
    ``tau2`` / ``weights`` are given.
    """
    if not steps:
        raise ValueError("need at least one step")
    if n_metrics < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_metrics >= 1 and alpha in (0, 1), got {n_metrics}, {alpha}")
    if tau2 is None:
        tau2, weights = default_mixture(mde)
    carried: np.ndarray | float = 0.0
    best: np.ndarray | float = -np.inf
    log_e: np.ndarray | float = 0.0
    start: np.ndarray | float = 0.0
    for estimates, variances in steps:
        est, var = np.asarray(estimates, dtype=float), np.asarray(variances, dtype=float)
        if est.shape != var.shape or est.shape[-1] == 0:
            raise ValueError(
                f"each step needs one variance per estimate and a look, got {est.shape}, {var.shape}"
            )
        if not (np.all(np.isfinite(est)) and np.all(var > 0)):
            raise ValueError("estimates must be finite and variances positive")
        start = carried
        per_look = np.expand_dims(np.asarray(start), -1) + log_mixture_lr(
            est, var, tau2, null=-harm_margin, alternative="less", weights=weights
        )
        best = np.maximum(best, per_look.max(axis=-1))
        log_e = per_look[..., -1]
        carried = log_e
    threshold = float(np.log(n_metrics / alpha))
    return CanaryBudgetResult(
        log_e_value=np.asarray(log_e),
        max_log_e_value=np.asarray(best),
        threshold=threshold,
        reject=np.asarray(best) >= threshold,
        carried=np.asarray(start),
    )
