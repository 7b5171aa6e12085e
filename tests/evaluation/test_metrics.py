"""Per-request metrics against small cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stagegate.evaluation import metrics as m

LOG2_3 = math.log2(3)


def test_ndcg_recall_map_on_a_three_item_example() -> None:
    # recommended [0, 1, 2]; the logged slate [2, 1, 5] had clicks on 2 and 1 -> relevant {1, 2}
    rec = np.array([[0, 1, 2]])
    logged = np.array([[2, 1, 5]])
    clicks = np.array([[True, True, False]])
    h = m.hits(rec, logged, clicks)
    n_rel = m.n_relevant(logged, clicks)
    assert h.tolist() == [[False, True, True]]
    assert n_rel.tolist() == [2]
    # DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3)
    dcg = 1 / LOG2_3 + 0.5
    assert m.ndcg(h, n_rel)[0] == pytest.approx(dcg / (1 + 1 / LOG2_3))
    assert m.ndcg(h, n_rel)[0] == pytest.approx(0.693426, abs=1e-6)
    assert m.recall(h, n_rel)[0] == pytest.approx(1.0)
    # AP = (P@2 + P@3) / min(2, 3) = (1/2 + 2/3) / 2
    assert m.average_precision(h, n_rel)[0] == pytest.approx(7 / 12)


def test_accuracy_metrics_edge_cases() -> None:
    rec = np.array([[0, 1, 2], [0, 1, 2], [3, 4, 5]])
    logged = np.array([[0, 7, 8], [9, 7, 8], [3, 4, 5]])
    labels = np.array([[True, False, False], [False, False, False], [True, True, True]])
    h, n_rel = m.hits(rec, logged, labels), m.n_relevant(logged, labels)
    nd = m.ndcg(h, n_rel)
    assert nd[0] == pytest.approx(1.0)  # the one relevant item first
    assert np.isnan(nd[1])  # no relevant item: undefined, not 0
    assert nd[2] == pytest.approx(1.0)  # a perfect ranking of three relevant items
    # a relevant item the ranker misses
    h2 = m.hits(np.array([[5, 6, 0]]), np.array([[0, 1, 2]]), np.array([[True, True, False]]))
    assert m.recall(h2, np.array([2]))[0] == pytest.approx(0.5)
    assert m.ndcg(h2, np.array([2]))[0] == pytest.approx(0.5 / (1 + 1 / LOG2_3))
    assert m.average_precision(h2, np.array([2]))[0] == pytest.approx((1 / 3) / 2)


def test_intra_list_diversity_by_hand() -> None:
    s = 1 / math.sqrt(2)
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [s, s], [1.0, 0.0]])
    # pairs (0,1): cos 0, (0,2): cos s, (1,2): cos s -> ILD = (1 + 2(1 - s)) / 3
    assert m.intra_list_diversity(np.array([[0, 1, 2]]), emb)[0] == pytest.approx((1 + 2 * (1 - s)) / 3)
    # identical directions -> no diversity; k=2 orthogonal -> 1
    assert m.intra_list_diversity(np.array([[0, 3]]), emb)[0] == pytest.approx(0.0)
    assert m.intra_list_diversity(np.array([[0, 1]]), emb)[0] == pytest.approx(1.0)


def test_intra_list_diversity_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(30, 5))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rec = np.argsort(rng.random((50, 30)), axis=1)[:, :6]
    expected = [np.mean([1 - emb[r[i]] @ emb[r[j]] for i in range(6) for j in range(i + 1, 6)]) for r in rec]
    np.testing.assert_allclose(m.intra_list_diversity(rec, emb, chunk=7), expected, rtol=1e-10)


def test_calibration_kl_by_hand() -> None:
    # categories A=0, B=1, C=2; history p = (0.5, 0.5, 0); slate categories [A, A, C] -> q = (2/3, 0, 1/3)
    p_user = np.array([[0.5, 0.5, 0.0]])
    kl = m.calibration_kl(np.array([[0, 0, 2]]), np.array([0]), p_user, alpha=0.01)[0]
    # q~_A = 0.99 * 2/3 + 0.01 * 0.5 = 0.665, q~_B = 0.005, C contributes 0 (p = 0)
    assert kl == pytest.approx(0.5 * math.log2(0.5 / 0.665) + 0.5 * math.log2(0.5 / 0.005))
    assert kl == pytest.approx(3.116215, abs=1e-6)
    # a slate with exactly the history's distribution is perfectly calibrated
    assert m.calibration_kl(np.array([[0, 1]]), np.array([0]), p_user)[0] == pytest.approx(0.0, abs=1e-12)


def test_calibration_kl_matches_dense_formula() -> None:
    rng = np.random.default_rng(5)
    n_users, n_cat, k = 7, 6, 5
    p_user = rng.dirichlet(np.ones(n_cat) * 0.5, size=n_users)
    p_user[0] = [1, 0, 0, 0, 0, 0]
    rows = rng.integers(0, n_users, 40)
    cats = rng.integers(0, n_cat, (40, k))
    q = np.stack([np.bincount(c, minlength=n_cat) / k for c in cats])
    p = p_user[rows]
    qt = 0.99 * q + 0.01 * p
    with np.errstate(divide="ignore", invalid="ignore"):
        dense = np.where(p > 0, p * np.log2(p / qt), 0.0).sum(axis=1)
    np.testing.assert_allclose(m.calibration_kl(cats, rows, p_user), dense, rtol=1e-10, atol=1e-12)


def test_novelty_freshness_stock_coverage_gini() -> None:
    # 4 users; item 0 was used by 3 of them, item 1 by none
    info = m.self_information(np.array([3, 0]), n_users=4)
    assert info.tolist() == pytest.approx([-math.log2(4 / 5), -math.log2(1 / 5)])
    assert m.novelty(np.array([[0, 1]]), info)[0] == pytest.approx((info[0] + info[1]) / 2)

    # ages 0, tau, never published; weights 1, 1/log2(3), 1/2
    fresh = m.freshness(np.array([[0.0, 14.0, np.inf]]), tau_days=14.0)[0]
    w = np.array([1.0, 1 / LOG2_3, 0.5])
    assert fresh == pytest.approx((1.0 + w[1] * math.exp(-1)) / w.sum())

    assert m.out_of_stock_share(np.array([[True, False, True, False]]))[0] == pytest.approx(0.5)
    assert m.catalog_coverage(np.array([[0, 1], [1, 2]]), n_items=10) == pytest.approx(0.3)
    assert m.exposure_gini(np.array([[0, 1], [2, 3]]), n_items=4) == pytest.approx(0.0)
    # all exposure on one of 4 items: G = (n - 1) / n
    assert m.exposure_gini(np.array([[0], [0]]), n_items=4) == pytest.approx(0.75)
