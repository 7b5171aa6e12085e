"""Matrix factorisation for implicit feedback by alternating least squares (ALS).

Hu, Koren & Volinsky, ICDM 2008: confidence c_ui = 1 + α·count, preference p_ui = 1[count > 0]; each ALS
half-step solves (YᵀY + Yᵀ(C_u − I)Y + λI) x_u = Yᵀ C_u p_u, batched here with numpy over users (or items).
Users unseen in training are folded in from their recent items with the same normal equations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from simulator.models.common import BaseRanker
from simulator.models.interactions import Label, item_counts, positives
from stagegate.logs import RequestContext, ServedBatch


class MFKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factors: int = Field(16, ge=1, le=256)
    regularization: float = Field(1.0, gt=0)
    alpha: float = Field(10.0, gt=0, description="confidence per observed event")
    iterations: int = Field(8, ge=1, le=100)
    popularity_weight: float = Field(0.0, ge=0, description="weight of log popularity added to every score")
    seed: int = 0


def _als_half_step(
    rows: np.ndarray,
    cols: np.ndarray,
    counts: np.ndarray,
    n_rows: int,
    fixed: np.ndarray,
    alpha: float,
    reg: float,
) -> np.ndarray:
    """Solve one side given the other from sparse (row, col, count) triplets: returns (n_rows, f).

    Only observed entries contribute beyond the shared Gram matrix, so the cost is O(nnz·f² + n_rows·f³).
    """
    f = fixed.shape[1]
    gram = fixed.T @ fixed + reg * np.eye(f)
    a = np.broadcast_to(gram, (n_rows, f, f)).copy()
    b = np.zeros((n_rows, f))
    if rows.size:
        conf = alpha * counts
        y = fixed[cols]
        np.add.at(a, rows, conf[:, None, None] * y[:, :, None] * y[:, None, :])
        np.add.at(b, rows, (1.0 + conf)[:, None] * y)
    return np.linalg.solve(a, b[:, :, None])[:, :, 0]


def _triplets(user: np.ndarray, item: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate events into unique (user, item, count) triplets."""
    key = user.astype(np.int64) * n_items + item
    uniq, counts = np.unique(key, return_counts=True)
    return uniq // n_items, uniq % n_items, counts.astype(float)


class MatrixFactorization(BaseRanker):
    family = "mf"
    latency_ms_median = 18.0

    def __init__(
        self,
        name: str,
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        log_pop: np.ndarray,
        knobs: MFKnobs,
    ) -> None:
        super().__init__(name, item_factors.shape[0])
        self.user_factors = user_factors
        self.item_factors = item_factors
        self.log_pop = log_pop
        self.knobs = knobs
        self._known = np.abs(user_factors).sum(axis=1) > 0

    def user_vectors(self, ctx: RequestContext) -> np.ndarray:
        """Learned factors for users seen in training; fold-in from recent items for the others."""
        uid = ctx.user_id
        known = (uid < len(self._known)) & self._known[np.minimum(uid, len(self._known) - 1)]
        x = np.zeros((ctx.n, self.item_factors.shape[1]))
        x[known] = self.user_factors[uid[known]]
        if (~known).any():
            recent = ctx.recent_items[~known]
            valid = (recent >= 0) & (recent < self.n_items)
            rows = np.repeat(np.arange(recent.shape[0]), recent.shape[1])[valid.ravel()]
            r, c, v = _triplets(rows, recent[valid], self.n_items)
            x[~known] = _als_half_step(
                r, c, v, recent.shape[0], self.item_factors, self.knobs.alpha, self.knobs.regularization
            )
        return x

    def _scores(self, ctx: RequestContext) -> np.ndarray:
        return (
            self.user_vectors(ctx) @ self.item_factors.T
            + self.knobs.popularity_weight * self.log_pop[None, :]
        )


def fit_mf(
    logs: ServedBatch, catalog: pd.DataFrame, label: Label, knobs: MFKnobs, name: str
) -> MatrixFactorization:
    n_items = len(catalog)
    inter = positives(logs, label)
    n_users = int(logs.context.user_id.max()) + 1 if logs.n else 1
    u, i, c = _triplets(inter.user, inter.item, n_items)
    rng = np.random.default_rng(knobs.seed)
    items = 0.1 * rng.standard_normal((n_items, knobs.factors))
    users = np.zeros((n_users, knobs.factors))
    active = np.unique(u)
    # compact user index so that the user half-step solves only for users with events
    local = np.searchsorted(active, u)
    for _ in range(knobs.iterations):
        users_active = _als_half_step(local, i, c, active.size, items, knobs.alpha, knobs.regularization)
        items = _als_half_step(i, local, c, n_items, users_active, knobs.alpha, knobs.regularization)
    users[active] = _als_half_step(local, i, c, active.size, items, knobs.alpha, knobs.regularization)
    return MatrixFactorization(name, users, items, np.log1p(item_counts(inter, n_items)), knobs)
