"""Content-based: public-embedding similarity to the user's recent items, plus a freshness prior.

Needs no interaction logs, which makes it the bootstrap policy that produces a world's first logs
(Pazzani & Billsus 2007, content-based recommendation). Users without history get the freshness prior.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from simulator.models.common import BaseRanker
from simulator.models.interactions import Label
from simulator.world.catalog import public_embeddings
from stagegate.logs import RequestContext, ServedBatch


class ContentKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fresh_weight: float = Field(0.5, ge=0)
    fresh_tau_days: float = Field(14.0, gt=0)


class ContentRanker(BaseRanker):
    family = "content"
    latency_ms_median = 10.0

    def __init__(self, name: str, embeddings: np.ndarray, knobs: ContentKnobs) -> None:
        super().__init__(name, embeddings.shape[0])
        self.emb = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        self.knobs = knobs

    def _scores(self, ctx: RequestContext) -> np.ndarray:
        recent = ctx.recent_items
        valid = (recent >= 0) & (recent < self.n_items)
        profile = (self.emb[np.where(valid, recent, 0)] * valid[:, :, None]).sum(axis=1)
        profile /= np.maximum(valid.sum(axis=1, keepdims=True), 1)
        age = np.where(np.isfinite(ctx.item_age_days), np.maximum(ctx.item_age_days, 0.0), np.inf)
        fresh = np.exp(-age / self.knobs.fresh_tau_days)
        return profile @ self.emb.T + self.knobs.fresh_weight * fresh[None, :]


def fit_content(
    logs: ServedBatch, catalog: pd.DataFrame, label: Label, knobs: ContentKnobs, name: str
) -> ContentRanker:
    del logs, label  # content-based: the public catalogue is all it needs
    return ContentRanker(name, public_embeddings(catalog), knobs)
