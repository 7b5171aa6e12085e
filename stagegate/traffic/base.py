"""The traffic-control contract: read and set the split, roll back to 100% champion.

Implementations: the in-process simulated world (:mod:`stagegate.traffic.simulated`); a router service and
SageMaker production-variant weights later. Every implementation persists the split before it returns, so
a crashed promotion can be reconciled from what was last set.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field


class Split(BaseModel):
    """Who serves: the champion version, and optionally a candidate on a share of users (sticky by hash)."""

    model_config = ConfigDict(frozen=True)

    champion: str | None = None
    candidate: str | None = None
    candidate_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow: bool = False

    @property
    def is_all_champion(self) -> bool:
        return self.candidate is None or (self.candidate_weight == 0.0 and not self.shadow)


class TrafficController(Protocol):
    def get_split(self) -> Split: ...

    def set_split(self, split: Split) -> None: ...

    def rollback(self) -> Split:
        """All traffic to the champion, shadow off; returns the new split."""
        ...
