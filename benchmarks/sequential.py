"""Benchmark: sequential canary decisions on simulated canaries with known truth (`make bench-stats`).

Scenarios: a 5% click-through rate, a 5% canary, the candidate's true relative effect A/A (0), -2% (the MDE),
-10% and +2%. Users arrive in hourly batches (2 M users/day: 83,333 users per batch, 4,167 of them on the
canary); every user is one Bernoulli click. After every batch each method looks at the cumulative data with
plug-in variances (the relative change of the click rates with the variance of
``gates.stats.two_sample``: each arm's variance ``max(own, pooled)``, the Fieller-linear relative test,
exactly what the `sequential` gate computes for a relative MDE) and decides: roll back, promote, or continue.

The decision rules are the library's (``gates.stats``): the same boundaries, mixture likelihood ratios and
first-decision logic the gates use, applied to all runs at once. Common random numbers: every method sees
the same simulated canaries.

Reported per method: false rollbacks (A/A, +2%), missed regressions (-2%, -10%), runs still undecided at
the method's cap, and mean canary users to decision in units of the fixed-horizon sample size n_fixed
(undecided runs count at the cap). The oracle is Wald's SPRT tuned to the true effect with the same error
budget (Wald's approximation, no overshoot): a lower bound for any procedure.

Usage: python benchmarks/sequential.py [--runs 100000] [--seed 1] [--chunk 5000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import beta as beta_dist

from gates.sequential import SequentialConfig
from gates.stats.decision import default_mixture, first_decision
from gates.stats.group_sequential import GroupSequentialDesign, Spending
from gates.stats.msprt import log_mixture_lr
from gates.stats.planning import fixed_sample_size, plan_group_sequential
from gates.stats.sprt import expected_sample_size, log_likelihood_ratio, wald_thresholds
from gates.stats.srm import log_bayes_factor
from gates.stats.two_sample import from_moments

P0 = 0.05  # champion click-through rate
MDE = 0.02  # relative minimum detectable effect (harm)
MDE_TEST = MDE  # the margin on the scale the tests run on (the relative change, as the gate)
ALPHA = 0.05  # one-sided false-rollback budget
BETA = 0.20  # missed-regression budget at the MDE
SHARE = 0.05  # canary share of users
USERS_PER_BATCH = 2_000_000 // 24  # hourly batches at 2 M users a day
CAP = 3.0  # open-ended methods stop (undecided) at CAP x n_fixed
MSPRT_HORIZON = 1.72  # mSPRT truncation giving ~80% power at the MDE (reference §2.2)
SCENARIOS = {"A/A": 0.0, "-2%": -0.02, "-10%": -0.10, "+2%": 0.02}
HARMFUL = {"A/A": False, "-2%": True, "-10%": True, "+2%": False}

Z_ALPHA, Z_BETA = float(ndtri(1 - ALPHA)), float(ndtri(1 - BETA))


@dataclass(frozen=True)
class Setup:
    n_fixed: float  # canary users of the one-look z-test with power 1 - BETA at the MDE
    batch_canary: int
    batch_control: int
    looks: int  # batches simulated (up to CAP x n_fixed)

    def canary_users(self, looks: np.ndarray) -> np.ndarray:
        return (np.asarray(looks) + 1) * self.batch_canary

    def look_at(self, fraction: float) -> int:
        """0-based index of the first look with at least ``fraction`` x n_fixed canary users."""
        return int(np.ceil(fraction * self.n_fixed / self.batch_canary)) - 1


def setup() -> Setup:
    p1 = P0 * (1 - MDE)
    # Variance of the relative change per canary user (delta method) under the MDE, control 19x larger.
    var_unit = (p1 * (1 - p1) + (p1 / P0) ** 2 * P0 * (1 - P0) * SHARE / (1 - SHARE)) / P0**2
    n_fixed = (Z_ALPHA + Z_BETA) ** 2 * var_unit / MDE**2
    batch_canary = round(SHARE * USERS_PER_BATCH)
    looks = int(np.ceil(CAP * n_fixed / batch_canary))
    return Setup(n_fixed, batch_canary, USERS_PER_BATCH - batch_canary, looks)


def simulate(s: Setup, effect: float, runs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative relative-change estimates and the gate's variances, shape (runs, looks)."""
    clicks_c = rng.binomial(s.batch_canary, P0 * (1 + effect), size=(runs, s.looks)).cumsum(axis=1)
    clicks_0 = rng.binomial(s.batch_control, P0, size=(runs, s.looks)).cumsum(axis=1)
    est, var = np.empty((runs, s.looks)), np.empty((runs, s.looks))
    for k in range(s.looks):
        n_c, n_0 = s.batch_canary * (k + 1), s.batch_control * (k + 1)
        rate_c, rate_0 = clicks_c[:, k] / n_c, clicks_0[:, k] / n_0
        # Per-user variance of a Bernoulli click with ddof=1, as the gate computes from per-user values.
        var_c, var_0 = rate_c * (1 - rate_c) * n_c / (n_c - 1), rate_0 * (1 - rate_0) * n_0 / (n_0 - 1)
        e = from_moments(rate_c, var_c, n_c, rate_0, var_0, n_0, scale="relative")
        est[:, k], var[:, k] = e.estimate, e.variance
    return est, var


# --- methods: each maps (estimates, variances) to (decision +1/-1/0, look index) -------------------------

Method = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def fixed_horizon(s: Setup) -> Method:
    k = s.look_at(1.0)

    def run(est: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = -est[:, k] / np.sqrt(var[:, k])
        return np.where(z >= Z_ALPHA, 1, -1), np.full(est.shape[0], k)

    return run


def naive_peeking(s: Setup) -> Method:
    k = s.look_at(1.0)

    def run(est: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = -est[:, : k + 1] / np.sqrt(var[:, : k + 1])
        promote = np.zeros_like(z, dtype=bool)
        promote[:, k] = True
        return first_decision(z >= Z_ALPHA, promote)

    return run


def msprt_harm(s: Setup) -> Method:
    k = s.look_at(MSPRT_HORIZON)

    def run(est: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_lr = log_mixture_lr(est[:, : k + 1], var[:, : k + 1], MDE_TEST**2, alternative="less")
        promote = np.zeros_like(log_lr, dtype=bool)
        promote[:, k] = True
        return first_decision(log_lr >= np.log(1 / ALPHA), promote)

    return run


def cs_pair(s: Setup) -> Method:
    tau2, w = default_mixture(MDE_TEST)  # the gate's scale mixture

    def run(est: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        harm = log_mixture_lr(est, var, tau2, weights=w, alternative="less") >= np.log(1 / ALPHA)
        ni = log_mixture_lr(est, var, tau2, weights=w, null=-MDE_TEST, alternative="greater") >= np.log(
            1 / BETA
        )
        return first_decision(harm, ni)

    return run


def wald_sprt(s: Setup) -> Method:
    w = wald_thresholds(ALPHA, BETA)

    def run(est: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        llr = log_likelihood_ratio(est, var, theta1=-MDE_TEST)
        return first_decision(llr >= w.upper, llr <= w.lower)

    return run


def plan_gst(s: Setup, spending: Spending, futility_spending: Spending, beta: float) -> GroupSequentialDesign:
    """Design with a look after every batch up to its maximum (in units of the beta-level n_fixed)."""
    n_fixed = fixed_sample_size(MDE, s.n_fixed * MDE**2 / (Z_ALPHA + Z_BETA) ** 2, ALPHA, beta)
    plan = plan_group_sequential(
        n_fixed,
        s.batch_canary,
        alpha=ALPHA,
        beta=beta,
        spending=spending,
        futility_spending=futility_spending,
    )
    return plan.design, plan.max_n / s.n_fixed


def group_sequential(s: Setup, design: GroupSequentialDesign) -> Method:
    k = design.information.size

    def run(est: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = -est[:, :k] / np.sqrt(var[:, :k])
        return first_decision(z >= design.efficacy, z <= design.futility)

    return run


# --- oracle ------------------------------------------------------------------------------------------------


def drift(effect: float) -> float:
    """Drift of the harm-oriented z-path per unit of n_fixed under ``effect`` (true variances)."""
    p1 = P0 * (1 + effect)
    var_unit = (p1 * (1 - p1) + (p1 / P0) ** 2 * P0 * (1 - P0) * SHARE / (1 - SHARE)) / P0**2
    return -effect / np.sqrt(var_unit / setup().n_fixed)


def oracle(name: str) -> float:
    """E[N] / n_fixed of Wald's SPRT tuned to the truth (reference §5): the lower bound per scenario."""
    mu_truth, mu_mde = drift(SCENARIOS[name]), drift(-MDE)
    if name == "-2%":
        return expected_sample_size(ALPHA, BETA, mu_mde**2 / 2, under="h1")
    if name == "-10%":
        return float(np.log(1 / ALPHA) / (mu_truth**2 / 2))  # at ~100% power (reference §11.4)
    # Promotion: the SPRT between the truth and the MDE, deciding for the truth.
    return expected_sample_size(ALPHA, BETA, (mu_truth - mu_mde) ** 2 / 2, under="h0")


# --- SRM ---------------------------------------------------------------------------------------------------


def srm_benchmark(s: Setup, runs: int, rng: np.random.Generator) -> dict[str, float]:
    """Sequential SRM (Dirichlet-multinomial, p < 0.001) after every batch: false alarms and detection."""
    weights = np.array([SHARE, 1 - SHARE])
    looks = 60  # 60 hours, 5 M users
    out = {}
    for label, share in (("null", SHARE), ("deficit", SHARE * 0.95)):
        canary = rng.binomial(USERS_PER_BATCH, share, size=(runs, looks)).cumsum(axis=1)
        total = USERS_PER_BATCH * np.arange(1, looks + 1)
        counts = np.stack([canary, total - canary], axis=-1)
        alarm = log_bayes_factor(counts, weights, 10_000.0) >= np.log(1000.0)
        fired = alarm.any(axis=1)
        first = np.where(fired, alarm.argmax(axis=1), looks - 1)
        out[f"{label}_alarm_rate"] = float(fired.mean())
        out[f"{label}_median_users"] = float(np.median((first + 1) * USERS_PER_BATCH))
    return out


# --- run ---------------------------------------------------------------------------------------------------


def methods(s: Setup) -> dict[str, tuple[Method, float]]:
    """Name -> (method, cap in n_fixed units for undecided runs)."""
    obf, obf_max = plan_gst(s, "obrien_fleming", "obrien_fleming", BETA)
    cfg = SequentialConfig.model_fields
    spend, fut, beta = (cfg[f].default for f in ("spending", "futility_spending", "beta"))
    default, default_max = plan_gst(s, spend, fut, beta)
    default_name = (
        f"**Default rule**: `group_sequential`, {spend} + {fut} futility, beta {beta}, max {default_max:.2f}"
    )
    return {
        "Fixed horizon z-test": (fixed_horizon(s), 1.0),
        "Naive peeking every batch": (naive_peeking(s), 1.0),
        f"mSPRT one-sided, tau=MDE, horizon {MSPRT_HORIZON}": (msprt_harm(s), MSPRT_HORIZON),
        f"GST OBF + OBF futility, max {obf_max:.2f}": (group_sequential(s, obf), obf_max),
        "CS pair (gate `always_valid`)": (cs_pair(s), CAP),
        default_name: (group_sequential(s, default), default_max),
        "Wald SPRT at the MDE": (wald_sprt(s), CAP),
    }


def evaluate(runs: int, seed: int, chunk: int) -> tuple[Setup, dict, dict]:
    s = setup()
    table = methods(s)
    rng = np.random.default_rng(seed)
    stats: dict[str, dict[str, dict[str, float]]] = {m: {} for m in table}
    for scenario, effect in SCENARIOS.items():
        sums = {m: np.zeros(4) for m in table}  # rollbacks, promotes, undecided, canary users
        for start in range(0, runs, chunk):
            est, var = simulate(s, effect, min(chunk, runs - start), rng)
            for name, (method, cap) in table.items():
                decision, look = method(est, var)
                users = np.where(look >= 0, s.canary_users(look), cap * s.n_fixed)
                counts = [(decision == 1).sum(), (decision == -1).sum(), (decision == 0).sum()]
                sums[name] += [*counts, users.sum()]
        for name in table:
            rb, pr, und, users = sums[name]
            stats[name][scenario] = {
                "rollback": rb / runs,
                "promote": pr / runs,
                "undecided": und / runs,
                "samples": users / runs / s.n_fixed,
            }
    return s, stats, {name: oracle(name) for name in SCENARIOS}


def upper_bound(rate: float, runs: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound of a rate."""
    k = round(rate * runs)
    return 1.0 if k >= runs else float(beta_dist.ppf(0.95, k + 1, runs - k))


def render(s: Setup, stats: dict, oracles: dict, runs: int, seconds: float, srm: dict) -> str:
    lines = [
        f"n_fixed = {s.n_fixed:,.0f} canary users ({s.n_fixed / SHARE / 1e6:.2f} M users in total); "
        f"a look every {s.batch_canary:,} canary users ({s.n_fixed / s.batch_canary:.1f} looks per n_fixed); "
        f"{runs:,} runs per scenario; {seconds:.0f} s.",
        "",
        "| method | false rollback A/A | false rollback +2% | missed -2% | missed -10% | undecided (max) "
        "| E[N] A/A | E[N] -2% | E[N] -10% | E[N] +2% | mean E[N]/oracle |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per in stats.items():
        ratio = np.mean([per[sc]["samples"] / oracles[sc] for sc in SCENARIOS])
        undecided = max(per[sc]["undecided"] for sc in SCENARIOS)
        lines.append(
            f"| {name} | {per['A/A']['rollback']:.2%} | {per['+2%']['rollback']:.2%} "
            f"| {per['-2%']['promote']:.2%} | {per['-10%']['promote']:.2%} | {undecided:.2%} "
            + " ".join(f"| {per[sc]['samples']:.3f}" for sc in SCENARIOS)
            + f" | {ratio:.2f} |"
        )
    lines.append(
        "| Oracle: Wald SPRT tuned to the truth (lower bound) | 5% | - | 20% | - | - "
        + " ".join(f"| {oracles[sc]:.3f}" for sc in SCENARIOS)
        + " | 1.00 |"
    )
    default = next(name for name in stats if name.startswith("**Default"))
    d = stats[default]
    ratios = [d[sc]["samples"] / oracles[sc] for sc in SCENARIOS]
    aa_upper = upper_bound(d["A/A"]["rollback"], runs)
    checks = [
        ("A/A false rollback <= 5%", d["A/A"]["rollback"], d["A/A"]["rollback"] <= 0.05),
        ("A/A false rollback, upper 95% bound <= 5.5%", aa_upper, aa_upper <= 0.055),
        ("missed regression at -2% <= 20%", d["-2%"]["promote"], d["-2%"]["promote"] <= 0.20),
        ("E[N] at -10% <= 0.10 x n_fixed", d["-10%"]["samples"], d["-10%"]["samples"] <= 0.10),
        ("E[N] at -2% <= 0.80 x n_fixed", d["-2%"]["samples"], d["-2%"]["samples"] <= 0.80),
        ("E[N] to promote A/A <= 0.60 x n_fixed", d["A/A"]["samples"], d["A/A"]["samples"] <= 0.60),
        ("E[N] to promote +2% <= 0.35 x n_fixed", d["+2%"]["samples"], d["+2%"]["samples"] <= 0.35),
        ("mean E[N]/oracle <= 2.0 (stretch 1.6)", float(np.mean(ratios)), np.mean(ratios) <= 2.0),
        ("no scenario worse than 3x the oracle", float(np.max(ratios)), np.max(ratios) <= 3.0),
    ]
    lines += ["", "Targets for the default rule:", "", "| target | measured | met |", "|---|---|---|"]
    for label, value, ok in checks:
        shown = f"{value:.2%}" if "rollback" in label or "missed" in label else f"{value:.3f}"
        lines.append(f"| {label} | {shown} | {'yes' if ok else 'NO'} |")
    hours = s.n_fixed / s.batch_canary  # one batch = one hour
    lines += [
        "",
        f"In canary users and hours (one batch = one hour; n_fixed = {s.n_fixed:,.0f} canary users = "
        f"{hours:.0f} h):",
        "",
        "| method | rollback at -2% | rollback at -10% | promote A/A | promote +2% |",
        "|---|---|---|---|---|",
    ]
    for name in (default, next(n for n in stats if n.startswith("CS pair")), "Fixed horizon z-test"):
        samples = [stats[name][sc]["samples"] for sc in ("-2%", "-10%", "A/A", "+2%")]
        cells = [f"{x * s.n_fixed / 1e3:,.0f} k / {x * hours:.0f} h" for x in samples]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Sequential SRM (Dirichlet-multinomial, concentration 10,000, alarm at p < 0.001, a look every "
        "batch, 60 batches = 5 M users):",
        "",
        f"- false alarm rate with the configured 5/95 split: {srm['null_alarm_rate']:.3%}",
        f"- canary losing 5% of its users (4.75% share): detected in {srm['deficit_alarm_rate']:.1%} "
        f"of runs, median {srm['deficit_median_users']:,.0f} users",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=5_000)
    args = parser.parse_args()
    start = time.perf_counter()
    s, stats, oracles = evaluate(args.runs, args.seed, args.chunk)
    srm = srm_benchmark(s, min(args.runs, 20_000), np.random.default_rng(args.seed + 1))
    print(render(s, stats, oracles, args.runs, time.perf_counter() - start, srm))


if __name__ == "__main__":
    main()
