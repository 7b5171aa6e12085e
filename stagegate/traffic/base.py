"""The traffic-control contract (kept here for existing imports; it lives with the other ports).

Implementations: the in-process simulated world (:mod:`simulator.traffic`); a router service and
SageMaker production-variant weights are further adapters of the same port (:mod:`stagegate.ports`).
"""

from __future__ import annotations

from stagegate.ports import Split, TrafficController, TrafficError

__all__ = ["Split", "TrafficController", "TrafficError"]
