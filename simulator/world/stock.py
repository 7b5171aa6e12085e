"""Finite stock: purchases deplete it, a weekly restock refills it (reference §6.2).

Stock is what makes a 5 % canary and a 100 % rollout different worlds (marketplace interference): a
candidate that concentrates demand sells items out only when it serves everyone.
"""

from __future__ import annotations

import numpy as np


def allocate(wants: np.ndarray, items: np.ndarray, stock: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Which purchase intentions get a unit: first come (by ``order`` over requests), first served.

    wants, items: (n, k); stock: (n_items,) units on hand; order: (n,) a key that sorts requests by time.
    Returns the (n, k) bool mask of purchases that succeed. Does not modify ``stock``.
    """
    rows, cols = np.nonzero(wants)
    if rows.size == 0:
        return np.zeros_like(wants)
    item = items[rows, cols]
    seq = np.lexsort((cols, order[rows], item))  # by item, then request time, then slot
    item_sorted = item[seq]
    # rank of each intention within its item: position minus the first position of that item
    first = np.searchsorted(item_sorted, item_sorted, side="left")
    rank = np.arange(item_sorted.size) - first
    ok_sorted = rank < stock[item_sorted]
    ok = np.zeros(rows.size, dtype=bool)
    ok[seq] = ok_sorted
    out = np.zeros_like(wants)
    out[rows[ok], cols[ok]] = True
    return out


def initial_stock(
    expected_daily_sales: np.ndarray, cover: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Initial level: a demand forecast × the item's days of cover, Poisson noise, at least 2 units."""
    return np.maximum(2, rng.poisson(expected_daily_sales * cover)).astype(np.int64)


def restock_target(base_level: np.ndarray, sales_last_week: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Order-up-to level at a restock: the larger of the base level and last week's sales × days of cover.

    A buyer re-orders what sells (a periodic-review order-up-to policy; Silver, Pyke & Thomas 2016, ch. 7):
    steady demand is covered, while a sudden shift of demand (a new ranker at 100 %) sells items out
    before the next review.
    """
    return np.maximum(base_level, np.ceil(sales_last_week * cover / 7.0).astype(np.int64))
