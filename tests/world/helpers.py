"""Tiny rankers for world tests: they use only the public context, like any model must."""

from __future__ import annotations

import numpy as np

from simulator.world import LiveWorld, WorldConfig, small_config
from simulator.world.rng import stream_key, uniform
from stagegate.logs import RequestContext


def tiny_config(seed: int = 3, **overrides: object) -> WorldConfig:
    """A world small enough for unit tests: a simulated day in a few tens of milliseconds."""
    base: dict[str, object] = {"n_users": 500, "n_items": 120, "requests_per_hour": 30.0}
    base.update(overrides)
    return small_config(seed=seed, **base)


class FixedRanker:
    """Scores every item by a fixed vector (same for every request); published and in-stock items only."""

    def __init__(self, item_scores: np.ndarray, name: str = "fixed", latency_ms_median: float | None = None):
        self.name = name
        self.item_scores = np.asarray(item_scores, dtype=float)
        if latency_ms_median is not None:
            self.latency_ms_median = latency_ms_median

    def scores(self, ctx: RequestContext) -> np.ndarray:
        ok = np.isfinite(ctx.item_age_days) & ctx.in_stock
        return np.where(ok, self.item_scores, -np.inf)[None, :].repeat(ctx.n, axis=0)

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        s = self.scores(ctx)
        return np.argsort(-s, axis=1, kind="stable")[:, :k].astype(np.int32)


class RandomRanker(FixedRanker):
    """Independent random scores per (request, item), reproducible from the request ids."""

    def __init__(self, n_items: int, seed: int = 0, name: str = "random", in_stock_only: bool = True) -> None:
        super().__init__(np.zeros(n_items), name=name)
        self.key = stream_key(seed, "random-ranker")
        self.in_stock_only = in_stock_only

    def scores(self, ctx: RequestContext) -> np.ndarray:
        ok = np.isfinite(ctx.item_age_days) & (ctx.in_stock | (not self.in_stock_only))
        u = uniform(self.key, ctx.request_id[:, None], np.arange(len(self.item_scores))[None, :])
        return np.where(ok[None, :], u, -np.inf)


def random_ranker(
    world: LiveWorld, seed: int = 0, name: str = "random", in_stock_only: bool = True
) -> RandomRanker:
    return RandomRanker(world.n_items, seed, name, in_stock_only)


class BrokenRanker(FixedRanker):
    """Raises on every call: the world must log errors and fall back to the champion."""

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        raise RuntimeError("model server down")


class BadIdsRanker(FixedRanker):
    """Returns unknown item ids for every other request."""

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        out = super().recommend(ctx, k)
        out[::2, 0] = 10**6
        return out
