"""Business rules and diversity on top of a base model: in-stock filter, freshness boost, feature boosts,
per-category caps and MMR diversity.

Rules after scoring are how production recommenders meet constraints (reference §4 "business rules").
MMR (Carbonell & Goldstein, SIGIR 1998) picks next argmax λ·rel − (1 − λ)·max sim(i, chosen) on the public
embeddings; the category cap allows at most ``category_cap`` items of one category in each block of
``cap_block`` positions. Both are greedy over a candidate pool of the best items, vectorised over requests.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simulator.models.common import BaseRanker, servable, standardise_rows, topk
from stagegate.logs import RequestContext


class RerankerKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_stock_filter: bool = True
    freshness_boost: float = Field(0.0, ge=0, description="added × exp(−age/τ) to the standardised score")
    freshness_tau_days: float = Field(14.0, gt=0)
    saliency_weight: float = Field(0.0, description="added × standardised public saliency")
    price_weight: float = Field(0.0, description="added × standardised log price (revenue awareness)")
    category_cap: int | None = Field(
        None, ge=1, description="at most this many items of one category in each block of cap_block positions"
    )
    cap_block: int = Field(10, ge=1)
    mmr_lambda: float | None = Field(
        None, gt=0, le=1, description="relevance weight of MMR (1 = no diversity)"
    )
    pool: int = Field(60, ge=10, description="candidates considered by the greedy diversity step")


class Reranker(BaseRanker):
    family = "reranker"

    def __init__(
        self,
        name: str,
        base: BaseRanker,
        knobs: RerankerKnobs,
        category: np.ndarray,
        embeddings: np.ndarray,
        saliency: np.ndarray,
        log_price: np.ndarray,
    ) -> None:
        super().__init__(name, base.n_items)
        self.base = base
        self.knobs = knobs
        self.category = category
        self.emb = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        self.z_saliency = (saliency - saliency.mean()) / max(saliency.std(), 1e-12)
        self.z_log_price = (log_price - log_price.mean()) / max(log_price.std(), 1e-12)
        self.latency_ms_median = base.latency_ms_median + (
            4.0 if knobs.mmr_lambda or knobs.category_cap else 1.0
        )

    def _allowed(self, ctx: RequestContext) -> np.ndarray:
        return servable(ctx, in_stock_only=self.knobs.in_stock_filter)

    def _scores(self, ctx: RequestContext) -> np.ndarray:
        kn = self.knobs
        mask = servable(ctx)
        s = standardise_rows(np.where(mask[None, :], self.base._scores(ctx), 0.0), mask)
        if kn.freshness_boost:
            age = np.where(np.isfinite(ctx.item_age_days), np.maximum(ctx.item_age_days, 0.0), np.inf)
            s = s + kn.freshness_boost * np.exp(-age / kn.freshness_tau_days)[None, :]
        if kn.saliency_weight:
            s = s + kn.saliency_weight * self.z_saliency[None, :]
        if kn.price_weight:
            s = s + kn.price_weight * self.z_log_price[None, :]
        return np.where(self._allowed(ctx)[None, :], s, -np.inf)

    def _masked_scores(self, ctx: RequestContext) -> np.ndarray:
        return self._scores(ctx)

    def _rank(self, ctx: RequestContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._scores(ctx)
        kn = self.knobs
        if kn.mmr_lambda is not None:
            items = self._mmr(s, k)
        elif kn.category_cap is not None:
            items = self._capped(s, k)
        else:
            items = topk(s, k)
        return items, np.take_along_axis(s, items, axis=1)

    def _pool(self, s: np.ndarray, k: int) -> np.ndarray:
        return topk(s, min(self.n_items, max(self.knobs.pool, 4 * k)))

    def _capped(self, s: np.ndarray, k: int) -> np.ndarray:
        """Category cap without a loop: an item's tier is (its rank within its category) // cap, and slates
        take items tier by tier in score order, so every block of ``cap_block`` positions holds at most
        ``cap`` items of a category whenever the pool has enough categories (the greedy rule, vectorised)."""
        cand = self._pool(s, k)
        p = cand.shape[1]
        cat = self.category[cand]
        # rank of each candidate within its category, in score order: a stable sort by category
        order = np.argsort(cat, axis=1, kind="stable")
        sorted_cat = np.take_along_axis(cat, order, axis=1)
        pos = np.arange(p)[None, :]
        starts = np.where(np.diff(sorted_cat, axis=1, prepend=-1) != 0, pos, 0)
        rank_sorted = pos - np.maximum.accumulate(starts, axis=1)
        rank = np.empty_like(rank_sorted)
        np.put_along_axis(rank, order, rank_sorted, axis=1)
        tier = rank // self.knobs.category_cap
        dead = ~np.isfinite(np.take_along_axis(s, cand, axis=1))
        key = np.where(dead, p + 1, tier) * (p + 2) + pos  # tier first, then score order; dead items last
        pick = np.argsort(key, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(cand, pick, axis=1).astype(np.int32)

    def _mmr(self, s: np.ndarray, k: int) -> np.ndarray:
        """Greedy MMR over each request's candidate pool, with the category cap if set."""
        kn = self.knobs
        lam = float(kn.mmr_lambda)  # type: ignore[arg-type]
        cand = self._pool(s, k)
        n, p = cand.shape
        rel = np.take_along_axis(s, cand, axis=1)
        value_base = np.where(np.isfinite(rel), lam * rel, -np.inf)
        cat = self.category[cand]
        emb = self.emb[cand]  # (n, p, d)
        rows = np.arange(n)
        chosen = np.zeros((n, k), dtype=np.int64)
        penalty = np.zeros((n, p))  # (1 − λ) · max similarity to the chosen items
        blocked = np.zeros((n, p), dtype=bool)
        cat_count = np.zeros((n, int(self.category.max()) + 1), dtype=np.int64)
        for step in range(k):
            if kn.category_cap is not None and step % kn.cap_block == 0:
                cat_count[:] = 0  # the cap applies per block of positions
            value = np.where(blocked, -np.inf, value_base - penalty)
            if kn.category_cap is not None:
                capped = np.take_along_axis(cat_count, cat, axis=1) >= kn.category_cap
                capped_value = np.where(capped, -np.inf, value)
                # if every candidate is capped, relax the cap rather than show nothing
                ok = np.isfinite(capped_value).any(axis=1, keepdims=True)
                value = np.where(ok, capped_value, value)
            pick = np.argmax(value, axis=1)
            # a row with nothing finite left takes its best untaken candidate (the slate must be full)
            stuck = ~np.isfinite(value[rows, pick])
            if stuck.any():
                pick[stuck] = np.argmax(np.where(blocked[stuck], -np.inf, -np.arange(p)[None, :]), axis=1)
            chosen[:, step] = pick
            blocked[rows, pick] = True
            if kn.category_cap is not None:
                cat_count[rows, cat[rows, pick]] += 1
            sim = np.einsum("npd,nd->np", emb, emb[rows, pick])
            penalty = np.maximum(penalty, (1.0 - lam) * sim)
        return np.take_along_axis(cand, chosen, axis=1).astype(np.int32)
