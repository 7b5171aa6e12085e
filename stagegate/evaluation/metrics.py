"""Per-request ranking and beyond-accuracy metrics, vectorised over requests.

Every function takes the re-ranked slates ``rec`` of shape ``(n, k)`` (item ids, best first) and returns
one value per request. Formulas follow shared/reference/recsys_simulation.md §4.
"""

from __future__ import annotations

import numpy as np


def discounts(k: int) -> np.ndarray:
    """Position discounts ``1 / log2(j + 1)`` for j = 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=float))


def hits(rec: np.ndarray, logged_items: np.ndarray, logged_label: np.ndarray) -> np.ndarray:
    """``(n, k)`` bool: the recommended item at each position is one of the request's relevant items.

    Relevant items are the logged slate's items whose label (click or purchase) is true.
    """
    match = (rec[:, :, None] == logged_items[:, None, :]) & np.asarray(logged_label, bool)[:, None, :]
    return match.any(axis=2)


def n_relevant(logged_items: np.ndarray, logged_label: np.ndarray) -> np.ndarray:
    """Number of distinct relevant items per request."""
    lab = np.asarray(logged_label, bool)
    srt = np.sort(np.where(lab, logged_items, -1), axis=1)
    first = np.ones_like(srt, dtype=bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    return (first & (srt >= 0)).sum(axis=1)


def ndcg(h: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """NDCG@k with binary gains: DCG = Σ_j rel_j / log2(j + 1), IDCG = Σ_{j ≤ min(R, k)} 1 / log2(j + 1).

    Järvelin & Kekäläinen 2002 (gain 2^rel − 1 = rel for binary rel). NaN where R = 0.
    """
    k = h.shape[1]
    d = discounts(k)
    ideal = np.concatenate([[0.0], np.cumsum(d)])[np.minimum(n_rel, k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, (h * d).sum(axis=1) / ideal, np.nan)


def recall(h: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Recall@k = |relevant ∩ top-k| / |relevant|; NaN where there is no relevant item."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, h.sum(axis=1) / n_rel, np.nan)


def average_precision(h: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """AP@k = Σ_j P@j · rel_j / min(R, k), P@j = (hits in top j) / j; mean over requests gives MAP@k."""
    k = h.shape[1]
    prec = np.cumsum(h, axis=1) / np.arange(1, k + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, (prec * h).sum(axis=1) / np.minimum(n_rel, k), np.nan)


def intra_list_diversity(rec: np.ndarray, unit_emb: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """ILD = 2 / (k(k−1)) Σ_{i<j} (1 − cos(φ_i, φ_j))  (Smyth & McClave 2001; Ziegler et al. 2005).

    With unit vectors, Σ_{i≠j} cos = ‖Σ_i φ_i‖² − Σ_i ‖φ_i‖², so no k×k Gram matrix is formed.
    Zero embeddings count as orthogonal to everything. NaN for k < 2.
    """
    n, k = rec.shape
    if k < 2:
        return np.full(n, np.nan)
    out = np.empty(n)
    for s in range(0, n, chunk):
        e = unit_emb[rec[s : s + chunk]]  # (m, k, d)
        total = np.square(e.sum(axis=1)).sum(axis=1)
        self_sim = np.square(e).sum(axis=(1, 2))
        out[s : s + chunk] = 1.0 - (total - self_sim) / (k * (k - 1))
    return out


def self_information(interactions_per_item: np.ndarray, n_users: int) -> np.ndarray:
    """Item self-information −log2 p(i), p(i) = (|{u : i ∈ H_u}| + 1) / (|U| + 1)  (Zhou et al. 2010).

    The add-one smoothing gives unseen items the largest finite value, log2(|U| + 1) bits.
    """
    return -np.log2((np.asarray(interactions_per_item, float) + 1.0) / (n_users + 1.0))


def novelty(rec: np.ndarray, self_info: np.ndarray) -> np.ndarray:
    """Nov(R) = (1/k) Σ_{i∈R} −log2 p(i): mean self-information of the slate."""
    return self_info[rec].mean(axis=1)


def calibration_kl(
    rec_categories: np.ndarray, p_rows: np.ndarray, p_user: np.ndarray, alpha: float = 0.01
) -> np.ndarray:
    """Steck (RecSys 2018) miscalibration C_KL(p, q) = Σ_g p(g|u) log2(p(g|u) / q̃(g|u)), q̃ = (1−α)q + αp.

    ``p_user`` is ``(n_users, C)`` history distributions, ``p_rows`` the user row of each request, and
    q(g|u) the share of the slate's k slots in category g (uniform slot weights). Only the slate's
    categories have q > 0; every other category contributes p·log2(1/α), so the sum is taken sparsely:
    C_KL = log2(1/α)(1 − Σ_{g∈S} p_g) + Σ_{g∈S} p_g log2(p_g / ((1−α)q_g + αp_g)), S = slate categories.
    """
    k = rec_categories.shape[1]
    srt = np.sort(rec_categories, axis=1)
    first = np.ones_like(srt, dtype=bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    # q_g of each first occurrence: run length of the category in the sorted row
    counts = (srt[:, :, None] == srt[:, None, :]).sum(axis=2)
    q = counts / k
    p = p_user[p_rows[:, None], srt]
    qt = (1.0 - alpha) * q + alpha * p
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(first & (p > 0), p * np.log2(p / qt), 0.0)
    covered = np.where(first, p, 0.0).sum(axis=1)
    return np.log2(1.0 / alpha) * np.clip(1.0 - covered, 0.0, None) + terms.sum(axis=1)


def freshness(age_days: np.ndarray, tau_days: float) -> np.ndarray:
    """Exposure-weighted freshness F(R) = Σ_k w_k exp(−age_k/τ) / Σ_k w_k, w_k = 1/log2(k+1).

    Unpublished items (age inf) count as 0; negative ages are treated as 0 days.
    """
    w = discounts(age_days.shape[1])
    fresh = np.exp(-np.clip(age_days, 0.0, np.inf) / tau_days)
    return (fresh * w).sum(axis=1) / w.sum()


def out_of_stock_share(in_stock_at_slot: np.ndarray) -> np.ndarray:
    """Share of the slate's slots whose item was out of stock at serving time."""
    return 1.0 - np.asarray(in_stock_at_slot, dtype=float).mean(axis=1)


def catalog_coverage(rec: np.ndarray, n_items: int) -> float:
    """Catalogue coverage |∪_u R_u| / |I| over all re-ranked slates."""
    return float(np.unique(rec).size / n_items) if n_items else float("nan")


def exposure_gini(rec: np.ndarray, n_items: int) -> float:
    """Gini of item exposures, G = Σ_j (2j − n − 1) e_(j) / (n Σ_j e_(j)), exposures sorted ascending."""
    e = np.sort(np.bincount(rec.ravel(), minlength=n_items).astype(float))
    n = e.size
    if n == 0 or e.sum() == 0:
        return float("nan")
    j = np.arange(1, n + 1)
    return float(((2 * j - n - 1) * e).sum() / (n * e.sum()))
