"""Group-sequential boundaries: Lan-DeMets alpha spending, non-binding beta-spending futility, classical
Pocock / O'Brien-Fleming constants.

Canonical joint distribution (Jennison & Turnbull 2000, *Group Sequential Methods with Applications to
Clinical Trials*, §3.1): at information fractions ``0 < t_1 < ... < t_K`` the standardised statistics
``Z_k`` are jointly normal with ``E[Z_k] = eta * sqrt(t_k)`` and ``Cov(Z_j, Z_k) = sqrt(t_j / t_k)``, where
``eta`` is the drift at ``t = 1`` (``theta * sqrt(I_max)``). Boundary crossing probabilities are computed by
the Armitage-McPherson-Rowe recursion on the sub-density of ``Z_k`` over the continuation region, integrated
with composite Simpson's rule on the grid of Jennison & Turnbull §19.2 (``6r - 1`` points per look, r = 16
by default, accurate to about 1e-6 in probability).

Spending (Lan & DeMets 1983, Biometrika 70: 659-663; Kim & DeMets 1987; Hwang, Shih & DeCani 1990),
one-sided level ``alpha``:

- ``obrien_fleming``: ``alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))``
- ``pocock``:         ``alpha(t) = alpha * ln(1 + (e - 1) t)``
- ``power``:          ``alpha(t) = alpha * t ** rho``                  (``param`` = rho)
- ``hsd``:            ``alpha(t) = alpha (1 - e^{-g t}) / (1 - e^{-g})``  (``param`` = gamma; 0 = linear)

Two-sided symmetric designs (``sides=2``) spend ``alpha/2`` on each side with the same function, as R's
ldbounds and gsDesign do, and the continuation region is ``(-b_k, b_k)``.

Futility (promotion) bounds ``a_k`` come from beta spending under the alternative drift, with the efficacy
bounds computed ignoring them (non-binding, so overriding a futility stop never inflates alpha); the drift
is solved so that the final bounds meet (``a_K = b_K``), which fixes the maximum information (the
inflation factor ``R`` over a fixed-horizon test). This is the construction of rpact's
``getDesignGroupSequential(bindingFutility = FALSE)`` and gsDesign's non-binding designs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

Spending = Literal["obrien_fleming", "pocock", "power", "hsd"]
Shape = Literal["pocock", "obrien_fleming"]

_SQRT_2PI = np.sqrt(2.0 * np.pi)
_Z_MAX = 40.0  # beyond this a bound crosses with probability < 1e-300: treat as "never"


@dataclass(frozen=True)
class GroupSequentialDesign:
    """Boundaries of a group-sequential test on the z-scale (scipy.stats result style).

    Attributes
    ----------
    information : ndarray
        Information fractions ``t_k`` of the looks (1.0 = the planned maximum).
    efficacy : ndarray
        Upper bounds ``b_k``: stop and reject H0 when ``Z_k >= b_k`` (for ``sides=2``: ``|Z_k| >= b_k``).
        ``inf`` where a look spends no alpha.
    futility : ndarray or None
        Lower bounds ``a_k``: stop and accept H0 (reject H1) when ``Z_k <= a_k``; None without futility.
    alpha_spent, beta_spent : ndarray
        Cumulative error spent by look k (``beta_spent`` is None without futility).
    drift : float or None
        ``eta``, the mean of ``Z`` at ``t = 1`` under the alternative (``theta * sqrt(I_max)``).
    inflation : float or None
        ``R = (eta / (z_{1-alpha} + z_{1-beta}))^2``: maximum information over a fixed-horizon test's.
    """

    information: np.ndarray
    efficacy: np.ndarray
    futility: np.ndarray | None
    alpha: float
    alpha_spent: np.ndarray
    spending: str
    sides: int = 1
    beta: float | None = None
    beta_spent: np.ndarray | None = None
    drift: float | None = None
    inflation: float | None = None


def spending_function(kind: Spending, alpha: float, t: np.ndarray, param: float | None = None) -> np.ndarray:
    """Cumulative error spent by information fraction ``t`` (clipped to [0, 1]); see the module docstring."""
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    if kind == "obrien_fleming":
        with np.errstate(divide="ignore"):
            return np.where(t > 0, 2.0 - 2.0 * ndtr(ndtri(1.0 - alpha / 2.0) / np.sqrt(t)), 0.0)
    if kind == "pocock":
        return alpha * np.log1p((np.e - 1.0) * t)
    if kind == "power":
        rho = 1.0 if param is None else param
        if rho <= 0:
            raise ValueError(f"power spending needs rho > 0, got {rho}")
        return alpha * t**rho
    if kind == "hsd":
        gamma = 0.0 if param is None else param
        if gamma == 0.0:
            return alpha * t
        return alpha * (1.0 - np.exp(-gamma * t)) / (1.0 - np.exp(-gamma))
    raise ValueError(f"unknown spending function {kind!r}; use obrien_fleming, pocock, power or hsd")


def efficacy_bounds(
    information: Sequence[float] | np.ndarray,
    alpha: float,
    spending: Spending = "obrien_fleming",
    *,
    param: float | None = None,
    sides: int = 1,
    r: int = 16,
) -> GroupSequentialDesign:
    """Lan-DeMets efficacy bounds for looks at ``information`` (fractions; the last may be below 1).

    Each ``b_k`` solves ``P_0(no crossing before k, crossing at k) = alpha(t_k) - alpha(t_{k-1})``.
    """
    t = _check_information(information)
    _check_level(alpha, "alpha")
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, got {sides}")
    per_side = alpha / sides
    cumulative = spending_function(spending, per_side, t, param) * sides
    increments = np.diff(cumulative, prepend=0.0)
    bounds = np.empty(t.size)
    state = None
    t_prev = 0.0
    for k, (t_k, target) in enumerate(zip(t, increments, strict=True)):
        bounds[k] = _solve_efficacy(state, t_prev, t_k, target, sides)
        lower = -bounds[k] if sides == 2 else -np.inf
        state = _propagate(state, t_prev, t_k, 0.0, lower, bounds[k], r)
        t_prev = t_k
    return GroupSequentialDesign(t, bounds, None, alpha, cumulative, spending, sides)


def futility_design(
    information: Sequence[float] | np.ndarray,
    alpha: float,
    beta: float,
    spending: Spending = "obrien_fleming",
    futility_spending: Spending = "obrien_fleming",
    *,
    param: float | None = None,
    futility_param: float | None = None,
    drift: float | None = None,
    r: int = 16,
) -> GroupSequentialDesign:
    """One-sided design with non-binding beta-spending futility bounds.

    Efficacy bounds as in :func:`efficacy_bounds`. Futility bounds ``a_k`` solve
    ``P_eta(a_j < Z_j < b_j for j < k, Z_k <= a_k) = beta(t_k) - beta(t_{k-1})``; if ``a_k`` would pass
    ``b_k`` it is set to ``b_k``. When ``drift`` is None it is solved so that at ``t_K = 1`` the bounds meet
    and the power is exactly ``1 - beta`` (the design's maximum information); when given (a running trial
    with a known maximum), the last look at ``t >= 1`` is forced to decide (``a_K = b_K``).
    """
    t = _check_information(information)
    _check_level(beta, "beta")
    design = efficacy_bounds(t, alpha, spending, param=param, r=r)
    beta_cum = spending_function(futility_spending, beta, t, futility_param)
    if drift is None:
        if not np.isclose(t[-1], 1.0):
            raise ValueError("solving the drift needs the last look at information 1.0")

        def final_gap(eta: float) -> float:
            spent = _futility_bounds(t, design.efficacy, beta_cum, eta, r, force_last=True)[1]
            return spent[-1] - beta

        # Type II error falls as the drift grows; the fixed-horizon drift is a lower bound for the root.
        eta_fixed = ndtri(1.0 - alpha) + ndtri(1.0 - beta)
        drift = brentq(final_gap, 0.5 * eta_fixed, 4.0 * eta_fixed, xtol=1e-10)
    futility, spent = _futility_bounds(t, design.efficacy, beta_cum, drift, r, force_last=t[-1] >= 1.0)
    eta_fixed = ndtri(1.0 - alpha) + ndtri(1.0 - beta)
    return GroupSequentialDesign(
        information=t,
        efficacy=design.efficacy,
        futility=futility,
        alpha=alpha,
        alpha_spent=design.alpha_spent,
        spending=spending,
        sides=1,
        beta=beta,
        beta_spent=spent,
        drift=float(drift),
        inflation=float((drift / eta_fixed) ** 2),
    )


def constant_bounds(
    information: Sequence[float] | np.ndarray,
    alpha: float,
    shape: Shape = "pocock",
    *,
    sides: int = 2,
    r: int = 16,
) -> GroupSequentialDesign:
    """Classical Pocock (1977) / O'Brien & Fleming (1979) boundaries: ``b_k = c`` or ``c * sqrt(t_K / t_k)``.

    The constant ``c`` is solved so that the total crossing probability under H0 is ``alpha``; with equally
    spaced looks this reproduces Jennison & Turnbull (2000) Tables 2.1 (``C_P``) and 2.3 (``C_B``).
    """
    t = _check_information(information)
    _check_level(alpha, "alpha")
    scale = np.ones_like(t) if shape == "pocock" else np.sqrt(t[-1] / t)

    def excess(c: float) -> float:
        upper, lower = crossing_probabilities(t, c * scale, -c * scale if sides == 2 else None, 0.0, r=r)
        return upper.sum() + lower.sum() - alpha

    c = brentq(excess, 0.5, 10.0, xtol=1e-12)
    bounds = c * scale
    upper, lower = crossing_probabilities(t, bounds, -bounds if sides == 2 else None, 0.0, r=r)
    return GroupSequentialDesign(t, bounds, None, alpha, np.cumsum(upper + lower), f"{shape}_constant", sides)


def crossing_probabilities(
    information: Sequence[float] | np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray | None,
    drift: float,
    *,
    r: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-look probabilities of first exit above ``upper`` and below ``lower`` under drift ``eta``.

    ``lower=None`` means no lower bound (one-sided, or futility ignored). Used for power, expected sample
    size and to check a design.
    """
    t = _check_information(information)
    upper = np.asarray(upper, dtype=float)
    lower = np.full(t.size, -np.inf) if lower is None else np.asarray(lower, dtype=float)
    p_up, p_low = np.zeros(t.size), np.zeros(t.size)
    state, t_prev = None, 0.0
    for k, t_k in enumerate(t):
        p_up[k] = _exit_above(state, t_prev, t_k, drift, upper[k])
        p_low[k] = _exit_below(state, t_prev, t_k, drift, lower[k])
        state = _propagate(state, t_prev, t_k, drift, lower[k], upper[k], r)
        t_prev = t_k
    return p_up, p_low


# --- the recursion -----------------------------------------------------------------------------------------
# ``state`` is (z, wh): the Simpson nodes of the previous look's continuation region and the node weights
# times the sub-density there; None before the first look.

_State = tuple[np.ndarray, np.ndarray] | None


def _mean_shift(t_prev: float, t_k: float, eta: float) -> float:
    return eta * (t_k - t_prev)


def _exit_above(state: _State, t_prev: float, t_k: float, eta: float, b: float) -> float:
    if not np.isfinite(b):
        return 0.0 if b > 0 else _mass(state, t_prev, t_k)
    if state is None:
        return float(ndtr(eta * np.sqrt(t_k) - b))
    z, wh = state
    if z.size == 0:
        return 0.0
    d = t_k - t_prev
    x = (b * np.sqrt(t_k) - z * np.sqrt(t_prev) - _mean_shift(t_prev, t_k, eta)) / np.sqrt(d)
    return float(np.dot(wh, ndtr(-x)))


def _exit_below(state: _State, t_prev: float, t_k: float, eta: float, a: float) -> float:
    if not np.isfinite(a):
        return 0.0 if a < 0 else _mass(state, t_prev, t_k)
    if state is None:
        return float(ndtr(a - eta * np.sqrt(t_k)))
    z, wh = state
    if z.size == 0:
        return 0.0
    d = t_k - t_prev
    x = (a * np.sqrt(t_k) - z * np.sqrt(t_prev) - _mean_shift(t_prev, t_k, eta)) / np.sqrt(d)
    return float(np.dot(wh, ndtr(x)))


def _mass(state: _State, t_prev: float, t_k: float) -> float:
    if state is None:
        return 1.0
    return float(state[1].sum())


def _propagate(state: _State, t_prev: float, t_k: float, eta: float, a: float, b: float, r: int) -> _State:
    """Sub-density of Z_k on (a, b) given the previous look's, by the AMR convolution."""
    z, w = _grid(eta * np.sqrt(t_k), a, b, r)
    if z.size == 0:
        return z, z
    if state is None:
        density = np.exp(-0.5 * (z - eta * np.sqrt(t_k)) ** 2) / _SQRT_2PI
        return z, w * density
    z_prev, wh_prev = state
    if z_prev.size == 0:
        return z[:0], z[:0]
    d = t_k - t_prev
    shift = _mean_shift(t_prev, t_k, eta)
    x = (z[:, None] * np.sqrt(t_k) - z_prev[None, :] * np.sqrt(t_prev) - shift) / np.sqrt(d)
    kernel = np.exp(-0.5 * x**2) / _SQRT_2PI * np.sqrt(t_k / d)
    return z, w * (kernel @ wh_prev)


def _grid(mean: float, a: float, b: float, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Jennison & Turnbull (2000) §19.2.1 grid around ``mean``, trimmed to (a, b), with Simpson weights."""
    i = np.arange(1, 6 * r)
    left = -3.0 - 4.0 * np.log(r / np.maximum(i, 1))
    middle = -3.0 + 3.0 * (i - r) / (2.0 * r)
    right = 3.0 + 4.0 * np.log(r / np.maximum(6 * r - i, 1))
    x = np.where(i < r, left, np.where(i <= 5 * r, middle, right))
    x = mean + x
    if a >= b:
        return np.empty(0), np.empty(0)
    inside = x[(x > a) & (x < b)]
    head = [a] if np.isfinite(a) and a > x[0] else []
    tail = [b] if np.isfinite(b) and b < x[-1] else []
    pts = np.concatenate([head, inside, tail])
    if pts.size < 2:
        # The whole region is narrower than one grid step: integrate it with a single Simpson panel.
        lo, hi = max(a, x[0]), min(b, x[-1])
        if hi <= lo:
            return np.empty(0), np.empty(0)
        pts = np.array([lo, hi])
    nodes = np.empty(2 * pts.size - 1)
    nodes[0::2] = pts
    nodes[1::2] = 0.5 * (pts[:-1] + pts[1:])
    widths = np.diff(pts)
    weights = np.zeros(nodes.size)
    weights[0:-1:2] += widths / 6.0
    weights[2::2] += widths / 6.0
    weights[1::2] = 4.0 * widths / 6.0
    return nodes, weights


def _solve_efficacy(state: _State, t_prev: float, t_k: float, target: float, sides: int) -> float:
    if target <= 1e-15:
        return np.inf
    available = _mass(state, t_prev, t_k)
    if target >= available:
        return -np.inf if sides == 1 else 0.0

    def excess(b: float) -> float:
        crossing = _exit_above(state, t_prev, t_k, 0.0, b)
        if sides == 2:
            crossing += _exit_below(state, t_prev, t_k, 0.0, -b)
        return crossing - target

    if excess(_Z_MAX) > 0:
        return _Z_MAX
    return float(brentq(excess, -_Z_MAX if sides == 1 else 0.0, _Z_MAX, xtol=1e-12))


def _futility_bounds(
    t: np.ndarray, efficacy: np.ndarray, beta_cum: np.ndarray, eta: float, r: int, *, force_last: bool
) -> tuple[np.ndarray, np.ndarray]:
    futility = np.empty(t.size)
    spent = np.empty(t.size)
    state, t_prev, total = None, 0.0, 0.0
    for k, t_k in enumerate(t):
        b = efficacy[k]
        if force_last and k == t.size - 1:
            a = b
        else:
            target = beta_cum[k] - total

            a = _solve_futility(state, t_prev, t_k, eta, b, target)
        total += _exit_below(state, t_prev, t_k, eta, a)
        futility[k], spent[k] = a, total
        state = _propagate(state, t_prev, t_k, eta, a, b, r)
        t_prev = t_k
    return futility, spent


def _solve_futility(state: _State, t_prev: float, t_k: float, eta: float, b: float, target: float) -> float:
    if target <= 1e-15:
        return -np.inf

    def excess(a: float) -> float:
        return _exit_below(state, t_prev, t_k, eta, a) - target

    if excess(min(b, _Z_MAX)) <= 0:
        return b  # all the remaining beta fits below the efficacy bound: this look must decide
    return float(brentq(excess, -_Z_MAX, min(b, _Z_MAX), xtol=1e-12))


def _check_information(information: Sequence[float] | np.ndarray) -> np.ndarray:
    t = np.asarray(information, dtype=float).ravel()
    if t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError("information fractions must be a non-empty list of finite numbers")
    if t[0] <= 0 or np.any(np.diff(t) <= 0):
        raise ValueError(f"information fractions must be positive and strictly increasing, got {t.tolist()}")
    return t


def _check_level(level: float, what: str) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"{what} must be in (0, 1), got {level}")
