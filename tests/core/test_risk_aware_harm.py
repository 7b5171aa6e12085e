"""Fast version of benchmarks/guardrail_harm.py: canaries with a true harm on a guardrail, two rules.

Synthetic step pools stand in for the world (the benchmark calibrates them from the demo world): heavy-tailed
users (gamma visit and purchase propensities, lognormal prices) at the world's arm sizes per step of
policies/default.yaml. With a true -5 % on purchases (and so on revenue), the old rule (any_harm, a step
advances at its deadline when harm is not proven) sends most of them to rollout; the risk-aware rule of
policies/default.yaml sends at most its guardrail alpha there (Monte-Carlo bound), holding the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.guardrail_harm import StepPool, canaries, shares

ROOT = Path(__file__).resolve().parents[2]
#: candidate / champion users per step of policies/default.yaml in the demo world (the benchmark prints them)
SIZES = [(127, 1246), (346, 1082), (704, 731)]


def synthetic_pools(weights: list[float], windows: int, seed: int = 0) -> list[StepPool]:
    rng = np.random.default_rng(seed)
    pools = []
    for weight, (n_c, n_0) in zip(weights, SIZES, strict=True):
        n = n_c + n_0
        visit = rng.gamma(0.5, 2.0, n)[:, None]
        buy = rng.gamma(0.7, 1 / 0.7, n)[:, None]
        requests = rng.poisson(1.5 * visit, (n, windows)).astype(float)
        # a pool holds the users the step saw: each visits at least once
        first = rng.integers(0, windows, n)
        requests[np.arange(n), first] = np.maximum(requests[np.arange(n), first], 1.0)
        purchases = rng.poisson(0.3 * requests * buy).astype(float)
        revenue = purchases * rng.lognormal(2.5, 0.9, (n, windows))
        values = {
            "requests": requests,
            "errors": np.zeros((n, windows)),
            "clicks": rng.poisson(0.8 * requests).astype(float),
            "purchases": purchases,
            "revenue": revenue,
        }
        pools.append(StepPool(weight, values, n_c, n_0))
    return pools


def test_risk_aware_holds_what_the_old_rule_promoted() -> None:
    configs = canaries(ROOT / "policies" / "default.yaml")
    old, new = configs.values()
    assert old.decision.rule == "any_harm" and new.decision.rule == "risk_aware"
    windows = int(new.max_hours_per_step / new.batch_hours)
    pools = synthetic_pools([s.weight / 100 for s in new.steps], windows)
    runs = 40
    before = shares(old, pools, -0.05, runs, seed=1)
    after = shares(new, pools, -0.05, runs, seed=1)
    assert before["advance"] >= 0.5, before  # promoted because no harm was proven by the deadlines
    # at most the guardrail's alpha (5 %) reach rollout: binomial upper bound at 40 runs
    assert after["advance"] * runs <= 0.05 * runs + 2.33 * np.sqrt(runs * 0.05 * 0.95), after
    assert after["hold"] + after["rollback"] + after["advance"] == 1.0
    assert after["hold"] >= before["hold"]  # what is not proven goes to a human


def test_one_false_rollback_budget_for_the_whole_canary() -> None:
    """A harmless candidate (true effect 0) through every step of policies/default.yaml's canary, with both
    sequential gates on ``budget: canary``: rolled back at most alpha of the time over the whole canary, all
    steps and all metrics (binomial upper bound), not steps x metrics x alpha."""
    new = list(canaries(ROOT / "policies" / "default.yaml").values())[-1]
    sequential = [g for g in new.gates if g["type"] == "sequential"]
    assert sequential and all(g.get("budget") == "canary" for g in sequential)
    assert all(g.get("budget_gates") == len(sequential) for g in sequential)
    windows = int(new.max_hours_per_step / new.batch_hours)
    pools = synthetic_pools([s.weight / 100 for s in new.steps], windows, seed=3)
    runs = 30
    aa = shares(new, pools, 0.0, runs, seed=7)
    alpha = new.decision.alpha
    assert aa["rollback"] * runs <= alpha * runs + 2.33 * np.sqrt(runs * alpha * (1 - alpha)), aa
