"""Shared machinery of the model families: masks, top-k, chunking and a base class with the Ranker methods.

Every family computes a dense (n_requests, n_items) score matrix for a batch of requests; slates are the
top-k of it after masking items that cannot be served (not yet published). Batches are cut into chunks so
that a score matrix never exceeds a few tens of megabytes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stagegate.logs import RequestContext
from stagegate.ranking import top_k

CHUNK_ROWS = 2048  # (2048, n_items) float64 matrices: 8 MB at 500 items, 32 MB at 2,000


def servable(ctx: RequestContext, in_stock_only: bool = False) -> np.ndarray:
    """Bool (n_items,): items that may be shown now (published; in stock if asked)."""
    ok = np.isfinite(ctx.item_age_days)
    return ok & ctx.in_stock if in_stock_only else ok


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, k) int32 indices of the k best scores per row, best first (ties broken by lower item id).

    A thin wrapper of :func:`simulator.world.ranking.top_k`, the one deterministic ranking helper.
    """
    return top_k(scores, k).astype(np.int32)


def standardise_rows(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-request z-scores over the (masked) items, so that scores of different models can be added."""
    if mask is None:
        mu, sd = scores.mean(axis=1, keepdims=True), scores.std(axis=1, keepdims=True)
    else:
        sub = scores[:, mask]
        mu, sd = sub.mean(axis=1, keepdims=True), sub.std(axis=1, keepdims=True)
    return (scores - mu) / np.where(sd > 1e-12, sd, 1.0)


def chunked(
    ctx: RequestContext, fn: Callable[[RequestContext], np.ndarray], rows: int = CHUNK_ROWS
) -> np.ndarray:
    """Apply ``fn`` to row chunks of ``ctx`` and stack the results."""
    if ctx.n <= rows:
        return fn(ctx)
    from stagegate.log_rows import take_context

    parts = [fn(take_context(ctx, np.arange(lo, min(ctx.n, lo + rows)))) for lo in range(0, ctx.n, rows)]
    return np.concatenate(parts, axis=0)


class BaseRanker:
    """Implements ``recommend`` and ``recommend_with_scores`` from ``_scores``, which families override.

    Unpublished items get −inf before the top-k; subclasses with business rules override ``_rank``.
    """

    family: str = "base"
    latency_ms_median: float = 20.0

    def __init__(self, name: str, n_items: int) -> None:
        self.name = name
        self.n_items = n_items

    def _scores(self, ctx: RequestContext) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, ctx: RequestContext) -> np.ndarray:
        """(n, n_items) scores, higher is better, before business rules; −inf for unservable items."""
        return chunked(ctx, self._masked_scores)

    def _masked_scores(self, ctx: RequestContext) -> np.ndarray:
        s = np.asarray(self._scores(ctx), dtype=float)
        return np.where(servable(ctx)[None, :], s, -np.inf)

    def _rank(self, ctx: RequestContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._masked_scores(ctx)
        items = topk(s, k)
        return items, np.take_along_axis(s, items, axis=1)

    def recommend_with_scores(self, ctx: RequestContext, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) slate and the score of each slate item (used by the world to serve Plackett–Luce)."""
        if ctx.n <= CHUNK_ROWS:
            return self._rank(ctx, k)
        from stagegate.log_rows import take_context

        parts = [
            self._rank(take_context(ctx, np.arange(lo, min(ctx.n, lo + CHUNK_ROWS))), k)
            for lo in range(0, ctx.n, CHUNK_ROWS)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        """(n, k) int32 item ids, best first."""
        return self.recommend_with_scores(ctx, k)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
