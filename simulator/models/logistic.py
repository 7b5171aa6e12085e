"""A pointwise logistic model on public features of (request, item), trained on logged impressions.

Features: item saliency, log relative price, freshness, log popularity in the training window, in-stock,
the share of the user's recent items in the item's category, the public-embedding similarity to the recent
items, and category × daypart and category × device effects. Position × device dummies absorb the
examination bias during training and are dropped at inference ("position as a feature", a standard
de-biasing trick; cf. the PBM of reference §2.2 and YouTube's shallow tower, Zhao et al. RecSys 2019).
Nothing hidden is used: whether saliency helps is learnt from the labels, so a click-trained model learns
to like bait and a purchase-trained one learns to avoid it.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from simulator.models.common import BaseRanker
from simulator.models.interactions import Label, item_counts, label_matrix, positives
from simulator.world.catalog import public_embeddings
from simulator.world.rng import stream_key, uniform
from stagegate.logs import DAYPARTS, DEVICES, RequestContext, ServedBatch

DENSE = ("saliency", "log_price", "fresh", "log_pop", "in_stock", "cat_share", "emb_sim")
_MAX_NEWTON_STEPS = 50  # a dozen suffice; the cap only guards against a pathological input


class LogisticKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    l2: float = Field(1.0, ge=0, description="L2 penalty on standardised coefficients")
    fresh_tau_days: float = Field(14.0, gt=0)
    max_rows: int = Field(
        100_000, ge=1000, description="negatives are down-sampled (and re-weighted) above this"
    )
    context: bool = Field(True, description="category × daypart and category × device effects")
    exclude: list[str] = Field(default_factory=list, description=f"dense features to leave out, from {DENSE}")
    seed: int = 0


class _Features:
    """Feature computation shared by training (per impression) and scoring (per request × item)."""

    def __init__(self, catalog: pd.DataFrame, log_pop: np.ndarray, knobs: LogisticKnobs) -> None:
        cat = catalog.sort_values("item_id")
        self.category = cat["category"].to_numpy(dtype=np.int64)
        self.n_cat = int(self.category.max()) + 1
        self.saliency = cat["saliency"].to_numpy(dtype=float)
        price = cat["price"].to_numpy(dtype=float)
        self.log_price = np.log(price / np.median(price))
        emb = public_embeddings(cat)
        self.emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.log_pop = log_pop
        self.knobs = knobs

    def recent_profiles(self, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per request: category shares (n, C) and the mean normalised embedding (n, d) of recent items."""
        n = recent.shape[0]
        valid = recent >= 0
        n_valid = np.maximum(valid.sum(axis=1, keepdims=True), 1)
        safe = np.where(valid, recent, 0)
        flat = (np.arange(n)[:, None] * self.n_cat + self.category[safe])[valid]
        shares = np.bincount(flat, minlength=n * self.n_cat).reshape(n, self.n_cat).astype(float)
        mean_emb = np.einsum("nh,nhd->nd", valid.astype(float), self.emb[safe]) / n_valid
        return shares / n_valid, mean_emb

    def dense(
        self,
        items: np.ndarray | None,
        ctx: RequestContext,
        in_stock: np.ndarray,
        age: np.ndarray,
        rows: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Dense features of items (n, m) for the requests of ctx (in_stock, age: (n, m) or (m,)).

        ``items=None`` means every item for every request; per-item features then stay (1, m) rows that
        broadcast, and the embedding similarity is one matrix product instead of an (n, m, d) tensor.
        ``rows`` maps each row of ``items`` to its request in ctx (training: one row per impression).
        """
        shares, mean_emb = self.recent_profiles(ctx.recent_items)
        if rows is not None:
            shares, mean_emb = shares[rows], mean_emb[rows]
        if items is None:
            idx = np.arange(len(self.category))[None, :]
            cat_share = shares[:, self.category]
            emb_sim = mean_emb @ self.emb.T
        else:
            idx = items
            cat_share = np.take_along_axis(shares, self.category[items], axis=1)
            emb_sim = np.einsum("nd,nmd->nm", mean_emb, self.emb[items])
        age = np.atleast_2d(age)
        return {
            "saliency": self.saliency[idx],
            "log_price": self.log_price[idx],
            "fresh": np.exp(
                -np.where(np.isfinite(age), np.maximum(age, 0.0), np.inf) / self.knobs.fresh_tau_days
            ),
            "log_pop": self.log_pop[idx],
            "in_stock": np.atleast_2d(in_stock).astype(float),
            "cat_share": cat_share,
            "emb_sim": emb_sim,
        }


class PublicLogistic(BaseRanker):
    family = "logistic"
    latency_ms_median = 12.0

    def __init__(
        self,
        name: str,
        features: _Features,
        used: list[str],
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        ctx_coef: np.ndarray,
    ) -> None:
        super().__init__(name, len(features.category))
        self.features = features
        self.used = used
        self.mean, self.scale, self.coef = mean, scale, coef
        self.ctx_coef = ctx_coef  # (n_cat, n_daypart + n_device)

    def _scores(self, ctx: RequestContext) -> np.ndarray:
        n, m = ctx.n, self.n_items
        dense = self.features.dense(None, ctx, ctx.in_stock, ctx.item_age_days)
        s = np.zeros((n, m))
        for j, name in enumerate(self.used):
            s += self.coef[j] * (dense[name] - self.mean[j]) / self.scale[j]
        if self.ctx_coef.size:
            cat = self.features.category
            daypart = (ctx.hour.astype(int) // 6)[:, None]
            device = ctx.device.astype(int)[:, None]
            s += self.ctx_coef[cat[None, :], daypart] + self.ctx_coef[cat[None, :], len(DAYPARTS) + device]
        return s


def _fit_logreg(
    dense: np.ndarray, groups: list[tuple[np.ndarray, int, float]], y: np.ndarray, w: np.ndarray, l2: float
) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Weighted L2-penalised logistic regression by Newton's method, with dense features and one-hot groups.

    Minimises Σ_i w_i [log(1 + e^{z_i}) − y_i z_i] + ½ Σ_j λ_j β_j², z = Xβ, where X holds the dense columns,
    one indicator column per level of each group (index per row, number of levels, λ of the group) and an
    unpenalised intercept. Each step solves (XᵀDX + Λ) s = ∇ with D = diag(w p (1 − p)) (iteratively
    re-weighted least squares; Hastie, Tibshirani & Friedman, ESL §4.4.1), X sparse, so a step costs
    O(rows × nonzeros per row²) plus a solve of the ~100 parameters, with step halving if the loss rises.

    Why Newton and not L-BFGS: the objective is strictly convex, so it has one optimum, and Newton reaches it
    to rounding error in a dozen steps (quadratic convergence). L-BFGS stops early along a path that the
    last bits of exp/log1p steer, and those bits differ between instruction sets (AVX2, AVX-512) and with
    the row order: the stopped-early coefficients moved scores by up to 0.06 between two machines and the
    slates with them; at the optimum they move by ~1e-9. Everything is float64 for the same reason.
    Returns (dense coefficients, one coefficient vector per group, intercept).
    """
    from scipy import sparse  # lazy: scipy is slow to import

    n, d = dense.shape
    sizes = [g[1] for g in groups]
    bounds = np.cumsum([d, *sizes])
    rows = np.arange(n)
    blocks = [sparse.csr_matrix(dense)]
    blocks += [sparse.csr_matrix((np.ones(n), (rows, idx)), shape=(n, size)) for idx, size, _ in groups]
    blocks.append(sparse.csr_matrix(np.ones((n, 1))))
    x = sparse.hstack(blocks, format="csr")
    penalty = np.concatenate([np.full(d, float(l2)), *[np.full(size, gl2) for _, size, gl2 in groups], [0.0]])

    def objective(beta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ beta
        e = np.exp(-np.abs(z))
        softplus = np.maximum(z, 0.0) + np.log1p(e)  # log(1 + e^z), stable
        prob = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return float(np.dot(w, softplus - y * z) + 0.5 * np.dot(penalty, beta**2)), prob

    beta = np.zeros(x.shape[1])
    value, prob = objective(beta)
    tol = 1e-13 * max(value, 1.0)
    for _ in range(_MAX_NEWTON_STEPS):
        grad = x.T @ (w * (prob - y)) + penalty * beta
        hess = (x.T @ x.multiply((w * prob * (1.0 - prob))[:, None])).toarray() + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        decrement = float(grad @ step)  # ≈ 2 × (loss − optimum): the Newton decrement λ²
        t = 1.0
        while True:
            new_value, new_prob = objective(beta - t * step)
            if new_value <= value or t < 1e-8:
                break
            t *= 0.5
        beta, value, prob = beta - t * step, new_value, new_prob
        if decrement <= tol:  # the step just taken started within rounding of the optimum
            break
    return beta[:d], [beta[lo:hi] for lo, hi in pairwise(bounds)], float(beta[-1])


def fit_logistic(
    logs: ServedBatch, catalog: pd.DataFrame, label: Label, knobs: LogisticKnobs, name: str
) -> PublicLogistic:
    n_items = len(catalog)
    log_pop = np.log1p(item_counts(positives(logs, label), n_items))
    feats = _Features(catalog, log_pop, knobs)
    used = [f for f in DENSE if f not in knobs.exclude]
    n, k = logs.items.shape

    # down-sample negatives (keep every positive) and re-weight them, so the fit stays unbiased; whether an
    # impression is kept is a hash of (seed, request id, slot), so the sample does not depend on row order
    y_flat = label_matrix(logs, label).ravel()
    n_pos = int(y_flat.sum())
    keep_prob = 1.0
    if y_flat.size > knobs.max_rows:
        keep_prob = max(1e-3, (knobs.max_rows - n_pos) / max(1, y_flat.size - n_pos))
    draw = uniform(
        stream_key(knobs.seed, "logistic:negatives"), logs.context.request_id[:, None], np.arange(k)
    )
    keep = y_flat | (draw.ravel() < keep_prob)
    weight = np.where(y_flat, 1.0, 1.0 / keep_prob)[keep]
    y = y_flat[keep].astype(float)
    req = (np.arange(n * k) // k)[keep]
    slot = (np.arange(n * k) % k)[keep]
    items = logs.items[req, slot][:, None]
    t_req, hour, device = logs.context.t[req], logs.context.hour[req], logs.context.device[req]

    # per-impression item age and stock come from the log (stock_at_serve), not from today's snapshot
    publish = catalog.sort_values("item_id")["publish_day"].to_numpy(dtype=float)
    age = t_req[:, None] - publish[items]
    if logs.stock_at_serve is not None:
        in_stock = logs.stock_at_serve[req, slot][:, None] > 0
    else:
        in_stock = np.ones_like(items, dtype=bool)
    dense = feats.dense(items, logs.context, in_stock, age, rows=req)
    mat = np.stack([dense[f][:, 0] for f in used], axis=1) if used else np.zeros((len(y), 0))
    mean, scale = mat.mean(axis=0), np.maximum(mat.std(axis=0), 1e-9)
    mat = (mat - mean) / scale

    n_cat = feats.n_cat
    item_cat = feats.category[items[:, 0]]
    groups: list[tuple[np.ndarray, int, float]] = []
    if knobs.context:
        daypart = hour.astype(np.int64) // 6
        device = device.astype(np.int64)
        groups.append((item_cat * len(DAYPARTS) + daypart, n_cat * len(DAYPARTS), knobs.l2))
        groups.append((item_cat * len(DEVICES) + device, n_cat * len(DEVICES), knobs.l2))
    # position × device: the examination curve, barely penalised, dropped at inference
    groups.append((logs.context.device[req].astype(np.int64) * k + slot, len(DEVICES) * k, 1e-6))
    coef, gcoef, _ = _fit_logreg(mat, groups, y, weight, knobs.l2)
    if knobs.context:
        ctx_coef = np.concatenate(
            [gcoef[0].reshape(n_cat, len(DAYPARTS)), gcoef[1].reshape(n_cat, len(DEVICES))], axis=1
        )
    else:
        ctx_coef = np.zeros((0, 0))
    return PublicLogistic(name, feats, used, mean, scale, coef, ctx_coef)
