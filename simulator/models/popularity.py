"""Popularity: the most clicked (or bought) items of the training window, optionally time-decayed.

The classic non-personalised baseline; on click labels it is hard to beat offline and often poor online
(Garcin et al., RecSys 2014, reference §3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from simulator.models.common import BaseRanker
from simulator.models.interactions import Label, item_counts, positives
from stagegate.logs import RequestContext, ServedBatch


class PopularityKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    half_life_days: float | None = Field(None, gt=0, description="exponential time decay of counts")


class Popularity(BaseRanker):
    family = "popularity"
    latency_ms_median = 8.0

    def __init__(self, name: str, log_counts: np.ndarray) -> None:
        super().__init__(name, len(log_counts))
        self.log_counts = log_counts

    def _scores(self, ctx: RequestContext) -> np.ndarray:
        return np.broadcast_to(self.log_counts, (ctx.n, self.n_items))


def fit_popularity(
    logs: ServedBatch, catalog: pd.DataFrame, label: Label, knobs: PopularityKnobs, name: str
) -> Popularity:
    counts = item_counts(positives(logs, label), len(catalog), half_life_days=knobs.half_life_days)
    return Popularity(name, np.log1p(counts))
