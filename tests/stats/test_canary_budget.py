"""One false-rollback budget for the whole canary (issue 12, must-have 2): all steps, all metrics, <= alpha.

Simulated canaries with known truth (a harmless candidate), three ramp steps (10%, 25%, 50%) of six looks
each with fresh evidence per step (as the canary collects it), two metric gates per look. The canary's
false-rollback rate counts a rollback by any gate at any look of any step.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from gates.stats.budget import canary_harm_test
from gates.stats.decision import default_mixture
from gates.stats.msprt import log_mixture_lr
from gates.stats.two_sample import mean_effect

ALPHA, MDE, RUNS = 0.05, 0.10, 400
STEPS = (0.10, 0.25, 0.50)
LOOKS, USERS_PER_LOOK = 6, 1_000


def _shop(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Purchases (negative binomial, ~80% of users at zero) and the revenue they bring (lognormal prices)."""
    purchases = rng.negative_binomial(0.3, 0.3 / 0.62, shape).astype(float)
    return {"purchases": purchases, "revenue": purchases * rng.lognormal(0.0, 1.0, shape)}


def _step_effects(rng: np.random.Generator, draw, share: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric, (estimates, variances) of shape (runs, looks) for one step's cumulative looks."""
    n_c = np.arange(1, LOOKS + 1) * round(USERS_PER_LOOK * share)
    n_0 = np.arange(1, LOOKS + 1) * round(USERS_PER_LOOK * (1 - share))
    cand, champ = draw(rng, (RUNS, int(n_c[-1]))), draw(rng, (RUNS, int(n_0[-1])))
    out = {}
    for metric in cand:
        effects = [
            mean_effect(cand[metric][:, :c], champ[metric][:, :z], winsorize=0.999)
            for c, z in zip(n_c, n_0, strict=True)
        ]
        assert all(e.ok.all() for e in effects), "every look must be testable in this design"
        out[metric] = (np.stack([e.estimate for e in effects], 1), np.stack([e.variance for e in effects], 1))
    return out


def _rates(draw, seed: int) -> tuple[float, float]:
    """(canary-wide budget, restart at every step with full alpha per gate): false-rollback rates."""
    rng = np.random.default_rng(seed)
    steps = [_step_effects(rng, draw, share) for share in STEPS]
    metrics = list(steps[0])
    tau2, w = default_mixture(MDE)
    budget = np.zeros(RUNS, dtype=bool)
    restart = np.zeros(RUNS, dtype=bool)
    for metric in metrics:
        per_step = [step[metric] for step in steps]
        for s in range(len(per_step)):  # the test as the canary would run it, step after step
            budget |= canary_harm_test(per_step[: s + 1], mde=MDE, alpha=ALPHA, n_metrics=len(metrics)).reject
        for est, var in per_step:
            log_e = log_mixture_lr(est, var, tau2, weights=w, alternative="less")
            restart |= (log_e >= np.log(1 / ALPHA)).any(axis=1)
    return float(budget.mean()), float(restart.mean())


def _within_alpha(rate: float) -> bool:
    return binomtest(round(rate * RUNS), RUNS, ALPHA, alternative="greater").pvalue > 0.001


def test_whole_canary_false_rollbacks_within_alpha_on_shop_metrics() -> None:
    budget, restart = _rates(_shop, seed=31)
    assert _within_alpha(budget), (budget, restart)
    assert budget <= restart


def test_restarting_at_every_step_exceeds_alpha_and_the_budget_does_not() -> None:
    """A longer canary: 4 steps x 3 metrics x 50 looks a step, normal estimates with known variance (the
    always-valid rule's own model, so each gate spends nearly its alpha). Restarting with the full alpha
    per gate and step fails the check the canary-wide budget passes."""
    rng = np.random.default_rng(33)
    steps, metrics, looks, runs = 4, 3, 50, 2_000
    n = np.arange(1, looks + 1) * 100.0
    var = 0.5 / n  # per-user variance 0.5 on the relative scale
    tau2, w = default_mixture(MDE)
    budget = np.zeros(runs, dtype=bool)
    restart = np.zeros(runs, dtype=bool)
    for _ in range(metrics):
        per_step = []
        for _ in range(steps):
            est = np.cumsum(rng.normal(0.0, np.sqrt(0.5 * 100), (runs, looks)), axis=1) / n
            per_step.append((est, np.broadcast_to(var, est.shape)))
            log_e = log_mixture_lr(est, var, tau2, weights=w, alternative="less")
            restart |= (log_e >= np.log(1 / ALPHA)).any(axis=1)
        for s in range(steps):
            budget |= canary_harm_test(per_step[: s + 1], mde=MDE, alpha=ALPHA, n_metrics=metrics).reject
    rate = {"budget": float(budget.mean()), "restart": float(restart.mean())}
    assert binomtest(int(budget.sum()), runs, ALPHA, alternative="greater").pvalue > 0.001, rate
    assert binomtest(int(restart.sum()), runs, ALPHA, alternative="greater").pvalue < 1e-6, rate


def test_evidence_accumulates_across_steps() -> None:
    """A harm that persists is proven by the carried product where no single step proves it alone."""
    est, var = np.full(4, -0.06), np.full(4, 0.03**2)  # z = 2 at every look of every step
    alone = canary_harm_test([(est, var)], mde=MDE, alpha=ALPHA)
    carried = canary_harm_test([(est, var)] * 4, mde=MDE, alpha=ALPHA)
    assert not alone.reject and carried.reject
    assert float(carried.carried) == float(3 * alone.log_e_value)
    assert carried.threshold == np.log(1 / ALPHA)
