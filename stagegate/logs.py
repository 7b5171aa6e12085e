"""Data that crosses the boundary between the simulated world and everything else.

The world's hidden parameters (true item quality, bait, user tastes) never cross it: models, the offline
stage and the simulation stage's twin see only these public records and the public catalogue.

All arrays are numpy, one row per request; slate arrays are (n_requests, k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEGMENTS = ("cold_start", "light", "heavy")  # user_segment codes 0, 1, 2 (public: from history length)
DEVICES = ("desktop", "mobile")  # device codes 0, 1
DAYPARTS = ("night", "morning", "afternoon", "evening")  # hour // 6


@dataclass(frozen=True)
class RequestContext:
    """What a ranker may see when it is asked for a slate (a batch of requests at one simulated time)."""

    request_id: np.ndarray  # int64 (n,)
    t: np.ndarray  # float64 (n,) simulated time in days since the world began
    user_id: np.ndarray  # int64 (n,)
    hour: np.ndarray  # int8 (n,) 0..23
    device: np.ndarray  # int8 (n,) index into DEVICES
    user_segment: np.ndarray  # int8 (n,) index into SEGMENTS
    recent_items: np.ndarray  # int32 (n, h) the user's most recent clicked/purchased items, -1 padded
    in_stock: np.ndarray  # bool (n_items,) the public stock snapshot at serving time
    # float64 (n_items,) days since publication at serving time (inf if unpublished)
    item_age_days: np.ndarray

    @property
    def n(self) -> int:
        return len(self.request_id)


@dataclass(frozen=True)
class ServedBatch:
    """What happened when a batch of requests was served: the public log, one row per request."""

    context: RequestContext
    arm: np.ndarray  # int8 (n,) 0 = champion, 1 = candidate
    items: np.ndarray  # int32 (n, k) the slate shown, best position first
    # float64 (n, k) item-position propensity under the serving policy (1.0 if deterministic)
    pscore: np.ndarray
    clicks: np.ndarray  # bool (n, k)
    purchases: np.ndarray  # bool (n, k)
    revenue: np.ndarray  # float64 (n,) sum of purchased prices
    latency_ms: np.ndarray  # float64 (n,)
    error: np.ndarray  # bool (n,) the serving model failed; the champion's fallback slate was shown
    shadow_items: np.ndarray | None = None  # int32 (n, k) the shadow model's slate, scored but never shown
    # Optional fields added for OPE and the offline stage (None when a producer does not fill them):
    pscore_prefix: np.ndarray | None = None  # float64 (n, k) P(slate prefix 1..j) under the serving policy
    session_id: np.ndarray | None = None  # int64 (n,) requests of one visit share it
    slate_index: np.ndarray | None = None  # int16 (n,) 0 for the first slate of a session, then 1, 2, ...
    stock_at_serve: np.ndarray | None = None  # int64 (n, k) units on hand of each shown item when served
    shadow_latency_ms: np.ndarray | None = None  # float64 (n,) the shadow model's latency
    shadow_error: np.ndarray | None = None  # bool (n,) the shadow model failed (its shadow_items row is -1)
    # uint8 (n, ceil(n_items / 8)): the public in-stock flags of the whole catalogue when the request was
    # served, bit-packed (np.packbits, bitorder="little"); stagegate.log_rows.serving_batches unpacks them
    in_stock_at_serve: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.arm)
