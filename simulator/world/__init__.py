"""The simulated live world: catalogue, users, traffic and the response model (reference §6).

Public surface: :class:`WorldConfig` and :class:`LiveWorld` (serve rankers, log history, ground truth), the
public log types :class:`RequestContext` and :class:`ServedBatch`, and row operations on logs.
"""

from simulator.world.catalog import public_embeddings
from simulator.world.config import Mechanisms, ResponseParams, WorldConfig, small_config
from simulator.world.live import LiveWorld
from simulator.world.oracle import ground_truth, summarise
from stagegate.log_rows import between, concat, split_by_day, take, take_context
from stagegate.logs import DAYPARTS, DEVICES, SEGMENTS, RequestContext, ServedBatch

__all__ = [
    "DAYPARTS",
    "DEVICES",
    "SEGMENTS",
    "LiveWorld",
    "Mechanisms",
    "RequestContext",
    "ResponseParams",
    "ServedBatch",
    "WorldConfig",
    "between",
    "concat",
    "ground_truth",
    "public_embeddings",
    "small_config",
    "split_by_day",
    "summarise",
    "take",
    "take_context",
]
