"""Reading served logs: one or many ServedBatch objects, flattened, sliced and re-ranked in request chunks.

A held-out log may arrive as one :class:`~stagegate.world.schema.ServedBatch` or as a sequence of them (one
per simulated serving time, each with its own stock snapshot and item ages). Everything here works on the
concatenation in order, row ``i`` being the ``i``-th request over all batches.

Per-item serving state (``in_stock``, ``item_age_days``) is ``(n_items,)`` for a whole batch; a
``(n_requests, n_items)`` array (one snapshot per request) is accepted too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stagegate.models.base import Ranker
from stagegate.ranking import top_k
from stagegate.world.schema import RequestContext, ServedBatch

LogLike = ServedBatch | Sequence[ServedBatch]

#: Default number of score cells (requests x items) per ranking chunk: about 32 MB of float64.
CHUNK_CELLS = 4_000_000


def as_batches(log: LogLike) -> list[ServedBatch]:
    """The log as a non-empty list of batches; TypeError/ValueError name what is wrong."""
    batches = [log] if isinstance(log, ServedBatch) else list(log)
    if not batches:
        raise ValueError("empty log: no ServedBatch given")
    for i, b in enumerate(batches):
        if not isinstance(b, ServedBatch):
            raise TypeError(f"log entry {i} is {type(b).__name__}, expected ServedBatch")
    return batches


def concat(batches: Sequence[ServedBatch], get: Callable[[ServedBatch], np.ndarray]) -> np.ndarray:
    """``np.concatenate`` of ``get(batch)`` over the batches (row order preserved)."""
    parts = [np.asarray(get(b)) for b in batches]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def n_items_of(batches: Sequence[ServedBatch]) -> int:
    """Catalogue size as seen by the serving contexts (last axis of ``in_stock``)."""
    sizes = {np.asarray(b.context.in_stock).shape[-1] for b in batches}
    if len(sizes) != 1:
        raise ValueError(f"batches disagree on the catalogue size (in_stock widths {sorted(sizes)})")
    return sizes.pop()


def slice_context(ctx: RequestContext, rows: slice) -> RequestContext:
    """The requests ``rows`` of ``ctx``; per-item snapshots are shared unless they are per request (2-D)."""

    def per_item(a: np.ndarray) -> np.ndarray:
        return a[rows] if np.ndim(a) == 2 else a

    return RequestContext(
        request_id=ctx.request_id[rows],
        t=ctx.t[rows],
        user_id=ctx.user_id[rows],
        hour=ctx.hour[rows],
        device=ctx.device[rows],
        user_segment=ctx.user_segment[rows],
        recent_items=ctx.recent_items[rows],
        in_stock=per_item(ctx.in_stock),
        item_age_days=per_item(ctx.item_age_days),
    )


def iter_chunks(batches: Sequence[ServedBatch], chunk_rows: int) -> Iterator[tuple[int, RequestContext]]:
    """Yield ``(global_row_offset, sub_context)`` over all batches, at most ``chunk_rows`` requests each."""
    offset = 0
    for b in batches:
        n = b.context.n
        for start in range(0, n, chunk_rows):
            yield offset + start, slice_context(b.context, slice(start, min(start + chunk_rows, n)))
        offset += n


def serving_state(batches: Sequence[ServedBatch], items: np.ndarray, field: str) -> np.ndarray:
    """Per-slot serving-time item state: ``ctx.<field>[items]`` row by row, shape ``items.shape``.

    ``field`` is ``"in_stock"`` or ``"item_age_days"``; each request reads its own batch's snapshot.
    """
    out = np.empty(items.shape, dtype=np.asarray(getattr(batches[0].context, field)).dtype)
    offset = 0
    for b in batches:
        n = b.context.n
        state = np.asarray(getattr(b.context, field))
        block = items[offset : offset + n]
        if state.ndim == 1:
            out[offset : offset + n] = state[block]
        else:
            out[offset : offset + n] = np.take_along_axis(state, block, axis=1)
        offset += n
    return out


def rerank(
    ranker: Ranker,
    batches: Sequence[ServedBatch],
    k: int,
    *,
    source: Literal["recommend", "scores"] = "recommend",
    chunk_rows: int | None = None,
) -> np.ndarray:
    """Re-rank every logged request: ``(n_requests, k)`` int64 item ids, best first.

    ``source="recommend"`` uses the ranker's own slate (its business rules included); ``"scores"`` takes
    the top-k of ``scores(ctx)`` over the full catalogue (:func:`stagegate.ranking.top_k`).
    Requests are ranked in chunks of ``chunk_rows`` (default: about ``CHUNK_CELLS`` score cells).
    Raises ValueError if the ranker returns a wrong shape, unknown ids or a slate with duplicates.
    """
    n_items = n_items_of(batches)
    if not 1 <= k <= n_items:
        raise ValueError(f"k={k} must be between 1 and the catalogue size {n_items}")
    total = sum(b.n for b in batches)
    rows = chunk_rows or max(1, CHUNK_CELLS // n_items)
    out = np.empty((total, k), dtype=np.int64)
    for offset, ctx in iter_chunks(batches, rows):
        if source == "recommend":
            slate = np.asarray(ranker.recommend(ctx, k))
        elif source == "scores":
            s = np.asarray(ranker.scores(ctx), dtype=float)
            if s.shape != (ctx.n, n_items):
                raise ValueError(
                    f"{_name(ranker)}.scores returned shape {s.shape}, expected {(ctx.n, n_items)}"
                )
            slate = top_k(s, k)  # ties by lower item id, the same order on every CPU
        else:
            raise ValueError(f"unknown ranking source {source!r} (use 'recommend' or 'scores')")
        if slate.shape != (ctx.n, k):
            raise ValueError(f"{_name(ranker)} returned slates of shape {slate.shape}, expected {(ctx.n, k)}")
        out[offset : offset + ctx.n] = slate
    check_slates(out, n_items, who=_name(ranker))
    return out


def check_slates(slates: np.ndarray, n_items: int, who: str = "slates") -> None:
    """Raise ValueError unless every id is in ``[0, n_items)`` and no slate repeats an item."""
    if slates.size == 0:
        return
    if slates.min() < 0 or slates.max() >= n_items:
        raise ValueError(f"{who}: item ids outside [0, {n_items}) (min {slates.min()}, max {slates.max()})")
    srt = np.sort(slates, axis=1)
    dup_rows = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
    if dup_rows.size:
        raise ValueError(f"{who}: {dup_rows.size} slates repeat an item (first at request row {dup_rows[0]})")


def _name(ranker: object) -> str:
    return str(getattr(ranker, "name", type(ranker).__name__))


@dataclass(frozen=True)
class UserIndex:
    """Requests grouped by user: ``user_ids[inverse[i]]`` is request ``i``'s user (users sorted by id)."""

    user_ids: np.ndarray
    inverse: np.ndarray
    n_requests: np.ndarray  # requests per user

    @classmethod
    def of(cls, user_id: np.ndarray) -> UserIndex:
        users, inverse = np.unique(np.asarray(user_id), return_inverse=True)
        return cls(users, inverse.ravel(), np.bincount(inverse.ravel(), minlength=len(users)))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def sum(self, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Per-user sum of request-level ``values`` (over requests where ``mask``)."""
        w = np.asarray(values, dtype=float) if mask is None else np.where(mask, values, 0.0)
        return np.bincount(self.inverse, weights=w, minlength=self.n_users)

    def count(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.inverse, weights=np.asarray(mask, dtype=float), minlength=self.n_users)

    def mean(self, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Per-user mean of request-level ``values`` (NaN for a user with no request in ``mask``)."""
        n = self.n_requests.astype(float) if mask is None else self.count(mask)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sum(values, mask) / n

    def mode(self, codes: np.ndarray, n_codes: int) -> np.ndarray:
        """Per-user most frequent code in ``0..n_codes-1`` (ties: the lowest code; -1 if none valid)."""
        codes = np.asarray(codes, dtype=np.int64)
        ok = (codes >= 0) & (codes < n_codes)
        counts = np.bincount(
            self.inverse[ok] * n_codes + codes[ok], minlength=self.n_users * n_codes
        ).reshape(self.n_users, n_codes)
        return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)
