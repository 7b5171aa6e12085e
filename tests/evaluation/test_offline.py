"""evaluate_offline end to end on a tiny log whose per-user values are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stagegate.evaluation.offline import evaluate_offline, paired_offline_evidence
from stagegate.evidence import CANDIDATE, CHAMPION

from .synth import FixedScoreRanker, SlateRanker, batch, catalog, context, random_log

S = 1 / math.sqrt(2)
LOG2_3 = math.log2(3)
NDCG_EXAMPLE = (1 / LOG2_3 + 0.5) / (1 + 1 / LOG2_3)  # the 3-item example of test_metrics
ILD_012 = (1 + 2 * (1 - S)) / 3


@pytest.fixture
def tiny():
    """Six items; users 0 and 1 evaluated, user 2 has no click; two batches with different stock."""
    n_items = 6
    emb = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    cat = catalog(emb, ["A", "B", "A", "B", "C", "C"])
    stock_a = np.array([True, True, False, True, True, True])  # item 2 sold out in batch A
    ages = np.array([0.0, 14.0, np.inf, 1.0, 1.0, 1.0])
    ctx_a = context(
        2,
        n_items,
        user_id=[0, 0],
        hour=[20, 3],
        device=[1, 1],
        user_segment=[0, 1],
        in_stock=stock_a,
        item_age_days=ages,
    )
    ctx_b = context(
        2,
        n_items,
        user_id=[1, 2],
        hour=[9, 9],
        device=[0, 0],
        user_segment=[2, 2],
        item_age_days=ages,
        first_request_id=2,
    )
    a = batch(ctx_a, [[2, 1, 5], [0, 4, 3]], clicks=[[1, 1, 0], [0, 1, 0]])
    b = batch(ctx_b, [[0, 3, 4], [1, 2, 3]], clicks=[[1, 0, 0], [0, 0, 0]])
    ranker = FixedScoreRanker(np.array([6.0, 5, 4, 3, 2, 1]), name="fixed")  # slate [0, 1, 2]
    return [a, b], cat, ranker


def test_per_user_values_by_hand(tiny) -> None:
    log, cat, ranker = tiny
    res = evaluate_offline(ranker, log, cat, k=3, label="click")
    assert res.user_ids.tolist() == [0, 1]  # user 2 has no clicked request
    # user 0: requests with NDCG 0.6934 and 0 (clicked item 4 not recommended); user 1: item 0 first -> 1
    assert res.metrics["ndcg@3"].tolist() == pytest.approx([NDCG_EXAMPLE / 2, 1.0])
    assert res.metrics["recall@3"].tolist() == pytest.approx([0.5, 1.0])
    assert res.metrics["map@3"].tolist() == pytest.approx([(7 / 12) / 2, 1.0])
    # embeddings are normalised before the cosine: the slate [0, 1, 2] has the hand-computed ILD
    assert res.metrics["ild@3"].tolist() == pytest.approx([ILD_012, ILD_012])
    # item 2 was out of stock in user 0's batch only
    assert res.metrics["out_of_stock_share"].tolist() == pytest.approx([1 / 3, 0.0])
    w = np.array([1.0, 1 / LOG2_3, 0.5])
    assert res.metrics["freshness@3"].tolist() == pytest.approx([(1 + w[1] / math.e) / w.sum()] * 2)
    assert res.scalars["coverage@3"] == pytest.approx(0.5)
    assert res.requests_per_user.tolist() == [2, 1]
    # segments: user 0 was cold once and light once (tie -> cold_start), mobile, evening/night tie -> night
    seg = res.segments
    assert seg["cold_start"].tolist() == [True, False]
    assert seg["heavy"].tolist() == [False, True]
    assert seg["mobile"].tolist() == [True, False]
    assert seg["night"].tolist() == [True, False]
    assert seg["morning"].tolist() == [False, True]
    sample = res.to_arm_sample()
    assert sample.metric("ndcg@3", segment="heavy").tolist() == pytest.approx([1.0])


def test_purchase_label_and_history(tiny) -> None:
    log, cat, ranker = tiny
    assert evaluate_offline(ranker, log, cat, k=3, label="purchase").n_users == 0  # nobody bought
    # train history: user 0 clicked two category-A items -> p = (1, 0, 0); slate [0, 1, 2] is A, B, A
    train = batch(context(1, 6, user_id=[0]), [[0, 2, 4]], clicks=[[1, 1, 0]])
    res = evaluate_offline(ranker, log, cat, k=3, train_log=train)
    q_a = 0.99 * (2 / 3) + 0.01 * 1.0
    assert res.metrics["calibration_kl@3"][0] == pytest.approx(math.log2(1 / q_a))
    # novelty: 1 train user; items 0 and 2 used by him, 1 unused: -log2(2/2), -log2(1/2)
    assert res.metrics["novelty@3"][0] == pytest.approx((0 + 1 + 0) / 3)
    assert res.notes == ()


def test_scores_source_and_chunking_agree() -> None:
    rng = np.random.default_rng(0)
    log, cat = random_log(rng, 600, 80, 50)
    ranker = FixedScoreRanker(rng.random((3, 50)))  # per user-segment scores
    a = evaluate_offline(ranker, log, cat, k=5)
    b = evaluate_offline(ranker, log, cat, k=5, source="scores", chunk_rows=37)
    for name in a.metrics:
        np.testing.assert_allclose(a.metrics[name], b.metrics[name], err_msg=name)
    assert set(a.metrics) == {
        "ndcg@5",
        "recall@5",
        "map@5",
        "ild@5",
        "novelty@5",
        "calibration_kl@5",
        "freshness@5",
        "out_of_stock_share",
    }
    assert all(np.isfinite(v).all() for v in a.metrics.values())


def test_paired_evidence_aligns_users() -> None:
    rng = np.random.default_rng(1)
    log, cat = random_log(rng, 800, 100, 40)
    champ = evaluate_offline(FixedScoreRanker(rng.random(40), "champ"), log, cat)
    cand = evaluate_offline(FixedScoreRanker(rng.random(40), "cand"), log, cat, min_positive_requests=2)
    ev = paired_offline_evidence(champ, cand)
    assert ev.stage == "offline" and ev.paired
    c, k = ev.arm(CHAMPION), ev.arm(CANDIDATE)
    assert np.array_equal(c.user_ids, k.user_ids)
    assert c.n_users == cand.n_users < champ.n_users  # the intersection
    idx = np.searchsorted(champ.user_ids, c.user_ids)
    np.testing.assert_allclose(c.metric("ndcg@10"), champ.metrics["ndcg@10"][idx])
    assert ev.scalars[CANDIDATE]["coverage@10"] == cand.scalars["coverage@10"]
    with pytest.raises(ValueError, match="different protocols"):
        paired_offline_evidence(champ, evaluate_offline(FixedScoreRanker(rng.random(40)), log, cat, k=5))


def test_bad_rankers_and_inputs_are_refused(tiny) -> None:
    log, cat, _ = tiny
    with pytest.raises(ValueError, match="repeat an item"):
        evaluate_offline(SlateRanker(np.array([0, 0, 1])), log, cat, k=3)
    with pytest.raises(ValueError, match="outside"):
        evaluate_offline(SlateRanker(np.array([0, 1, 9])), log, cat, k=3)
    with pytest.raises(ValueError, match="label"):
        evaluate_offline(SlateRanker(np.array([0, 1, 2])), log, cat, k=3, label="revenue")
    with pytest.raises(ValueError, match="embedding"):
        evaluate_offline(SlateRanker(np.array([0, 1, 2])), log, cat, k=3, emb_prefix="vec_")
