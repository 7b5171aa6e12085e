"""The shared gate suite: every gate plugin, ours or a third party's, must pass ``check_gate``.

After scikit-learn's ``check_estimator``: one set of checks that the pipeline relies on, whatever the gate
computes. A third-party package calls ``check_gate(spec, evidence)`` from its own tests with one of its
specs and evidence on which the gate can decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.plugins import build_gate
from stagegate.verdict import Action, Outcome, Verdict


def make_arm(n: int, rng: np.random.Generator, lift: float = 0.0, error_rate: float = 0.0005) -> ArmSample:
    requests = rng.poisson(4, n) + 1.0
    clicks = rng.binomial(requests.astype(int) * 10, 0.05).astype(float)
    revenue = rng.gamma(2.0, 10.0, n) * (1 + lift)
    return ArmSample(
        user_ids=np.arange(n),
        metrics={
            "revenue_per_user": revenue,
            "ndcg@10": np.clip(rng.normal(0.2 * (1 + lift), 0.1, n), 0, 1),
            "out_of_stock_share": rng.uniform(0, 0.01, n),
            "requests": requests,
            "errors": rng.binomial(requests.astype(int), error_rate).astype(float),
            "clicks": clicks,
            "impressions": requests * 10,
        },
        segments={"cold_start": rng.random(n) < 0.25},
        requests={"latency_ms": rng.lognormal(np.log(50), 0.4, int(requests.sum())), "error": np.zeros(10)},
        pre_period={"revenue_per_user": revenue * rng.uniform(0.5, 1.5, n)},
    )


def make_evidence(
    n: int = 4000, seed: int = 0, lift: float = 0.0, paired: bool = False, share: float = 0.5
) -> Evidence:
    rng = np.random.default_rng(seed)
    n_cand = int(n * share)
    return Evidence(
        stage="test",
        arms={CHAMPION: make_arm(n - n_cand, rng), CANDIDATE: make_arm(n_cand, rng, lift)},
        paired=False,
        allocation={CHAMPION: 1 - share, CANDIDATE: share},
    )


def _map_arms(evidence: Evidence, fn: Callable[[ArmSample], ArmSample]) -> Evidence:
    return dataclasses.replace(evidence, arms={k: fn(v) for k, v in evidence.arms.items()})


def _with_nan(arm: ArmSample) -> ArmSample:
    def poison(values: np.ndarray) -> np.ndarray:
        out = np.asarray(values, dtype=float).copy()
        if out.size:
            out[:: max(1, out.size // 10)] = np.nan
        return out

    return dataclasses.replace(
        arm,
        metrics={k: poison(v) for k, v in arm.metrics.items()},
        requests={k: poison(v) for k, v in arm.requests.items()},
        pre_period={k: poison(v) for k, v in arm.pre_period.items()},
    )


def _empty(arm: ArmSample) -> ArmSample:
    return ArmSample(
        user_ids=np.array([], dtype=int),
        metrics={k: np.array([]) for k in arm.metrics},
        segments={k: np.array([], dtype=bool) for k in arm.segments},
        requests={k: np.array([]) for k in arm.requests},
        pre_period={k: np.array([]) for k in arm.pre_period},
    )


def _assert_well_formed(verdict: Any, gate: Any) -> None:
    assert isinstance(verdict, Verdict), f"{gate.name}: evaluate() must return a Verdict"
    assert isinstance(verdict.outcome, Outcome)
    assert verdict.gate == gate.name
    assert verdict.message and isinstance(verdict.message, str), (
        f"{gate.name}: verdict needs a human sentence"
    )
    assert verdict.n >= 0


def check_gate(spec: dict[str, Any], evidence: Evidence) -> None:
    """Run every shared check for the gate ``spec`` describes, on ``evidence`` where it can decide."""
    gate = build_gate(dict(spec))

    # 1. Decides on good evidence, deterministically, with a well-formed verdict.
    first, second = gate.evaluate(evidence), gate.evaluate(evidence)
    _assert_well_formed(first, gate)
    assert first.outcome is not Outcome.ERROR, f"{gate.name}: ERROR on good evidence: {first.message}"
    assert first == second, f"{gate.name}: two evaluations of the same evidence differ"
    if first.outcome is Outcome.PASS:
        assert first.statistic is None or np.isfinite(first.statistic)

    # 2. Fail closed: NaN, malformed or missing data is ERROR; "not enough data yet" (arms with no user yet,
    #    no arm at all while the split sends them traffic) is INCONCLUSIVE. Neither is ever PASS or FAIL,
    #    and nothing raises. (Until issue 12 empty arms had to be ERROR, which rolled back canaries that had
    #    simply not seen a user yet.)
    metric_gate = gate.config.metric is not None
    if metric_gate:
        verdict = gate.evaluate(_map_arms(evidence, _with_nan))
        _assert_well_formed(verdict, gate)
        assert verdict.outcome is Outcome.ERROR, f"{gate.name}: NaN input gave {verdict.outcome}, not ERROR"
    verdict = gate.evaluate(_map_arms(evidence, _empty))
    _assert_well_formed(verdict, gate)
    assert verdict.outcome is Outcome.INCONCLUSIVE, (
        f"{gate.name}: arms with no user yet gave {verdict.outcome}, not INCONCLUSIVE: {verdict.message}"
    )
    if evidence.allocation:
        verdict = gate.evaluate(dataclasses.replace(evidence, arms={}))
        _assert_well_formed(verdict, gate)
        assert verdict.outcome is Outcome.INCONCLUSIVE, (
            f"{gate.name}: no events yet for a configured split gave {verdict.outcome}: {verdict.message}"
        )
    verdict = gate.evaluate(dataclasses.replace(evidence, arms={}, allocation={}))
    assert verdict.outcome is Outcome.ERROR, f"{gate.name}: evidence with no arms gave {verdict.outcome}"
    if metric_gate:
        renamed = _map_arms(
            evidence,
            lambda a: dataclasses.replace(
                a,
                metrics={f"other_{k}": v for k, v in a.metrics.items()},
                requests={f"other_{k}": v for k, v in a.requests.items()},
            ),
        )
        verdict = gate.evaluate(renamed)
        assert verdict.outcome is Outcome.ERROR and gate.config.metric in verdict.message, (
            f"{gate.name}: a missing metric must give ERROR naming it, got {verdict.outcome}: "
            f"{verdict.message}"
        )

    # 3. Configuration: unknown fields refused; actions default to failing closed.
    with pytest.raises(ValidationError):
        build_gate({**spec, "no_such_field": 1})
    fresh = build_gate({k: v for k, v in spec.items() if k not in ("on_fail", "on_error", "on_inconclusive")})
    assert fresh.action_for(Outcome.FAIL) is Action.ROLLBACK
    assert fresh.action_for(Outcome.ERROR) is Action.ROLLBACK
    assert fresh.action_for(Outcome.PASS) is None
