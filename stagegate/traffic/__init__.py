"""Traffic control: who serves which users (the port is stagegate.ports; the simulated world's file
controller is the simulator's, simulator.traffic)."""

from stagegate.traffic.base import Split, TrafficController, TrafficError

__all__ = ["Split", "TrafficController", "TrafficError"]
