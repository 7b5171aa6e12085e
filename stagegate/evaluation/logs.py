"""Reading served logs: one or many ServedBatch objects, flattened, sliced and re-ranked in request chunks.

A held-out log may arrive as one :class:`~stagegate.logs.ServedBatch` or as a sequence of them (one
per simulated serving time, each with its own stock snapshot and item ages). Everything here works on the
concatenation in order, row ``i`` being the ``i``-th request over all batches.

Per-item serving state (``in_stock``, ``item_age_days``) is ``(n_items,)`` for a whole batch; a
``(n_requests, n_items)`` array (one snapshot per request) is accepted too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stagegate.logs import RequestContext, ServedBatch
from stagegate.models.base import Ranker
from stagegate.ranking import top_k

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


# -- logs read from the OfflineData port (Arrow tables in stagegate.ports.IMPRESSIONS_SCHEMA) ---------------

#: Recent items a reconstructed context carries when the log has no ``recent_items`` column.
HISTORY_LEN = 10


def _fixed_width(table: Any, name: str, dtype: Any) -> np.ndarray:
    """A list column whose rows all have the same length as an ``(n, width)`` array; ValueError if ragged."""
    import pyarrow as pa

    column = table.column(name).combine_chunks()
    if isinstance(column, pa.ChunkedArray):  # an empty table
        column = pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)
    n = len(column)
    lengths = np.asarray(column.value_lengths().fill_null(0), dtype=np.int64) if n else np.zeros(0, np.int64)
    width = int(lengths[0]) if n else 0
    if n and (lengths != width).any():
        bad = int(np.flatnonzero(lengths != width)[0])
        raise ValueError(f"column {name!r}: row {bad} has {lengths[bad]} entries, row 0 has {width}")
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=dtype)
    return values.reshape(n, width)


def _padded(table: Any, name: str, width: int | None = None) -> np.ndarray:
    """A ragged list<int> column as ``(n, width)`` int32, -1 padded (width: the longest row)."""
    rows = table.column(name).to_pylist()
    width = width if width is not None else max((len(r or []) for r in rows), default=0)
    out = np.full((len(rows), width), -1, dtype=np.int32)
    for i, row in enumerate(rows):
        row = [v for v in (row or []) if v is not None and v >= 0][:width]
        out[i, : len(row)] = row
    return out


def recent_from_log(
    user_id: np.ndarray, t: np.ndarray, items: np.ndarray, engaged: np.ndarray, h: int = HISTORY_LEN
) -> np.ndarray:
    """Per request, the user's ``h`` most recent clicked or purchased items *before* it, newest first, from
    the log itself (``engaged`` = clicks | purchases per slot); -1 padded. For logs without recent_items."""
    n = len(user_id)
    out = np.full((n, h), -1, dtype=np.int32)
    order = np.lexsort((np.arange(n), t, user_id))  # by user, then time; ties in log order
    last_user, recent = None, []
    for i in order:
        if user_id[i] != last_user:
            last_user, recent = user_id[i], []
        if recent:
            row = recent[-h:][::-1]
            out[i, : len(row)] = row
        clicked = items[i][engaged[i]]
        for item in clicked[::-1]:  # best position first counts as most recent of the request's clicks
            if item in recent:
                recent.remove(item)
        recent.extend(int(x) for x in clicked[::-1])
    return out


def catalogue_state(catalogue: Any, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(publish_day, in_stock, item_age_days)`` of a CATALOGUE_SCHEMA table (or its pandas frame) at time
    ``t``, in item_id order; item ids must be ``0..n_items-1`` (ValueError otherwise)."""
    frame = (
        catalogue.to_pandas()
        if hasattr(catalogue, "to_pandas") and not hasattr(catalogue, "iloc")
        else catalogue
    )
    frame = frame.sort_values("item_id")
    ids = frame["item_id"].to_numpy(dtype=np.int64)
    if not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError("catalogue: item_id must be 0..n_items-1 without gaps (the rankers index by it)")
    publish = frame["publish_day"].to_numpy(dtype=float)
    in_stock = frame["stock"].to_numpy() > 0 if "stock" in frame.columns else np.ones(len(ids), dtype=bool)
    age = np.where(publish <= t, t - publish, np.inf)
    return publish, in_stock & (publish <= t), age


def batch_from_table(table: Any, catalogue: Any) -> ServedBatch:
    """A logged-impressions table (stagegate.ports.IMPRESSIONS_SCHEMA, checked here) as a ServedBatch.

    The context's per-item state is the catalogue's at the log's last request (a log with
    ``in_stock_at_serve`` is split by serving-time snapshot with :func:`holdout_batches`). Without a
    ``recent_items`` column, each request's recent items are rebuilt from the log (:func:`recent_from_log`).
    Slate columns must have one length for every row.
    """
    from stagegate.ports import IMPRESSIONS_SCHEMA, check_table

    check_table(table, IMPRESSIONS_SCHEMA, "impressions")

    def col(name: str, dtype: Any) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(), dtype=dtype)

    def present(name: str) -> bool:
        return name in table.column_names and table.column(name).null_count == 0

    n = table.num_rows
    t = col("t", float)
    items = _fixed_width(table, "items", np.int32)
    clicks = _fixed_width(table, "clicks", bool)
    purchases = _fixed_width(table, "purchases", bool)
    _, in_stock, age = catalogue_state(catalogue, float(t.max()) if n else 0.0)
    user_id = col("user_id", np.int64)
    if present("recent_items"):
        recent = _padded(table, "recent_items")
    else:
        recent = recent_from_log(user_id, t, items, clicks | purchases)
    ctx = RequestContext(
        request_id=col("request_id", np.int64),
        t=t,
        user_id=user_id,
        hour=col("hour", np.int8),
        device=col("device", np.int8),
        user_segment=col("user_segment", np.int8),
        recent_items=recent,
        in_stock=in_stock,
        item_age_days=age,
    )
    optional: dict[str, Any] = {}
    for name, dtype in (("pscore_prefix", float), ("stock_at_serve", np.int64)):
        if present(name):
            optional[name] = _fixed_width(table, name, dtype)
    for name, dtype in (("session_id", np.int64), ("slate_index", np.int16)):
        if present(name):
            optional[name] = col(name, dtype)
    if present("in_stock_at_serve"):
        rows = table.column("in_stock_at_serve").to_pylist()
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            raise ValueError(
                f"column 'in_stock_at_serve': rows have {sorted(widths)} bytes, expected one width"
            )
        optional["in_stock_at_serve"] = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(n, -1)
    return ServedBatch(
        context=ctx,
        arm=col("arm", np.int8),
        items=items,
        pscore=_fixed_width(table, "pscore", float),
        clicks=clicks,
        purchases=purchases,
        revenue=col("revenue", float),
        latency_ms=col("latency_ms", float),
        error=col("error", bool),
        **optional,
    )


def holdout_batches(table: Any, catalogue: Any) -> list[ServedBatch]:
    """The hold-out table as serving-time groups (stagegate.log_rows.serving_batches): each group's
    context carries the stock and item ages when its requests were served."""
    from stagegate.log_rows import serving_batches

    batch = batch_from_table(table, catalogue)
    publish, _, _ = catalogue_state(catalogue, 0.0)
    return serving_batches(batch, publish)
