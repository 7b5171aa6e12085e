"""Oracle labels by the policy's guardrails (issue 12 item 5): rules on synthetic truths with known intervals,
guardrails derived from both policy shapes, adaptive seeding on a fake world with known per-seed spread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.oracle import (
    STANDING,
    Guardrail,
    Protection,
    label,
    label_truth,
    protection,
)
from simulator.world.oracle import METRICS, adaptive_ground_truth

ROOT = Path(__file__).resolve().parents[2]


def _per_seed(effects: dict[str, np.ndarray], base: float = 10.0) -> dict:
    """Arm values per seed whose effects (relative, or difference for satisfaction) are ``effects``."""
    n = len(next(iter(effects.values())))
    champ = {m: np.full(n, base) for m in METRICS}
    cand = {m: np.full(n, base) for m in METRICS}
    for m, e in effects.items():
        cand[m] = base + np.asarray(e) if m == "mean_satisfaction" else base * (1 + np.asarray(e))
    return {"champion": champ, "candidate": cand}


def _truth(n: int = 10, spread: float = 0.01, **means: float) -> dict:
    """Per-seed effects with exactly the given mean and sample sd ``spread`` (a fixed ±pattern)."""
    z = np.resize([1.0, -1.0], n)
    z = (z - z.mean()) / z.std(ddof=1)
    effects = {m.replace("__", "_"): mu + spread * z for m, mu in means.items()}
    ps = _per_seed(effects)
    return {"per_seed": ps, "champion": {m: float(v.mean()) for m, v in ps["champion"].items()}}


def test_a_guardrail_breach_is_harmful_even_when_revenue_wins() -> None:
    p = protection(
        [
            {"type": "sequential", "metric": "purchases_per_user", "margin": 0.10, "role": "guardrail"},
            {"type": "sequential", "metric": "revenue_per_user", "mde": 0.1, "role": "success"},
        ]
    )
    res = label_truth(_truth(revenue_per_user=0.15, purchases_per_user=-0.20), p)
    assert res.label == "harmful" and "purchases_per_user" in res.reasons[0]
    # within the margin (−5 % against 10 %): not harmful, and revenue proven better -> good
    assert label_truth(_truth(revenue_per_user=0.15, purchases_per_user=-0.05), p).label == "good"
    # a harm of −20 % whose interval reaches past −10 % is not proven: not harmful
    wide = _truth(revenue_per_user=0.15, purchases_per_user=-0.09, spread=0.05)
    assert label_truth(wide, p).label == "unresolved"


def test_standing_guardrails_cold_start_and_satisfaction() -> None:
    assert label_truth(_truth(revenue_per_user=0.05, cold_start_revenue_per_user=-0.2)).label == "harmful"
    assert label_truth(_truth(revenue_per_user=0.05, mean_satisfaction=-0.3)).label == "harmful"
    assert label_truth(_truth(revenue_per_user=0.05, mean_satisfaction=-0.05)).label == "good"


def test_primary_loss_is_harm_and_the_indifference_band_is_neutral() -> None:
    assert label_truth(_truth(revenue_per_user=-0.05)).label == "harmful"
    # a loss proven, but not beyond the 2 % the oracle resolves: neutral, not harmful
    assert label_truth(_truth(revenue_per_user=-0.012, spread=0.002)).label == "neutral"
    assert label_truth(_truth(revenue_per_user=-0.03, spread=0.002)).label == "harmful"
    assert label_truth(_truth(revenue_per_user=0.0)).label == "neutral"  # resolved, within ±0.5 %
    # lower bound above +0.5 % is needed for good
    assert label_truth(_truth(revenue_per_user=0.008, spread=0.002)).label == "good"
    assert label_truth(_truth(revenue_per_user=0.008, spread=0.01)).label == "neutral"


def test_unresolved_when_the_interval_is_wider_than_two_percent() -> None:
    # sd 0.04 over 10 seeds: half-width 2.26 * 0.04 / sqrt(10) = 2.9 % > 2 %
    res = label_truth(_truth(revenue_per_user=0.01, spread=0.04))
    assert res.label == "unresolved" and res.unresolved == ["revenue_per_user"]
    assert res.half_width["revenue_per_user"] == pytest.approx(2.262157 * 0.04 / np.sqrt(10), rel=1e-5)
    # a proven harm needs no resolution: it is harmful however wide the other intervals
    assert label_truth(_truth(revenue_per_user=-0.3, spread=0.04)).label == "harmful"
    # the legacy vocabulary (benchmarks/decisions.py): unresolved scores as neutral, and says so
    verdict, reasons = label(_truth(revenue_per_user=0.01, spread=0.04))
    assert verdict == "neutral" and reasons[0] == "unresolved"


def test_a_guardrail_the_world_cannot_measure_is_not_applicable() -> None:
    t = _truth(revenue_per_user=0.05)
    t["champion"]["oos_click_share_realised"] = float("nan")
    res = label_truth(t)
    assert res.label == "good" and res.not_applicable == ["oos_click_share_realised"]


def test_legacy_truth_without_per_seed_values_uses_its_ci95() -> None:
    nan = float("nan")
    truth = {
        "ci95": {
            "revenue_per_user": [0.01, 0.03],
            "cold_start_revenue_per_user": [-0.3, -0.1],
            "mean_satisfaction": [-0.01, 0.01],
        },
        "champion": {
            "oos_click_share_realised": nan,
            "revenue_per_user": 1.0,
            "cold_start_revenue_per_user": 1.0,
            "mean_satisfaction": 0.0,
        },
    }
    assert label(truth)[0] == "reject"
    truth["ci95"]["cold_start_revenue_per_user"] = [-0.01, 0.01]
    assert label(truth)[0] == "promote"


def test_protection_from_both_policy_shapes() -> None:
    # the shape before gate roles: every per-user metric gate but the revenue one is a guardrail
    old = protection(
        {
            "stages": {
                "canary": {
                    "gates": [
                        {"type": "srm", "p_value": 0.001},
                        {"type": "sequential", "metric": "revenue_per_user", "mde": 0.1},
                        {"type": "sequential", "metric": "purchases_per_user", "mde": 0.1},
                        {"type": "guardrail", "metric": "error_rate", "max": 0.01},
                    ]
                }
            }
        }
    )
    assert old.primary == "revenue_per_user"
    rails = {g.metric: g for g in old.guardrails}
    assert rails["purchases_per_user"].margin == pytest.approx(0.10)  # the sequential gate's mde
    assert {"cold_start_revenue_per_user", "mean_satisfaction"} <= set(rails)
    assert any("error_rate" in u for u in old.unmeasured)
    # the shipped default.yaml, with roles: purchases is the guardrail at its 10 % margin
    shipped = protection(ROOT / "policies" / "default.yaml")
    assert shipped.primary == "revenue_per_user"
    assert {g.metric: g for g in shipped.guardrails}["purchases_per_user"].margin == pytest.approx(0.10)
    new = protection(
        {
            "stages": {
                "canary": {
                    "gates": [
                        {"type": "srm", "p_value": 0.001, "role": "quality"},
                        {"type": "sequential", "metric": "revenue_per_user", "mde": 0.1, "role": "success"},
                        {
                            "type": "sequential",
                            "metric": "purchases_per_user",
                            "margin": 0.07,
                            "role": "guardrail",
                        },
                        {
                            "type": "sequential",
                            "metric": "revenue_per_user",
                            "segment": "cold_start",
                            "margin": 0.2,
                            "role": "guardrail",
                        },
                        {"type": "guardrail", "metric": "error_rate", "max": 0.01, "role": "quality"},
                    ]
                }
            }
        }
    )
    rails = {g.metric: g for g in new.guardrails}
    assert rails["purchases_per_user"].margin == 0.07
    assert (
        rails["cold_start_revenue_per_user"].margin == 0.2
    )  # the policy's margin wins over the standing 5 %
    assert "revenue_per_user" not in rails
    with pytest.raises(ValueError, match="needs a harm margin"):
        protection([{"type": "threshold", "metric": "clicks_per_user", "min": 1, "role": "guardrail"}])
    with pytest.raises(ValueError, match="no canary stage"):
        protection({"stages": {}})


class _FakeWorld:
    """A world whose candidate effect per seed is known: revenue +3 % plus N(0, sd) noise per seed."""

    class _Users:
        join_day = np.zeros(100)

    _users = _Users()
    now = 0.0

    def __init__(self, sd: float) -> None:
        self.sd = sd
        self.calls = 0


def test_adaptive_seeds_stop_when_resolved_or_at_the_cap(monkeypatch) -> None:
    import simulator.world.oracle as wo

    def fake_pair(world, seed, days, n_users, champion, candidate, temperature):
        world.calls += 1
        rng = np.random.default_rng(seed)
        ch = {m: 1.0 for m in METRICS}
        ca = {m: 1.0 for m in METRICS}
        ca["revenue_per_user"] = 1.03 + world.sd * rng.normal()
        return ch, ca

    monkeypatch.setattr(wo, "_seed_pair", fake_pair)
    need = {"revenue_per_user": ("relative", 0.02)}
    quiet = adaptive_ground_truth(_FakeWorld(0.005), None, None, need, min_seeds=4, max_seeds=16)
    assert quiet["stopped"] == "resolved" and len(quiet["seeds"]) == 4
    noisy = _FakeWorld(0.03)  # needs about (2.1 * 0.03 / 0.02)^2 = 10 seeds
    mid = adaptive_ground_truth(noisy, None, None, need, min_seeds=4, max_seeds=40)
    assert mid["stopped"] == "resolved" and 8 <= len(mid["seeds"]) <= 16 and noisy.calls == len(mid["seeds"])
    assert mid["half_width"]["revenue_per_user"] <= 0.02
    capped = adaptive_ground_truth(_FakeWorld(0.2), None, None, need, min_seeds=4, max_seeds=8)
    assert capped["stopped"] == "cap" and len(capped["seeds"]) == 8
    assert capped["unresolved"] == ["revenue_per_user"]

    # a metric the world cannot measure (NaN for the champion) does not hold the seeds back
    def nan_pair(world, seed, days, n_users, champion, candidate, temperature):
        ch, ca = fake_pair(world, seed, days, n_users, champion, candidate, temperature)
        return {**ch, "oos_click_share_realised": np.nan}, {**ca, "oos_click_share_realised": np.nan}

    monkeypatch.setattr(wo, "_seed_pair", nan_pair)
    both = {**need, "oos_click_share_realised": ("difference", 0.01)}
    res = adaptive_ground_truth(_FakeWorld(0.005), None, None, both, min_seeds=4, max_seeds=16)
    assert res["stopped"] == "resolved" and len(res["seeds"]) == 4
    assert res["not_applicable"] == ["oos_click_share_realised"]
    with pytest.raises(ValueError, match="no ground truth for metrics"):
        adaptive_ground_truth(_FakeWorld(0.1), None, None, {"ndcg": ("relative", 0.02)})


def test_protection_labelled_metrics_carry_their_scales() -> None:
    p = Protection(guardrails=(*STANDING, Guardrail("purchases_per_user", 0.1)))
    lab = p.labelled()
    assert lab["revenue_per_user"] == ("relative", 0.02)
    assert lab["mean_satisfaction"] == ("difference", 0.05)
    assert lab["purchases_per_user"] == ("relative", 0.02)
