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
    expected_daily_sales: np.ndarray, cover_days: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Initial (and restock) level: expected demand × U(cover) days of cover, Poisson noise, at least 1 unit."""
    cover = rng.uniform(cover_days[0], cover_days[1], size=expected_daily_sales.shape)
    return np.maximum(1, rng.poisson(expected_daily_sales * cover)).astype(np.int64)
