"""Benchmark: how many canaries with a true harm on a guardrail reach rollout, by decision rule.

Issue 12, item 1: at the demo world's size the old default canary promoted nearly every candidate with a
true -3 % or -5 % harm, because a step advanced at its deadline when harm was merely not proven. This
benchmark measures, at the sizes of ``--policy`` (policies/default.yaml: its canary steps, weights,
``min_users``, looks and deadlines) in the demo world, the share of candidates that reach rollout, are held
for a human or are rolled back, under the old rule and the new one.

How the canaries are made (``calibrate``): the demo world of benchmarks/decisions.py (simulator.world,
3,000 users, seed 7: a bootstrap week, then 21 days of history with the trained champion) serves the
policy's canary steps at their weights, A/A (the champion in both arms), in the policy's look windows.
Each step's users, with their per-window requests, errors, clicks, purchases and revenue, form that step's
pool. A simulated canary draws, per step, as many candidate and champion users as the world had there,
with replacement from the pooled users (A/A: the arms are exchangeable), so arrivals, repeat visits and
the heavy tails of revenue are the world's. A true relative effect ``e`` on purchases is imposed by
thinning: each candidate purchase is kept with probability ``1 + e`` (``e < 0``) and the user's revenue
in that window scales with the purchases kept; for ``e > 0`` the champion's purchases are thinned by
``1 / (1 + e)`` instead. Revenue therefore moves with purchases (a candidate that sells less earns less),
clicks do not.

Every look is judged the way the flow judges it: the stages' look loop
(:func:`flows.stages.runner.run_looks` with :func:`flows.stages.canary.canary_plan`) with the stage's gates
built by :func:`stagegate.policy.gates.configure_stage` (the gates' own statistics, at the decision rule's
levels) and :func:`stagegate.policy.gates.judge_look`. Reaching rollout = the canary stage ADVANCEs
(approval before rollout not counted); held = HOLD (a human decides); rolled back = ROLLBACK.

Usage: ``python benchmarks/guardrail_harm.py [--runs 1000] [--effects -0.05 -0.03 0 0.05] [--traffic-scale 1]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("requests", "errors", "clicks", "purchases", "revenue")

#: The canary of policies/default.yaml before the risk-aware rule (commit f632283): rule any_harm, the
#: sequential gates' inconclusive verdicts recorded, so a step advances at its deadline without harm proven.
ANY_HARM_CANARY: dict[str, Any] = {
    "steps": [
        {"weight": 10, "min_users": 100},
        {"weight": 25, "min_users": 250},
        {"weight": 50, "min_users": 500},
    ],
    "batch_hours": 12,
    "max_hours_per_step": 72,
    "approval": "before_rollout",
    "gates": [
        {"type": "srm", "p_value": 0.001, "on_fail": "rollback"},
        {"type": "sequential", "metric": "revenue_per_user", "method": "always_valid", "mde": 0.10,
         "alpha": 0.05, "on_fail": "rollback", "on_inconclusive": "record"},
        {"type": "sequential", "metric": "purchases_per_user", "method": "always_valid", "mde": 0.10,
         "alpha": 0.05, "on_fail": "rollback", "on_inconclusive": "record"},
        {"type": "guardrail", "metric": "error_rate", "max": 0.01, "on_fail": "rollback"},
    ],
}  # fmt: skip


@dataclass(frozen=True)
class StepPool:
    """One canary step's users in the world: ``values[m]`` is (users, windows) per metric."""

    weight: float
    values: dict[str, np.ndarray]
    n_candidate: int
    n_champion: int


def calibrate(canary: Any, size: str = "demo", world_seed: int = 7, truth_seed: int = 0) -> list[StepPool]:
    """Serve the canary's steps A/A in the world and keep every step's per-user, per-window aggregates."""
    import pandas as pd

    from simulator.models.zoo import build_zoo
    from simulator.oracle import world_config

    zoo = build_zoo(world_config(size, world_seed), candidates=())
    world, champion = zoo.world.fork(truth_seed=truth_seed), zoo.champion
    pools = []
    for spec in canary.steps:
        weight = spec.weight / 100.0
        n_windows = int(np.ceil((spec.max_hours or canary.max_hours_per_step) / canary.batch_hours))
        frames = []
        for w in range(n_windows):
            batch = world.serve(champion, champion, candidate_share=weight, hours=canary.batch_hours)
            frames.append(
                pd.DataFrame(
                    {
                        "user": batch.context.user_id.astype(np.int64),
                        "arm": batch.arm.astype(int),
                        "window": w,
                        "requests": 1.0,
                        "errors": batch.error.astype(float),
                        "clicks": batch.clicks.sum(axis=1).astype(float),
                        "purchases": batch.purchases.sum(axis=1).astype(float),
                        "revenue": batch.revenue.astype(float),
                    }
                )
            )
        frame = pd.concat(frames, ignore_index=True)
        per = frame.groupby(["user", "window"])[list(METRICS)].sum()
        users = frame["user"].unique()
        index = pd.MultiIndex.from_product([np.sort(users), range(n_windows)], names=["user", "window"])
        per = per.reindex(index, fill_value=0.0)
        values = {m: per[m].to_numpy(float).reshape(len(users), n_windows) for m in METRICS}
        arms = frame.groupby("user")["arm"].first()
        pools.append(StepPool(weight, values, int((arms == 1).sum()), int((arms == 0).sum())))
    return pools


def _thin(values: dict[str, np.ndarray], keep: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Keep each purchase with probability ``keep``; revenue scales with the purchases kept."""
    purchases = values["purchases"]
    kept = rng.binomial(purchases.astype(np.int64), keep).astype(float)
    share = np.divide(kept, purchases, out=np.ones_like(purchases), where=purchases > 0)
    return {**values, "purchases": kept, "revenue": values["revenue"] * share}


def _draw(pool: StepPool, effect: float, rng: np.random.Generator, scale: float = 1.0) -> tuple[dict, dict]:
    """Candidate and champion users of one simulated step (``scale`` x the world's), true effect imposed."""
    n_users = pool.values["requests"].shape[0]
    n_c, n_0 = round(pool.n_candidate * scale), round(pool.n_champion * scale)
    cand = {m: v[rng.integers(0, n_users, n_c)] for m, v in pool.values.items()}
    champ = {m: v[rng.integers(0, n_users, n_0)] for m, v in pool.values.items()}
    if effect < 0:
        cand = _thin(cand, 1.0 + effect, rng)
    elif effect > 0:
        champ = _thin(champ, 1.0 / (1.0 + effect), rng)
    return cand, champ


def _arm(values: dict[str, np.ndarray], look: int, offset: int) -> Any:
    from stagegate.evidence import ArmSample

    cum = {m: v[:, :look].sum(axis=1) for m, v in values.items()}
    seen = cum["requests"] > 0
    ids = np.arange(values["requests"].shape[0])[seen] + offset
    metrics = {m: c[seen] for m, c in cum.items()}
    metrics |= {
        "revenue_per_user": metrics["revenue"],
        "purchases_per_user": metrics["purchases"],
        "clicks_per_user": metrics["clicks"],
        "impressions": metrics["requests"] * 10,
    }
    return ArmSample(user_ids=ids, metrics=metrics)


def simulate_canary(
    canary: Any, pools: list[StepPool], effect: float, seed: int, scale: float = 1.0
) -> tuple[str, str, float]:
    """One canary through the flow's loop; returns (decision, reason, days)."""
    from datetime import timedelta

    from flows.stages.canary import canary_plan
    from flows.stages.runner import Parts, run_looks
    from stagegate.evidence import CANDIDATE, CHAMPION
    from stagegate.policy.gates import configure_stage, judge_look
    from stagegate.ports import SIM_EPOCH, Measurement, Wait

    rng = np.random.default_rng(seed)
    gates = configure_stage(canary)
    drawn: dict[int, tuple[dict, dict]] = {}
    looks: dict[int, int] = {}

    class Clock:  # the pools are the world: a look is ready at once, time only counts
        at = SIM_EPOCH

        def now(self) -> Any:
            return self.at

        def wait(self, look: Any) -> Any:
            self.at = max(self.at, look.due)
            return Wait(ready=True, due=look.due)

    def measure(window: Any, expect: Any) -> Any:
        step = int(window.step)
        looks[step] = looks.get(step, 0) + 1  # the step's cumulative data up to this look
        if step not in drawn:
            drawn[step] = _draw(pools[step - 1], effect, rng, scale)
        cand, champ = drawn[step]
        return Measurement(
            window, {CANDIDATE: _arm(cand, looks[step], 10**7), CHAMPION: _arm(champ, looks[step], 0)}
        )

    def judge(*, step: int, look: int, evidence: Any, **kwargs: Any) -> Any:
        return judge_look(gates, evidence, **kwargs)

    clock = Clock()
    result = run_looks(canary_plan("benchmark", canary), Parts(clock=clock, measure=measure, judge=judge))
    return result.decision.value, result.reason, (clock.at - SIM_EPOCH) / timedelta(days=1)


def shares(
    canary: Any, pools: list[StepPool], effect: float, runs: int, seed: int, scale: float = 1.0
) -> dict[str, Any]:
    """Outcome shares over ``runs`` simulated canaries (seeds ``seed`` .. ``seed + runs - 1``)."""
    outcomes = [simulate_canary(canary, pools, effect, seed + r, scale) for r in range(runs)]
    decisions = np.array([o[0] for o in outcomes])
    days = np.array([o[2] for o in outcomes])
    out: dict[str, Any] = {"runs": runs, "effect": effect}
    for name in ("advance", "hold", "rollback"):
        out[name] = float(np.mean(decisions == name))
    out["median_days"] = float(np.median(days))
    return out


def canaries(policy_path: Path) -> dict[str, Any]:
    """{label: canary stage config}: the old any_harm canary and the policy's own."""
    from stagegate.policy import load_policy
    from stagegate.policy.schema import CanaryStage

    policy = load_policy(policy_path)
    assert policy.stages.canary is not None, f"{policy_path} has no canary stage"
    return {
        "any_harm (default.yaml before)": CanaryStage.model_validate(copy.deepcopy(ANY_HARM_CANARY)),
        f"{policy.stages.canary.decision.rule} ({policy_path.name})": policy.stages.canary,
    }


def users_needed(cv: float, effect: float, alpha: float, beta: float) -> float:
    """Users per arm for a one-look test of a relative ``effect`` (log scale) at ``alpha`` with power
    ``1 - beta``: ``n = 2 (z_{1-alpha} + z_{1-beta})^2 CV^2 / log(1 + effect)^2`` (delta method). Sequential
    tests need more (docs/benchmarks.md, "Sequential statistics": about 1.5-2x for the always-valid pair)."""
    from scipy.special import ndtri

    return float(2 * (ndtri(1 - alpha) + ndtri(1 - beta)) ** 2 * cv**2 / np.log1p(effect) ** 2)


def _table(results: dict[str, list[dict[str, Any]]], effects: list[float]) -> str:
    head = "| rule | " + " | ".join(f"true {e:+.0%}" for e in effects) + " |"
    lines = [head, "|---|" + "---|" * len(effects)]
    for label, rows in results.items():
        cells = [
            f"{r['advance']:.1%} rollout / {r['hold']:.1%} held / {r['rollback']:.1%} rolled back"
            for r in rows
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=ROOT / "policies" / "default.yaml")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--effects", type=float, nargs="+", default=[-0.05, -0.03, 0.0, 0.05])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--world-seed", type=int, default=7)
    parser.add_argument("--size", choices=["demo", "small"], default="demo")
    parser.add_argument(
        "--traffic-scale",
        type=float,
        default=1.0,
        help="draw this many times the world's users per step (a bigger world with the same users)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    configs = canaries(args.policy)
    first = next(iter(configs.values()))
    pools = calibrate(first, args.size, args.world_seed)
    for i, pool in enumerate(pools, start=1):
        rev = pool.values["revenue"].sum(axis=1)
        pur = pool.values["purchases"].sum(axis=1)
        print(
            f"step {i} ({pool.weight:.0%}): {pool.n_candidate} candidate / {pool.n_champion} champion users; "
            f"per user revenue mean {rev.mean():.3g} CV {rev.std() / rev.mean():.2f}, "
            f"purchases mean {pur.mean():.3g} CV {pur.std() / pur.mean():.2f}"
        )
    last = pools[-1]
    rev, pur = last.values["revenue"].sum(axis=1), last.values["purchases"].sum(axis=1)
    ni = users_needed(pur.std() / pur.mean(), -0.10, 0.05, 0.2)
    better = users_needed(rev.std() / rev.mean(), 0.05, 0.05, 0.2)
    print(
        "users per arm a one-look test would need at the last step's CVs (alpha 0.05, power 0.8): purchases "
        f"non-inferior within 10 %: {ni:,.0f}; revenue +5 % proven better: {better:,.0f}"
    )
    results = {
        label: [shares(canary, pools, e, args.runs, args.seed, args.traffic_scale) for e in args.effects]
        for label, canary in configs.items()
    }
    print(_table(results, args.effects))
    print(f"{args.runs} runs per cell, traffic x{args.traffic_scale:g}; {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
