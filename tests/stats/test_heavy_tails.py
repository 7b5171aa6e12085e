"""Validity of the canary's sequential tests on the metrics real shops have (issue 12, must-have 0 and 3).

Simulations with known truth, through the functions the ``sequential`` gate calls (tests/stats/canary_sim.py).
A harmless candidate (same distribution as the champion) must be rolled back at most alpha = 5% of the time,
within the binomial noise of the run count, for group-sequential (Pocock, a look after every batch, planned
maximum at the last look) and always-valid (scale mixture) rules, on:

- revenue per user, zero-inflated and heavy-tailed, over the family FAMILY (zero share 50-99%; the buyers'
  spend lognormal with sigma 1-2 or Pareto with shape 1.5, whose variance is infinite), and canaries of
  1%, 5% and 50% with irregular batches (candidate users per batch uniform in a range, looks 6-10);
- click-through rates of 0.5%, 1% and 5% (users with heterogeneous CTRs and 10-60 impressions each) at a
  1% canary with 25-200 candidate users a batch;
- purchases per user at the demo world's size (76% of users buy nothing), where a 50% drop must be caught.

docs/statistics.md states the same family and the measured rates.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from gates.stats.effects import combine_arms
from gates.stats.two_sample import WAIT, Status, ratio_effect
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.plugins import build_gate
from stagegate.verdict import Outcome
from tests.stats.canary_sim import (
    ALPHA,
    Looks,
    irregular_looks,
    mean_metric_rollbacks,
    revenue,
    rollbacks,
)

#: (share of users who buy nothing, spend law of buyers, its parameter)
FAMILY = [
    (0.50, "lognormal", 2.0),
    (0.90, "lognormal", 1.5),
    (0.97, "lognormal", 2.0),
    (0.99, "lognormal", 1.0),
    (0.90, "pareto", 1.5),
]
#: (candidate share, candidate users per batch (min, max), looks, runs)
CANARIES = [(0.01, (25, 200), 6, 300), (0.05, (50, 400), 10, 400), (0.50, (100, 400), 10, 600)]


def _within_alpha(rolled: np.ndarray) -> bool:
    return binomtest(int(rolled.sum()), rolled.size, ALPHA, alternative="greater").pvalue > 0.001


@pytest.mark.parametrize("canary", CANARIES, ids=lambda c: f"{c[0]:.0%}")
@pytest.mark.parametrize("law", FAMILY, ids=lambda f: f"{f[0]:.0%}-zero-{f[1]}-{f[2]}")
def test_harmless_candidates_on_zero_inflated_heavy_tailed_revenue_are_not_rolled_back(
    law: tuple, canary: tuple
) -> None:
    share, batch, n_looks, runs = canary
    rng = np.random.default_rng(12)
    looks = irregular_looks(rng, share, batch, n_looks)
    rolled = mean_metric_rollbacks(rng, runs, looks, lambda g, s: revenue(g, s, *law))
    for method, flags in rolled.items():
        assert _within_alpha(flags), f"{method}: {flags.mean():.1%} false rollbacks on {law} at {share:.0%}"


def test_the_same_check_catches_the_log_ratio_delta_method() -> None:
    """The previous statistic (log ratio, each arm studentised by its own variance) fails this check."""
    rng = np.random.default_rng(12)
    looks = irregular_looks(rng, 0.05, (50, 400), 10)
    runs = 400
    y_c = revenue(rng, (runs, int(looks.candidate[-1])), 0.9, "lognormal", 1.5)
    y_0 = revenue(rng, (runs, int(looks.champion[-1])), 0.9, "lognormal", 1.5)

    class Old:
        def __init__(self, n_c: int, n_0: int) -> None:
            c, z = y_c[:, :n_c], y_0[:, :n_0]
            with np.errstate(divide="ignore", invalid="ignore"):
                est, var = combine_arms(
                    c.mean(1), c.var(1, ddof=1) / n_c, z.mean(1), z.var(1, ddof=1) / n_0, scale="log"
                )
            self.ok = np.isfinite(est) & (var > 0)
            self.estimate, self.variance = est, var

    flags = rollbacks(Old, looks, methods=("group_sequential",))["group_sequential"]  # type: ignore[arg-type]
    assert not _within_alpha(flags), flags.mean()


def test_power_is_kept_where_the_data_can_show_harm() -> None:
    """A -25% revenue drop, 90% non-buyers, lognormal spend, 50% canary of 2,000-6,400 users an arm.

    The conservative variance must not cost the power the data has: the group-sequential rule (which looks
    after every batch) keeps at least the power of a one-look z-test at the last look with the *true*
    variance, less 10 points; the always-valid rule, which pays for needing no plan, at least half of it.
    """
    rng = np.random.default_rng(13)
    looks = irregular_looks(rng, 0.5, (300, 800), 8)
    law = (0.9, "lognormal", 1.0)
    rolled = mean_metric_rollbacks(rng, 300, looks, lambda g, s: revenue(g, s, *law), effect=-0.25)
    cv2 = np.exp(law[2] ** 2) / (1 - law[0])  # E[Y^2] / E[Y]^2 of the zero-inflated lognormal
    se = np.sqrt(cv2 * (0.75**2 / looks.candidate[-1] + 1 / looks.champion[-1]))
    fixed = float(norm.cdf(0.25 / se - norm.ppf(1 - ALPHA)))
    measured = {k: float(v.mean()) for k, v in rolled.items()}
    assert measured["group_sequential"] >= fixed - 0.10 and measured["always_valid"] >= fixed / 2, (
        fixed,
        measured,
    )


# --- click-through rates ----------------------------------------------------------------------------------


def _clicks(rng: np.random.Generator, shape: tuple[int, int], ctr: float) -> tuple[np.ndarray, np.ndarray]:
    impressions = (rng.poisson(2.0, shape) + 1) * 10.0
    rate = rng.beta(20 * ctr, 20 * (1 - ctr), shape)  # users differ: clicks cluster in users
    return rng.binomial(impressions.astype(int), rate).astype(float), impressions


@pytest.mark.parametrize("ctr", [0.005, 0.01, 0.05])
def test_harmless_candidates_on_sparse_click_through_rates_are_not_rolled_back(ctr: float) -> None:
    rng = np.random.default_rng(14)
    looks = irregular_looks(rng, 0.01, (25, 200), 6)
    runs = 300
    clicks_c, imps_c = _clicks(rng, (runs, int(looks.candidate[-1])), ctr)
    clicks_0, imps_0 = _clicks(rng, (runs, int(looks.champion[-1])), ctr)
    statuses: set[int] = set()

    def effect(n_c: int, n_0: int):
        e = ratio_effect(clicks_c[:, :n_c], imps_c[:, :n_c], clicks_0[:, :n_0], imps_0[:, :n_0])
        statuses.update(np.unique(e.status).tolist())
        return e

    rolled = rollbacks(effect, looks)
    for method, flags in rolled.items():
        assert _within_alpha(flags), f"{method}: {flags.mean():.1%} false rollbacks at CTR {ctr:.1%}"
    # A candidate with no click yet is "not enough data", never a failure to measure.
    assert statuses <= {Status.OK} | WAIT, statuses


# --- sparse counts: purchases per user ----------------------------------------------------------------------


def _purchases(rng: np.random.Generator, shape: tuple[int, int], mean: float) -> np.ndarray:
    """Negative binomial counts, shape 0.3: about 80% of users at zero for a mean of 0.32 (the demo's)."""
    r = 0.3
    return rng.negative_binomial(r, r / (r + mean), shape).astype(float)


#: The demo world's canary at its 50% step: about 150 new users per arm every 12-hour look, six looks.
DEMO = Looks(np.arange(1, 7) * 150, np.arange(1, 7) * 150)


@pytest.mark.parametrize("drop", [0.0, -0.5])
def test_purchases_at_the_demo_worlds_size(drop: float) -> None:
    """Harmless: rolled back within alpha; halved: caught in at least 90% of canaries, by both rules."""
    rng = np.random.default_rng(15)
    rolled = mean_metric_rollbacks(
        rng,
        600,
        DEMO,
        lambda g, s: _purchases(g, s, 0.32),
        candidate_draw=lambda g, s: _purchases(g, s, 0.32 * (1 + drop)),  # fewer buyers, not smaller baskets
    )
    rates = {k: float(v.mean()) for k, v in rolled.items()}
    if drop == 0.0:
        assert all(_within_alpha(flags) for flags in rolled.values()), rates
    else:
        assert min(rates.values()) >= 0.9, rates


def _look_evidence(y_c: np.ndarray, y_0: np.ndarray, sizes: np.ndarray) -> list[Evidence]:
    looks: list[Evidence] = []
    for k, n in enumerate(sizes):
        arms = {
            CANDIDATE: ArmSample(np.arange(n), {"purchases_per_user": y_c[:n]}),
            CHAMPION: ArmSample(np.arange(n), {"purchases_per_user": y_0[:n]}),
        }
        looks.append(Evidence("canary", arms, allocation={CANDIDATE: 0.5, CHAMPION: 0.5}, look=k + 1,
                              history=tuple(looks)))  # fmt: skip
    return looks


def test_the_purchases_gate_catches_a_halving_and_its_bounds_narrow() -> None:
    """Through the gate of policies/default.yaml: -50% purchases at the demo's 50% step, 30 canaries."""
    gate = build_gate({"type": "sequential", "metric": "purchases_per_user", "method": "always_valid",
                       "mde": 0.10, "alpha": 0.05, "on_inconclusive": "record"})  # fmt: skip
    rng = np.random.default_rng(16)
    caught, widths = 0, []
    for _ in range(30):
        looks = _look_evidence(_purchases(rng, (900,), 0.16), _purchases(rng, (900,), 0.32), DEMO.candidate)
        verdicts = [gate.evaluate(look) for look in looks]
        assert all(v.outcome is not Outcome.ERROR for v in verdicts), [v.message for v in verdicts]
        caught += any(v.outcome is Outcome.FAIL for v in verdicts)
        decided = [v for v in verdicts if v.ci_high is not None]
        widths.append([v.ci_high - v.ci_low for v in decided])
    assert caught >= 27, caught
    # The interval narrows as users come (the log-ratio variance of the old rule grew as purchases fell).
    first, last = np.mean([w[0] for w in widths]), np.mean([w[-1] for w in widths])
    assert last < 0.6 * first, (first, last)
