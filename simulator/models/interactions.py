"""Training data from the public log: user–item interactions and per-impression rows.

Only the public log (ServedBatch) and the public catalogue are read: models never see the world's truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from stagegate.logs import ServedBatch

Label = Literal["click", "purchase"]


def label_matrix(logs: ServedBatch, label: Label) -> np.ndarray:
    """(n, k) bool: the positive label of each shown slot."""
    if label == "click":
        return logs.clicks
    if label == "purchase":
        return logs.purchases
    raise ValueError(f"unknown label {label!r} (expected 'click' or 'purchase')")


@dataclass(frozen=True)
class Interactions:
    """Positive (user, item) events with their time, one row per event."""

    user: np.ndarray  # int64
    item: np.ndarray  # int64
    t: np.ndarray  # float64 days

    @property
    def n(self) -> int:
        return len(self.user)


def positives(logs: ServedBatch, label: Label) -> Interactions:
    """Every labelled (user, item) event of the logs."""
    rows, cols = np.nonzero(label_matrix(logs, label))
    return Interactions(
        user=logs.context.user_id[rows].astype(np.int64),
        item=logs.items[rows, cols].astype(np.int64),
        t=logs.context.t[rows],
    )


def item_counts(
    inter: Interactions, n_items: int, now: float | None = None, half_life_days: float | None = None
) -> np.ndarray:
    """Per-item event counts, optionally exponentially time-decayed toward ``now``."""
    if inter.n == 0:
        return np.zeros(n_items)
    if half_life_days is None:
        w = np.ones(inter.n)
    else:
        ref = inter.t.max() if now is None else now
        w = np.exp2(-(ref - inter.t) / half_life_days)
    return np.bincount(inter.item, weights=w, minlength=n_items)[:n_items]


def user_item_matrix(inter: Interactions, n_users: int, n_items: int) -> np.ndarray:
    """Dense (n_users, n_items) event counts (the demo sizes make dense cheaper than scipy.sparse)."""
    mat = np.zeros((n_users, n_items))
    np.add.at(mat, (inter.user, inter.item), 1.0)
    return mat


def training_window(logs: ServedBatch, days: float | None) -> ServedBatch:
    """The last ``days`` of the logs (all of them if None)."""
    if days is None or logs.n == 0:
        return logs
    from stagegate.log_rows import take

    end = float(logs.context.t.max())
    return take(logs, logs.context.t >= end - days)
