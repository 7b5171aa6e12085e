"""Traffic control: who serves which users."""

from stagegate.traffic.base import Split, TrafficController, TrafficError
from stagegate.traffic.simulated import FileTrafficController

__all__ = ["FileTrafficController", "Split", "TrafficController", "TrafficError"]
