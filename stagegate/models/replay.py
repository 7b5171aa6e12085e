"""A ranker that replays slates computed earlier, so one model ranks a hold-out log only once.

The offline and simulation stages both need a model's slates for every logged hold-out request; ranking is
most of their cost. The runtime ranks once, and both stages read the slates back through this ranker.
"""

from __future__ import annotations

import numpy as np

from stagegate.logs import RequestContext


class ReplayRanker:
    """Answers ``recommend`` for known requests (by request id) with the slates it was given."""

    def __init__(self, name: str, request_ids: np.ndarray, slates: np.ndarray) -> None:
        ids = np.asarray(request_ids, dtype=np.int64)
        if len(ids) != len(slates):
            raise ValueError(f"{name}: {len(ids)} request ids for {len(slates)} slates")
        order = np.argsort(ids, kind="stable")
        self._ids, self._slates = ids[order], np.asarray(slates)[order]
        if np.any(self._ids[1:] == self._ids[:-1]):
            raise ValueError(f"{name}: request ids are not unique; slates cannot be replayed by id")
        self.name = name

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        pos = np.searchsorted(self._ids, ctx.request_id)
        pos = np.clip(pos, 0, len(self._ids) - 1)
        unknown = self._ids[pos] != ctx.request_id
        if unknown.any():
            raise KeyError(f"{self.name}: {int(unknown.sum())} requests were never ranked")
        if k > self._slates.shape[1]:
            raise ValueError(f"{self.name}: asked for {k} items, replaying slates of {self._slates.shape[1]}")
        return self._slates[pos, :k]

    def scores(self, ctx: RequestContext) -> np.ndarray:
        raise NotImplementedError(f"{self.name} replays slates; it has no scores")
