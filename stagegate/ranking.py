"""Top-k by score with a deterministic tie-break: the one ranking helper of the core, world and models.

``np.argpartition`` and ``np.argsort`` (default kind) leave the order of equal scores unspecified, and numpy
picks a different algorithm per instruction set (AVX-512 builds use x86-simd-sort): two machines then rank
tied items differently, the world shows different slates, and a promotion's story depends on the CPU. Here
the order is fully specified: higher score first, and among equal scores the lower index (item id) first,
i.e. the order of ``np.lexsort((index, -score))``. NaN counts as −inf (and ties with it by index).

Cost: one ``np.partition`` for the k-th largest value (a value is unique, whichever algorithm finds it),
then linear passes to take every score above it and the lowest-index ties at it, and a stable sort of the
k winners: O(n·m + n·k log k), about twice ``argpartition``, instead of a full sort of every row.
"""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (int64) of the ``k`` best entries along the last axis, best first, ties by lower index.

    Works on any leading shape: ``(n, m) -> (n, k)``, ``(c, s, m) -> (c, s, k)``; ``k`` is clipped to m.
    """
    s = np.asarray(scores, dtype=np.float64)
    m = s.shape[-1]
    k = min(int(k), m)
    lead = s.shape[:-1]
    if k <= 0 or m == 0:
        return np.zeros((*lead, 0), dtype=np.int64)
    s = np.where(np.isnan(s), -np.inf, s).reshape(-1, m)
    if k < m:
        kth = np.partition(s, m - k, axis=1)[:, m - k : m - k + 1]  # the k-th largest value of each row
        above = s > kth
        tied = s == kth
        need = k - above.sum(axis=1, keepdims=True)  # >= 1: how many ties at the k-th value to take
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
        idx = np.nonzero(chosen)[1].reshape(-1, k)  # row-major: ascending index within each row
    else:
        idx = np.broadcast_to(np.arange(m), s.shape)
    vals = np.take_along_axis(s, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # stable: equal scores keep ascending index
    return np.take_along_axis(idx, order, axis=1).reshape(*lead, k).astype(np.int64, copy=False)
