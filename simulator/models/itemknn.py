"""Item-kNN: items similar (by co-occurrence cosine over users) to the user's recent items.

Sarwar et al., WWW 2001; Deshpande & Karypis, TOIS 2004 (top-N item-based, neighbourhood truncation).
Users with no recent items fall back to popularity. Without a diversity rule this is the "more like this"
recommender of the zoo (reference §6.7, Z5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from simulator.models.common import BaseRanker
from simulator.models.interactions import Label, item_counts, positives, user_item_matrix
from stagegate.logs import RequestContext, ServedBatch


class ItemKNNKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    neighbours: int = Field(50, ge=1, description="keep the top-n similarities per item")
    shrinkage: float = Field(10.0, ge=0, description="cosine shrinkage toward 0 for rare co-occurrences")
    popularity_weight: float = Field(0.1, ge=0, description="weight of log popularity added to every score")
    exclude_recent: bool = False


class ItemKNN(BaseRanker):
    family = "itemknn"
    latency_ms_median = 15.0

    def __init__(self, name: str, similarity: np.ndarray, log_pop: np.ndarray, knobs: ItemKNNKnobs) -> None:
        super().__init__(name, len(log_pop))
        self.similarity = similarity
        self.log_pop = log_pop
        self.knobs = knobs

    def _scores(self, ctx: RequestContext) -> np.ndarray:
        recent = ctx.recent_items
        valid = (recent >= 0) & (recent < self.n_items)
        # sum of the similarity rows of the recent items, as (recent-item counts) @ similarity
        counts = np.zeros((ctx.n, self.n_items))
        rows = np.repeat(np.arange(ctx.n), recent.shape[1])[valid.ravel()]
        np.add.at(counts, (rows, recent[valid]), 1.0)
        s = counts @ self.similarity + self.knobs.popularity_weight * self.log_pop[None, :]
        if self.knobs.exclude_recent:
            s[rows, recent[valid]] = -np.inf
        return s


def fit_itemknn(
    logs: ServedBatch, catalog: pd.DataFrame, label: Label, knobs: ItemKNNKnobs, name: str
) -> ItemKNN:
    n_items = len(catalog)
    inter = positives(logs, label)
    n_users = int(inter.user.max()) + 1 if inter.n else 1
    r = np.minimum(user_item_matrix(inter, n_users, n_items), 1.0)
    co = r.T @ r
    norms = np.sqrt(np.diag(co))
    sim = co / (np.outer(norms, norms) + knobs.shrinkage + 1e-12)
    np.fill_diagonal(sim, 0.0)
    if knobs.neighbours < n_items:
        # truncate each item's neighbourhood: keep its top-n similarities
        cut = np.partition(sim, n_items - knobs.neighbours, axis=1)[:, n_items - knobs.neighbours][:, None]
        sim = np.where(sim >= cut, sim, 0.0)
    return ItemKNN(name, sim, np.log1p(item_counts(inter, n_items)), knobs)
