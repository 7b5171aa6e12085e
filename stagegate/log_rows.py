"""Row operations on the public log: take a subset of requests, concatenate batches, split by time.

A ServedBatch that spans several hours carries the *last* public stock snapshot and item ages in its
context (the per-request stock of shown items is in ``stock_at_serve``).
"""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np

from stagegate.logs import RequestContext, ServedBatch

_SHARED_CTX = ("in_stock", "item_age_days")  # per-catalogue, not per-request


def take_context(ctx: RequestContext, idx: np.ndarray) -> RequestContext:
    """The requests ``idx`` (indices or a bool mask) of a context; catalogue-level arrays are kept."""
    kw = {f.name: getattr(ctx, f.name) for f in fields(ctx)}
    for name, value in kw.items():
        if name not in _SHARED_CTX and isinstance(value, np.ndarray):
            kw[name] = value[idx]
    return RequestContext(**kw)


def take(batch: ServedBatch, idx: np.ndarray) -> ServedBatch:
    """The requests ``idx`` (indices or a bool mask) of a batch."""
    kw: dict[str, object] = {"context": take_context(batch.context, idx)}
    for f in fields(batch):
        if f.name == "context":
            continue
        value = getattr(batch, f.name)
        kw[f.name] = value[idx] if isinstance(value, np.ndarray) else value
    return ServedBatch(**kw)


def concat(batches: list[ServedBatch]) -> ServedBatch:
    """Concatenate batches in order; catalogue-level context arrays come from the last batch.

    An optional field is kept only if every batch has it.
    """
    if not batches:
        raise ValueError("concat needs at least one batch")
    if len(batches) == 1:
        return batches[0]
    last = batches[-1]
    ctx_kw: dict[str, object] = {}
    for f in fields(last.context):
        if f.name in _SHARED_CTX:
            ctx_kw[f.name] = getattr(last.context, f.name)
        else:
            ctx_kw[f.name] = np.concatenate([getattr(b.context, f.name) for b in batches])
    kw: dict[str, object] = {"context": RequestContext(**ctx_kw)}
    for f in fields(last):
        if f.name == "context":
            continue
        parts = [getattr(b, f.name) for b in batches]
        kw[f.name] = None if any(p is None for p in parts) else np.concatenate(parts)
    return ServedBatch(**kw)


def between(batch: ServedBatch, start_day: float, end_day: float) -> ServedBatch:
    """Requests served in [start_day, end_day) of simulated time."""
    t = batch.context.t
    return take(batch, (t >= start_day) & (t < end_day))


def split_by_day(batch: ServedBatch, day: float) -> tuple[ServedBatch, ServedBatch]:
    """Temporal split: requests before ``day`` and from ``day`` on (reference §6.4 offline protocol)."""
    t = batch.context.t
    return take(batch, t < day), take(batch, t >= day)


def serving_batches(batch: ServedBatch, publish_day: np.ndarray) -> list[ServedBatch]:
    """Split a log into sub-batches whose contexts carry the catalogue state *when they were served*.

    A concatenated log keeps only its last stock snapshot in ``context.in_stock``; re-ranking old requests
    against it favours or penalises rankers for stock they could not have known. Requests that shared a
    serving-time in-stock snapshot (``in_stock_at_serve``) are grouped, in order of first appearance; each
    group's context gets that snapshot and item ages at the group's earliest request time (publish days from
    the public catalogue, in item_id order). Without ``in_stock_at_serve`` the batch is returned whole.
    """
    if batch.in_stock_at_serve is None or batch.n == 0:
        return [batch]
    publish_day = np.asarray(publish_day, dtype=float)
    n_items = len(publish_day)
    packed = np.ascontiguousarray(batch.in_stock_at_serve)
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)
    out = []
    for g in np.argsort(first, kind="stable"):
        rows = np.flatnonzero(group == g)
        part = take(batch, rows)
        in_stock = np.unpackbits(packed[rows[0]], count=n_items, bitorder="little").astype(bool)
        t0 = float(part.context.t.min())
        published = in_stock | (publish_day <= t0)
        ctx = replace(
            part.context, in_stock=in_stock, item_age_days=np.where(published, t0 - publish_day, np.inf)
        )
        out.append(replace(part, context=ctx))
    return out


def empty_like(batch: ServedBatch) -> ServedBatch:
    """A batch with the same fields and zero requests."""
    return take(batch, np.zeros(batch.n, dtype=bool))


def with_fields(batch: ServedBatch, **changes: object) -> ServedBatch:
    """A copy of ``batch`` with some fields replaced (dataclasses.replace, re-exported for readability)."""
    return replace(batch, **changes)
