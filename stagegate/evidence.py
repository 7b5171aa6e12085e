"""The evidence contract: what a gate reads.

Users, not requests, are the unit of analysis: an arm's evidence is a set of per-user aggregates (one value
per user and metric), with boolean masks for segments. Request-level series (latency, errors) are kept
beside them for gates that judge distributions of requests (quantiles).

Offline evidence is *paired*: champion and candidate are scored on the same held-out users, and the arrays
of the two arms are aligned user by user. Online evidence (canary) has independent arms.

Sequential gates look at the evidence after every batch; ``history`` holds the earlier looks (cumulative,
oldest first) so that a pure gate can recompute an always-valid statistic over all looks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

CHAMPION = "champion"
CANDIDATE = "candidate"


@dataclass(frozen=True)
class ArmSample:
    """Per-user aggregates of one arm: ``metrics[name][i]`` is user ``user_ids[i]``'s value."""

    user_ids: np.ndarray
    metrics: Mapping[str, np.ndarray]
    segments: Mapping[str, np.ndarray] = field(default_factory=dict)  # segment name -> bool mask over users
    # request-level series, e.g. latency_ms
    requests: Mapping[str, np.ndarray] = field(default_factory=dict)
    pre_period: Mapping[str, np.ndarray] = field(default_factory=dict)  # per-user covariates for CUPED

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def metric(self, name: str, segment: str | None = None) -> np.ndarray:
        """Per-user values of ``name`` (only ``segment`` if given); the KeyError names what is missing."""
        if name not in self.metrics:
            raise KeyError(f"metric {name!r} not in evidence (have: {sorted(self.metrics)})")
        values = np.asarray(self.metrics[name], dtype=float)
        if segment is None:
            return values
        if segment not in self.segments:
            raise KeyError(f"segment {segment!r} not in evidence (have: {sorted(self.segments)})")
        return values[np.asarray(self.segments[segment], dtype=bool)]


@dataclass(frozen=True)
class Evidence:
    """Everything a gate may look at for one stage and one look."""

    stage: str
    arms: Mapping[str, ArmSample]
    paired: bool = False  # True when arms are aligned user by user (offline, shadow)
    allocation: Mapping[str, float] = field(default_factory=dict)  # configured traffic share per arm
    look: int = 1
    history: tuple[Evidence, ...] = ()
    scalars: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # arm -> name -> value

    def arm(self, name: str) -> ArmSample:
        if name not in self.arms:
            raise KeyError(
                f"arm {name!r} not in evidence for stage {self.stage!r} (have: {sorted(self.arms)})"
            )
        return self.arms[name]

    @property
    def has_baseline(self) -> bool:
        return CHAMPION in self.arms


#: Ratio metrics are pooled over users (sum of numerators / sum of denominators) with a delta-method
#: variance, never averaged per user: a user with one request must not weigh as much as one with a hundred.
RATIO_METRICS: dict[str, tuple[str, str]] = {
    "error_rate": ("errors", "requests"),
    "ctr": ("clicks", "impressions"),
    "conversion_rate": ("purchases", "clicks"),
}
