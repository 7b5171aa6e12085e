"""Saving, loading and slicing logged request data (ServedBatch) as compressed .npz files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from stagegate.logs import RequestContext, ServedBatch


def save_batch(batch: ServedBatch, path: str | Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(RequestContext):
        arrays[f"ctx.{f.name}"] = np.asarray(getattr(batch.context, f.name))
    for f in dataclasses.fields(ServedBatch):
        value = getattr(batch, f.name)
        if f.name != "context" and value is not None:
            arrays[f.name] = np.asarray(value)
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_batch(path: str | Path) -> ServedBatch:
    with np.load(path, allow_pickle=False) as data:
        ctx = RequestContext(**{f.name: data[f"ctx.{f.name}"] for f in dataclasses.fields(RequestContext)})
        rest = {
            f.name: data[f.name]
            for f in dataclasses.fields(ServedBatch)
            if f.name != "context" and f.name in data
        }
    return ServedBatch(context=ctx, **rest)
