"""A weighted blend of models: the sum of their per-request standardised scores.

Standardising first makes the weights mean "relative influence" whatever each model's score scale
(a linear ensemble, as in the Netflix Prize blends; Töscher, Jahrer & Bell 2009, simplified).
"""

from __future__ import annotations

import numpy as np

from simulator.models.common import BaseRanker, servable, standardise_rows
from stagegate.logs import RequestContext


class Blend(BaseRanker):
    family = "blend"

    def __init__(self, name: str, components: list[tuple[float, BaseRanker]]) -> None:
        if not components:
            raise ValueError("a blend needs at least one component")
        super().__init__(name, components[0][1].n_items)
        self.components = components
        # serving runs the components one after another
        self.latency_ms_median = float(sum(c.latency_ms_median for _, c in components))

    def _scores(self, ctx: RequestContext) -> np.ndarray:
        mask = servable(ctx)
        total = np.zeros((ctx.n, self.n_items))
        for weight, model in self.components:
            s = np.where(mask[None, :], model._scores(ctx), 0.0)
            total += weight * standardise_rows(s, mask)
        return total
