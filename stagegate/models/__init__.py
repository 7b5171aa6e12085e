"""What the core knows of models: the Ranker protocol (base), bring-your-own pyfunc models (external),
replayed slates (replay) and how a registered version becomes a Ranker (loading).

The recipe model families are the simulator's (simulator.models), reached through the
``stagegate.model_flavours`` entry-point group.
"""

from stagegate.models.base import Ranker

__all__ = ["Ranker"]
