"""CUPED: variance reduction with a pre-period covariate.

Deng, Xu, Kohavi & Walker, *Improving the Sensitivity of Online Controlled Experiments by Utilizing
Pre-Experiment Data*, WSDM 2013: ``Y_cv = Y - theta (X - mean(X))`` with ``theta = Cov(Y, X) / Var(X)``.
The adjustment leaves the treatment effect unbiased (X is measured before assignment, so its mean is the
same in both arms) and multiplies the variance by ``1 - rho^2``.

``theta`` and ``rho`` use the within-arm (pooled) covariance, so a treatment effect on Y cannot leak into
``theta``; ``X`` is centred on the pooled mean, the same constant in both arms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CupedResult:
    """Adjusted per-user values and the realised variance reduction.

    Attributes
    ----------
    candidate, champion : ndarray
        The adjusted values ``Y - theta (X - mean(X))``.
    theta : float
        The regression coefficient.
    correlation : float
        Pooled within-arm correlation of Y and X.
    variance_reduction : float
        ``1 - Var(Y_cv) / Var(Y)`` (pooled within-arm), the realised reduction; equals ``rho^2``.
    """

    candidate: np.ndarray
    champion: np.ndarray
    theta: float
    correlation: float
    variance_reduction: float


def cuped(
    candidate: np.ndarray, candidate_pre: np.ndarray, champion: np.ndarray, champion_pre: np.ndarray
) -> CupedResult:
    """CUPED-adjust both arms with their pre-period covariate. Raises ValueError on bad input."""
    yc, xc = _pair(candidate, candidate_pre, "candidate")
    y0, x0 = _pair(champion, champion_pre, "champion")
    dyc, dxc = yc - yc.mean(), xc - xc.mean()
    dy0, dx0 = y0 - y0.mean(), x0 - x0.mean()
    sxx = dxc @ dxc + dx0 @ dx0
    syy = dyc @ dyc + dy0 @ dy0
    sxy = dyc @ dxc + dy0 @ dx0
    if sxx <= 0:
        raise ValueError("the pre-period covariate has zero variance, so it cannot reduce variance")
    if syy <= 0:
        raise ValueError("zero variance: the metric is the same for every user")
    theta = float(sxy / sxx)
    rho = float(sxy / np.sqrt(sxx * syy))
    centre = np.concatenate([xc, x0]).mean()
    adj_c, adj_0 = yc - theta * (xc - centre), y0 - theta * (x0 - centre)
    resid = np.sum((adj_c - adj_c.mean()) ** 2) + np.sum((adj_0 - adj_0.mean()) ** 2)
    return CupedResult(adj_c, adj_0, theta, rho, float(1.0 - resid / syy))


def _pair(y: np.ndarray, x: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    x = np.asarray(x, dtype=float).ravel()
    if y.size != x.size:
        raise ValueError(f"{what}: {y.size} metric values but {x.size} pre-period values")
    if y.size < 2:
        raise ValueError(f"{what}: {y.size} users, need at least 2")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(x))):
        raise ValueError(f"{what}: NaN or infinite values in the metric or its pre-period covariate")
    return y, x
