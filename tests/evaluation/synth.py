"""Small synthetic logs, catalogues and rankers for the evaluation tests (no dependency on the world)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stagegate.logs import RequestContext, ServedBatch


class FixedScoreRanker:
    """Scores every request with the same item-score vector (optionally per user segment)."""

    def __init__(self, item_scores: np.ndarray, name: str = "fixed") -> None:
        self.item_scores = np.asarray(item_scores, dtype=float)
        self.name = name

    def scores(self, ctx: RequestContext) -> np.ndarray:
        base = self.item_scores if self.item_scores.ndim == 2 else self.item_scores[None, :]
        if base.shape[0] == 1:
            return np.broadcast_to(base, (ctx.n, base.shape[1])).copy()
        return base[np.asarray(ctx.user_segment, dtype=np.int64)]

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        return np.argsort(-self.scores(ctx), axis=1, kind="stable")[:, :k]


class SlateRanker:
    """Returns a fixed slate for every request, or a per-request slate looked up by request id."""

    def __init__(self, slates: np.ndarray, name: str = "slate") -> None:
        self.slates = np.asarray(slates)
        self.name = name

    def scores(self, ctx: RequestContext) -> np.ndarray:  # pragma: no cover - unused
        raise NotImplementedError

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        if self.slates.ndim == 1:
            return np.broadcast_to(self.slates[:k], (ctx.n, k)).copy()
        return self.slates[np.asarray(ctx.request_id, dtype=np.int64), :k]


def context(
    n: int,
    n_items: int,
    *,
    user_id: np.ndarray | None = None,
    hour: np.ndarray | None = None,
    device: np.ndarray | None = None,
    user_segment: np.ndarray | None = None,
    recent_items: np.ndarray | None = None,
    in_stock: np.ndarray | None = None,
    item_age_days: np.ndarray | None = None,
    first_request_id: int = 0,
) -> RequestContext:
    z8 = np.zeros(n, dtype=np.int8)
    return RequestContext(
        request_id=np.arange(first_request_id, first_request_id + n, dtype=np.int64),
        t=np.linspace(0.0, 1.0, n),
        user_id=np.arange(n, dtype=np.int64) if user_id is None else np.asarray(user_id, np.int64),
        hour=np.full(n, 12, np.int8) if hour is None else np.asarray(hour, np.int8),
        device=z8 if device is None else np.asarray(device, np.int8),
        user_segment=np.ones(n, np.int8) if user_segment is None else np.asarray(user_segment, np.int8),
        recent_items=np.full((n, 3), -1, np.int32) if recent_items is None else np.asarray(recent_items),
        in_stock=np.ones(n_items, bool) if in_stock is None else np.asarray(in_stock, bool),
        item_age_days=np.zeros(n_items) if item_age_days is None else np.asarray(item_age_days, float),
    )


def batch(
    ctx: RequestContext,
    items: np.ndarray,
    *,
    clicks: np.ndarray | None = None,
    purchases: np.ndarray | None = None,
    pscore: np.ndarray | None = None,
    revenue: np.ndarray | None = None,
    arm: np.ndarray | None = None,
) -> ServedBatch:
    items = np.asarray(items, dtype=np.int32)
    n, k = items.shape
    clicks = np.zeros((n, k), bool) if clicks is None else np.asarray(clicks, bool)
    purchases = np.zeros((n, k), bool) if purchases is None else np.asarray(purchases, bool)
    return ServedBatch(
        context=ctx,
        arm=np.zeros(n, np.int8) if arm is None else np.asarray(arm, np.int8),
        items=items,
        pscore=np.ones((n, k)) if pscore is None else np.asarray(pscore, float),
        clicks=clicks,
        purchases=purchases,
        revenue=np.zeros(n) if revenue is None else np.asarray(revenue, float),
        latency_ms=np.full(n, 20.0),
        error=np.zeros(n, bool),
    )


def catalog(
    embeddings: np.ndarray, categories: list | np.ndarray, price: np.ndarray | None = None
) -> pd.DataFrame:
    emb = np.asarray(embeddings, dtype=float)
    df = pd.DataFrame({f"emb_{j}": emb[:, j] for j in range(emb.shape[1])})
    df.insert(0, "item_id", np.arange(len(emb)))
    df["category"] = list(categories)
    df["price"] = np.ones(len(emb)) if price is None else price
    return df


def random_log(
    rng: np.random.Generator, n: int, n_users: int, n_items: int, k: int = 10, ctr: float = 0.05
) -> tuple[ServedBatch, pd.DataFrame]:
    """A random log (uniform slates, random clicks/purchases/stock/ages) and a random catalogue."""
    ctx = context(
        n,
        n_items,
        user_id=rng.integers(0, n_users, n),
        hour=rng.integers(0, 24, n),
        device=rng.integers(0, 2, n),
        user_segment=rng.integers(0, 3, n),
        recent_items=rng.integers(-1, n_items, (n, 5)),
        in_stock=rng.random(n_items) > 0.1,
        item_age_days=rng.exponential(20.0, n_items),
    )
    items = np.argsort(rng.random((n, n_items)), axis=1)[:, :k] if n_items <= 2000 else None
    clicks = rng.random((n, k)) < ctr
    purchases = clicks & (rng.random((n, k)) < 0.1)
    price = rng.lognormal(3.0, 0.5, n_items)
    revenue = (purchases * price[items]).sum(axis=1)
    b = batch(ctx, items, clicks=clicks, purchases=purchases, pscore=np.full((n, k), 0.5), revenue=revenue)
    cat = catalog(rng.normal(size=(n_items, 16)), rng.integers(0, 20, n_items).astype(str), price)
    return b, cat
