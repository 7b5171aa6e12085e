"""The ranker protocol every candidate model implements (and the MLflow pyfunc wraps)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from stagegate.logs import RequestContext


@runtime_checkable
class Ranker(Protocol):
    """A recommender that turns a batch of requests into scores and slates, vectorised over requests."""

    name: str

    def scores(self, ctx: RequestContext) -> np.ndarray:
        """(n_requests, n_items) float scores, higher is better, before business rules."""
        ...

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        """(n_requests, k) int item ids, best first: the model's deterministic slate after its own rules."""
        ...
