"""Traffic control: who serves which users."""

from stagegate.traffic.base import Split, TrafficController
from stagegate.traffic.simulated import FileTrafficController

__all__ = ["FileTrafficController", "Split", "TrafficController"]
