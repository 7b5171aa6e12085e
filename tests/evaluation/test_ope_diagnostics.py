"""Fail-closed diagnostics of the off-policy estimates: what the log cannot support is withheld, with why.

Each case is one of issue 12's item 9 findings: missing data, one user, a log without clicks, an empty batch,
clipping that removes much of the weight mass; the support gap is in test_ope_coverage.py (it needs
repetitions). A withheld estimate must reach a gate as ERROR.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stagegate.evaluation import ope
from stagegate.evidence import CANDIDATE
from stagegate.log_rows import take
from stagegate.plugins import build_gate

from . import pbm_world as W
from .synth import FixedScoreRanker

ESTIMATORS = ("ips", "snips", "dr", "pbm_ips", "rips")


def _target(log) -> np.ndarray:
    return W.TARGET[np.asarray(log.context.user_segment, dtype=np.int64)]


def _all(log, reward: str = "click", price: np.ndarray | None = W.PRICE, **kw) -> dict[str, ope.OPEResult]:
    marginals = kw.pop("logger_marginals", W.logger_marginals_of(log) if log.n else np.zeros((0, W.K, W.K)))
    return ope.estimate_all(
        _target(log),
        log,
        reward,
        estimators=ESTIMATORS,
        price=price,
        examination=W.THETA,
        logger_marginals=marginals,
        **kw,
    )


@pytest.fixture(scope="module")
def log():
    return W.simulate(np.random.default_rng(17), n_users=1000)  # RIPS needs about 1,000 users for ESS 30


def _withheld(r: ope.OPEResult, reason: str) -> None:
    assert not r.reliable and not r.diagnostics.reliable, r.estimator
    assert np.isnan([r.estimate, r.se, r.ci_low, r.ci_high]).all(), r.estimator
    assert np.isnan(r.user_value).all(), r.estimator
    assert reason in r.diagnostic and any(reason in x for x in r.diagnostics.reasons), (
        r.estimator,
        r.diagnostic,
    )


def test_a_healthy_log_is_reliable_and_the_diagnostics_are_named(log) -> None:
    res = _all(log, "click")
    for name, r in res.items():
        d = r.diagnostics
        assert r.reliable and d.reliable and d.reasons == (), (name, r.diagnostic)
        assert d.n_requests == 4000 and d.n_users == 1000 and d.n_missing == 0
        assert 0.8 < d.support_share < 1.2 and d.support_upper >= 1.0  # full support: mean weight ≈ 1
        assert d.clipped_share == 0.0 and d.ess >= ope.MIN_ESS and d.max_weight >= 1.0
        assert np.isfinite(d.skewness)
        assert r.ci_low < r.estimate < r.ci_high
        row = r.to_dict()
        assert row["reliable"] is True and row["diag_support_share"] == d.support_share
        assert row["diag_reasons"] == "" and row["diag_min_users"] == ope.MIN_USERS
    # the on-policy value: no weights, no support question
    logged = ope.logged_value(log)
    assert logged.reliable and logged.diagnostics.support_share == 1.0 and logged.diagnostics.ess == 4000


def test_nan_price_or_revenue_is_counted_never_dropped(log) -> None:
    """A NaN price needed to split a request's revenue, or a NaN logged revenue: NaN rewards, a count, no
    estimate. A NaN price of an item not bought, or bought alone, is not needed and changes nothing."""
    rewards = ope.slot_rewards(log, "revenue", W.PRICE)
    multi = np.flatnonzero(log.purchases.sum(axis=1) > 1)
    assert multi.size > 0
    item = int(log.items[multi[0]][log.purchases[multi[0]]][0])
    price = W.PRICE.copy()
    price[item] = np.nan
    split = ope.slot_rewards(log, "revenue", price)
    needs = (log.purchases.sum(axis=1) > 1) & (log.purchases & (log.items == item)).any(axis=1)
    assert np.isnan(split[needs]).all() and np.isfinite(split[~needs]).all()
    np.testing.assert_allclose(split[~needs], rewards[~needs])
    for r in _all(log, "revenue", price=price).values():
        _withheld(r, f"{int(needs.sum())} of 4000 requests have a missing (NaN) reward")
        assert r.diagnostics.n_missing == int(needs.sum()) and np.isnan(r.raw_estimate)
    assert not ope.logged_value(log, "revenue", price=price).reliable
    # clicks do not need prices
    assert all(r.reliable for r in _all(log, "click", price=price).values())
    revenue = np.array(log.revenue)
    revenue[[3, 7]] = np.nan
    for r in _all(replace(log, revenue=revenue), "revenue").values():
        _withheld(r, "2 of 4000 requests have a missing (NaN) reward")


def test_nan_logger_marginals_withhold_pbm_ips(log) -> None:
    marginals = W.logger_marginals_of(log).copy()
    marginals[5] = np.nan
    r = ope.pbm_ips(log, _target(log), examination=W.THETA, logger_marginals=marginals)
    _withheld(r, "requests have a missing (NaN) reward or weight")


def test_one_user_is_not_a_sample(log) -> None:
    one = take(log, np.flatnonzero(log.context.user_id == 0))
    assert one.n == 4
    for r in _all(one).values():
        _withheld(r, "1 users, fewer than 50")
    _withheld(ope.logged_value(one), "1 users, fewer than 50")


def test_a_log_without_clicks_is_not_a_confident_zero(log) -> None:
    quiet = replace(log, clicks=np.zeros_like(log.clicks), purchases=np.zeros_like(log.purchases))
    quiet = replace(quiet, revenue=np.zeros_like(log.revenue))
    for reward in ("click", "revenue"):
        for r in _all(quiet, reward).values():
            _withheld(r, f"the logged {reward} reward has no variation")
            assert r.raw_estimate == 0.0
        _withheld(ope.logged_value(quiet, reward), "no variation")


def test_an_empty_batch_is_withheld_not_a_crash(log) -> None:
    empty = take(log, np.array([], dtype=np.int64))
    for r in _all(empty, "revenue").values():
        _withheld(r, "no logged requests")
        assert r.n_requests == 0 and r.n_users == 0
    # a ranker target on an empty batch, and DR with a separate reward-model log
    ranker = FixedScoreRanker(np.arange(W.N_ITEMS, dtype=float))
    _withheld(ope.dr(empty, ranker, "click"), "no logged requests")
    _withheld(ope.dr(empty, ranker, "click", reward_model_log=log), "no logged requests")
    _withheld(ope.logged_value(empty), "no logged requests")


def test_clipping_that_removes_much_weight_mass_is_withheld(log) -> None:
    for name in ("ips", "snips", "dr", "rips"):
        r = _all(log, "click", clip=2.0)[name]
        assert r.diagnostics.clipped_share > ope.MAX_CLIPPED_SHARE
        _withheld(r, "clipping at 2 removes")


def test_a_withheld_estimate_is_an_error_for_the_gate(log) -> None:
    """The simulation stage gives per-user values to gates: withheld -> NaN -> ERROR; reliable: a verdict."""
    gate = build_gate({"type": "relative", "metric": "clicks_per_user:ips", "min_change": -0.05})
    champion = ope.estimate_all(np.asarray(log.items), log, "click", estimators=("ips",))
    candidate = ope.estimate_all(_target(log), log, "click", estimators=("ips",))
    ok = gate.evaluate(ope.paired_ope_evidence(champion.values(), candidate.values()))
    assert ok.outcome.name != "ERROR", ok
    starved = take(log, np.flatnonzero(log.context.user_id < 5))  # 5 users: withheld
    champion = ope.estimate_all(np.asarray(starved.items), starved, "click", estimators=("ips",))
    candidate = ope.estimate_all(_target(starved), starved, "click", estimators=("ips",))
    ev = ope.paired_ope_evidence(champion.values(), candidate.values())
    assert np.isnan(ev.arm(CANDIDATE).metric("clicks_per_user:ips")).all()
    bad = gate.evaluate(ev)
    assert bad.outcome.name == "ERROR", bad
