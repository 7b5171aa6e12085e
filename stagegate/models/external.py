"""A Ranker around any MLflow pyfunc model that meets the ranking contract (stagegate.contract).

The world and the stages call ``recommend(ctx, k)``, ``recommend_with_scores(ctx, m)`` and
``scores(ctx)``; this adapter turns a RequestContext into the contract's input DataFrame (one row per
request; ``candidate_items`` = the items published and in stock at serving time, or all published ones
when fewer than ``k`` are in stock), calls ``predict`` and checks every answer before anyone sees it:
a missing or extra request id, an id not among the candidates, a repeated id, fewer than ``k`` items, a
score list of another length, a non-finite or increasing score all raise :class:`RankingOutputError`
naming the request. A wrong answer is never repaired into a slate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stagegate.contract import PARAM_K
from stagegate.logs import RequestContext


class RankingOutputError(ValueError):
    """The wrapped model's answer breaks the ranking contract (the message names the request)."""


def candidate_sets(ctx: RequestContext, k: int) -> list[np.ndarray]:
    """Per request, the item ids the model may rank: published and in stock (all published if fewer
    than ``k`` are in stock). Per-item snapshots may be shared ``(n_items,)`` or per request (2-D)."""
    in_stock = np.asarray(ctx.in_stock, dtype=bool)
    published = np.isfinite(np.asarray(ctx.item_age_days, dtype=float))
    if in_stock.ndim == 1:
        in_stock = np.broadcast_to(in_stock, (ctx.n, in_stock.shape[0]))
    if published.ndim == 1:
        published = np.broadcast_to(published, (ctx.n, published.shape[0]))
    available = in_stock & published
    short = available.sum(axis=1) < k
    mask = np.where(short[:, None], published, available)
    # the common case shares one snapshot: build each distinct candidate list once
    cache: dict[bytes, np.ndarray] = {}
    out = []
    for row in mask:
        key = np.packbits(row).tobytes()
        if key not in cache:
            cache[key] = np.flatnonzero(row).astype(np.int64)
        out.append(cache[key])
    return out


def contract_frame(ctx: RequestContext, k: int) -> Any:
    """The contract's input DataFrame for ``ctx`` (stagegate.contract.INPUT_COLUMNS)."""
    import pandas as pd

    recent = np.asarray(ctx.recent_items)
    return pd.DataFrame(
        {
            "request_id": [str(r) for r in np.asarray(ctx.request_id, dtype=np.int64)],
            "user_id": np.asarray(ctx.user_id, dtype=np.int64),
            "candidate_items": candidate_sets(ctx, k),
            "device": np.asarray(ctx.device, dtype=np.int64),
            "hour": np.asarray(ctx.hour, dtype=np.int64),
            "user_segment": np.asarray(ctx.user_segment, dtype=np.int64),
            "t": np.asarray(ctx.t, dtype=float),
            "recent_items": [row[row >= 0].astype(np.int64) for row in recent],
        }
    )


class ExternalRanker:
    """The Ranker protocol over a loaded ``mlflow.pyfunc.PyFuncModel`` that meets the contract."""

    def __init__(self, model: Any, name: str = "external", accepts_k: bool | None = None) -> None:
        self.model = model
        self.name = name
        if accepts_k is None:
            signature = getattr(getattr(model, "metadata", None), "signature", None)
            params = getattr(getattr(signature, "params", None), "params", None) or []
            accepts_k = any(p.name == PARAM_K for p in params)
        self.accepts_k = accepts_k

    def _answer(
        self, ctx: RequestContext, k: int, full: bool = False
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The model's ranked ids and scores per request; ``full``: every candidate ranked."""
        frame = contract_frame(ctx, k)
        if full:
            k = max((len(c) for c in frame["candidate_items"]), default=k)
        params = {PARAM_K: int(k)} if self.accepts_k else None
        out = self.model.predict(frame, params=params) if params else self.model.predict(frame)
        return validate_output(out, frame, k, who=self.name, full=full)

    def recommend_with_scores(self, ctx: RequestContext, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, m) item ids, best first, and their scores."""
        ids, scores = self._answer(ctx, m)
        if not ids:
            return np.empty((0, m), np.int64), np.empty((0, m))
        return np.stack([r[:m] for r in ids]), np.stack([s[:m] for s in scores])

    def recommend(self, ctx: RequestContext, k: int) -> np.ndarray:
        return self.recommend_with_scores(ctx, k)[0]

    def scores(self, ctx: RequestContext) -> np.ndarray:
        """(n, n_items): the model's scores of every candidate (all of them ranked), -inf elsewhere."""
        n_items = np.asarray(ctx.in_stock).shape[-1]
        ids, scores = self._answer(ctx, 1, full=True)
        out = np.full((ctx.n, n_items), -np.inf)
        for i, (row_ids, row_scores) in enumerate(zip(ids, scores, strict=True)):
            out[i, row_ids] = row_scores
        return out


def validate_output(
    out: Any, frame: Any, k: int, who: str = "model", full: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ranked ids and scores of ``out``, in ``frame``'s row order; RankingOutputError otherwise.

    Each row needs at least ``k`` items, or (``full``) every one of its candidates."""
    import pandas as pd

    if not isinstance(out, pd.DataFrame):
        try:
            out = pd.DataFrame(out)
        except (TypeError, ValueError) as exc:
            raise RankingOutputError(f"{who}: predict returned {type(out).__name__}, not a table") from exc
    missing = [c for c in ("request_id", "item_ids", "scores") if c not in out.columns]
    if missing:
        raise RankingOutputError(f"{who}: output has no column(s) {missing} (has {list(out.columns)})")
    asked = list(frame["request_id"])
    got = [str(r) for r in out["request_id"]]
    if len(set(got)) != len(got):
        raise RankingOutputError(f"{who}: output repeats request ids")
    if set(got) != set(asked):
        lost = sorted(set(asked) - set(got))[:5]
        extra = sorted(set(got) - set(asked))[:5]
        raise RankingOutputError(
            f"{who}: output request ids differ from the input (missing {lost}, extra {extra})"
        )
    position = {r: i for i, r in enumerate(got)}
    ids_col, scores_col = list(out["item_ids"]), list(out["scores"])
    ids_out, scores_out = [], []
    for row, request in enumerate(asked):
        j = position[request]
        ids = np.asarray(ids_col[j] if ids_col[j] is not None else [], dtype=np.int64)
        scores = np.asarray(scores_col[j] if scores_col[j] is not None else [], dtype=float)
        where = f"{who}: request {request}"
        candidates = np.asarray(frame["candidate_items"].iloc[row])
        needed = len(candidates) if full else k
        if len(ids) < needed:
            raise RankingOutputError(f"{where}: {len(ids)} items ranked, {needed} needed")
        if len(np.unique(ids)) != len(ids):
            raise RankingOutputError(f"{where}: an item is ranked twice")
        unknown = ids[~np.isin(ids, candidates)]
        if unknown.size:
            raise RankingOutputError(f"{where}: items {unknown[:5].tolist()} are not among the candidates")
        if scores.shape != ids.shape:
            raise RankingOutputError(f"{where}: {len(scores)} scores for {len(ids)} items")
        if not np.isfinite(scores).all():
            raise RankingOutputError(f"{where}: a score is not finite")
        if (np.diff(scores) > 0).any():
            raise RankingOutputError(f"{where}: scores increase down the ranking (best first expected)")
        ids_out.append(ids)
        scores_out.append(scores)
    return ids_out, scores_out
