"""Off-policy estimators against a logging world with known truth (tests/evaluation/pbm_world.py).

Unbiasedness and interval coverage are measured in test_ope_coverage.py, the fail-closed diagnostics in
test_ope_diagnostics.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stagegate.evaluation import ope
from stagegate.evaluation.plackett_luce import exact_marginals, mc_marginals, sample_slates
from stagegate.evidence import CANDIDATE, CHAMPION

from . import pbm_world as W
from .synth import SlateRanker, batch, context


def _target(log) -> np.ndarray:
    return W.TARGET[np.asarray(log.context.user_segment, dtype=np.int64)]


def test_dr_has_no_more_variance_than_ips_and_reports_diagnostics() -> None:
    rng = np.random.default_rng(7)
    log = W.simulate(rng, n_users=2000)
    res = ope.estimate_all(_target(log), log, "click", estimators=("ips", "snips", "dr"))
    assert res["dr"].se <= res["ips"].se * 1.05
    for r in res.values():
        assert r.n_requests == 8000 and r.n_users == 2000
        assert 0 < r.ess < r.n_requests and r.ess_per_position.shape == (W.K,)
        assert 0 < r.match_rate < 1
        assert r.ci_low < r.estimate < r.ci_high
        assert r.metric_name == f"clicks_per_user:{r.estimator}"


def test_snips_and_per_user_identities() -> None:
    rng = np.random.default_rng(11)
    log = W.simulate(rng, n_users=300, requests_per_user=3)
    s = ope.snips(log, _target(log))
    # linearised contributions reproduce the estimate
    assert s.user_value.sum() / s.user_requests.sum() == pytest.approx(s.estimate)
    # every slot clicked: each position's self-normalised value is exactly 1, but an outcome without
    # variation measures nothing: withheld, the raw value kept
    all_clicked = replace(log, clicks=np.ones_like(log.clicks))
    s1 = ope.snips(all_clicked, _target(log))
    assert s1.raw_estimate == pytest.approx(W.K) and not s1.reliable and np.isnan(s1.estimate)
    assert "no variation" in s1.diagnostic
    u = ope.ips(log, _target(log), per="user")
    q = ope.ips(log, _target(log), per="request")
    assert u.estimate == pytest.approx(u.user_value.mean())
    assert u.estimate == pytest.approx(3 * q.estimate)  # 3 requests per user
    # target == logger's slate with pscore 1: every estimator equals the logged value
    on_policy = replace(log, pscore=np.ones_like(log.pscore))
    logged = ope.logged_value(on_policy)
    for f in (ope.ips, ope.snips, ope.dr):
        assert f(on_policy, np.asarray(log.items)).estimate == pytest.approx(logged.estimate)


def test_clipping_counts_and_shrinks() -> None:
    rng = np.random.default_rng(3)
    log = W.simulate(rng)
    full = ope.ips(log, _target(log))
    clipped = ope.ips(log, _target(log), clip=2.0)
    assert full.n_clipped == 0 and clipped.n_clipped > 0 and clipped.clip == 2.0
    assert clipped.raw_estimate < full.estimate
    # clipping at 2 removes far more than MAX_CLIPPED_SHARE of the weight mass: the estimate is withheld
    assert full.reliable and full.diagnostics.clipped_share == 0.0
    assert not clipped.reliable and clipped.diagnostics.clipped_share > ope.MAX_CLIPPED_SHARE
    assert "clipping at 2 removes" in clipped.diagnostic
    matched = 1 / log.pscore[_target(log) == log.items]  # the weights IPS uses
    mild = ope.ips(log, _target(log), clip=0.95 * float(matched.max()))
    assert 0 < mild.diagnostics.clipped_share <= ope.MAX_CLIPPED_SHARE and mild.reliable
    with pytest.raises(ValueError, match="clip"):
        ope.ips(log, _target(log), clip=0.0)


def test_invalid_propensities_and_targets_are_refused() -> None:
    log = W.simulate(np.random.default_rng(0), n_users=10)
    for bad in (0.0, 1.5, np.nan):
        p = np.array(log.pscore)
        p[0, 1] = bad
        with pytest.raises(ValueError, match=r"pscore must be in \(0, 1\]"):
            ope.ips(replace(log, pscore=p), _target(log))
    with pytest.raises(ValueError, match="shape"):
        ope.ips(log, _target(log)[:, :2])
    with pytest.raises(ValueError, match="logger_marginals"):
        ope.pbm_ips(log, _target(log), examination=W.THETA, logger_marginals=np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="pscore_prefix"):
        ope.rips(replace(log, pscore_prefix=None), _target(log))
    with pytest.raises(ValueError, match="unknown estimators"):
        ope.estimate_all(_target(log), log, estimators=("magic",))
    with pytest.raises(TypeError, match="unexpected keywords"):
        ope.estimate_all(_target(log), log, n_fold=3)


def test_revenue_is_split_over_purchased_slots() -> None:
    ctx = context(2, 4)
    purchases = [[True, False, True], [False, False, False]]
    b = batch(ctx, [[0, 1, 2], [1, 2, 3]], clicks=purchases, purchases=purchases, revenue=[40.0, 0.0])
    price = np.array([10.0, 99.0, 30.0, 1.0])
    np.testing.assert_allclose(ope.slot_rewards(b, "revenue", price), [[10, 0, 30], [0, 0, 0]])
    np.testing.assert_allclose(ope.slot_rewards(b, "revenue"), [[20, 0, 20], [0, 0, 0]])
    orphan = replace(b, revenue=np.array([40.0, 5.0]))
    with pytest.raises(ValueError, match="revenue without a purchased slot"):
        ope.slot_rewards(orphan, "revenue")


def test_ranker_target_and_paired_evidence() -> None:
    log = W.simulate(np.random.default_rng(5), n_users=200)
    champion_slates = np.asarray(log.items)
    candidate = SlateRanker(_target(log), name="candidate")  # looks the slate up by request id
    cand = ope.estimate_all(candidate, log, "revenue", price=W.PRICE)
    champ = ope.estimate_all(champion_slates, log, "revenue", price=W.PRICE)
    assert cand["ips"].estimate == pytest.approx(
        ope.ips(log, _target(log), "revenue", price=W.PRICE).estimate
    )
    ev = ope.paired_ope_evidence(champ.values(), cand.values())
    assert ev.paired and ev.stage == "simulation"
    arm = ev.arm(CANDIDATE)
    assert set(arm.metrics) == {
        "n_requests",
        "revenue_per_user:ips",
        "revenue_per_user:snips",
        "revenue_per_user:dr",
    }
    np.testing.assert_allclose(arm.metric("revenue_per_user:dr"), cand["dr"].user_value)
    assert ev.arm(CHAMPION).n_users == 200


def test_plackett_luce_marginals() -> None:
    scores = np.array([1.0, 0.2, -0.4, 0.7])
    exact = exact_marginals(scores, 2)
    np.testing.assert_allclose(exact.sum(axis=0), 1.0)  # each position holds one item
    w = np.exp(scores)
    assert exact[0, 0] == pytest.approx(w[0] / w.sum())
    rng = np.random.default_rng(0)
    slates = sample_slates(np.tile(scores, (20000, 1)), 2, rng)
    freq = np.stack([np.bincount(slates[:, j], minlength=4) / 20000 for j in range(2)], axis=1)
    np.testing.assert_allclose(freq, exact, atol=0.015)
    items = np.array([[0, 3], [2, 1]])
    mc = mc_marginals(np.tile(scores, (2, 1)), items, rng, n_samples=4000)
    np.testing.assert_allclose(mc, exact[items], atol=0.03)


def test_estimates_without_support_are_withheld() -> None:
    """Fail closed: with a handful of matching slots the estimate is NaN (a gate says ERROR), not 0 ± 0."""
    log = W.simulate(np.random.default_rng(2), n_users=5)  # 20 requests
    for est in (ope.ips, ope.snips, ope.dr, ope.rips):
        r = est(log, _target(log), "revenue", price=W.PRICE)
        assert not r.reliable and np.isnan(r.estimate) and np.isnan(r.ci_low) and np.isnan(r.se)
        assert np.isnan(r.user_value).all()
        assert "below min_ess 30" in r.diagnostic and "position" in r.diagnostic
        assert "5 users, fewer than 50" in r.diagnostic
    r = ope.ips(log, _target(log), "revenue", price=W.PRICE)
    assert np.isfinite(r.raw_estimate)
    assert np.isnan(ope.ope_arm_sample([r]).metric("revenue_per_user:ips")).all()
    # enough users: the min_ess rule alone decides
    big = W.simulate(np.random.default_rng(2), n_users=60)  # 240 requests, ESS ≈ 20-40 per position
    strict = ope.ips(big, _target(big), "click", min_ess=1e6)
    lax = ope.ips(big, _target(big), "click", min_ess=0)
    assert not strict.reliable and "below min_ess 1e+06" in strict.diagnostic
    assert lax.reliable and lax.diagnostic == "" and lax.estimate == pytest.approx(strict.raw_estimate)
    assert ope.logged_value(big).reliable  # the on-policy value needs no support
    assert not ope.logged_value(log).reliable  # ... but enough users
