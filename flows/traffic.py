"""Traffic moves as Prefect tasks with declared retries: a flaky router call is retried, never hand-looped.

Every call goes through the ports of the runtime (stagegate.ports): the traffic controller and the clock
the connections file chose.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.context import PromotionContext, runtime
from stagegate.traffic import Split


@task(name="set-split", retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE)
def set_split(split: Split) -> Split:
    runtime().traffic.set_split(split)
    return split


@task(name="roll-back-traffic", retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE)
def roll_back_traffic(champion: str | None) -> Split:
    """All traffic to ``champion`` through the port's ``rollback``, which reads the split back to confirm
    (TrafficError, retried, if it did not take)."""
    return runtime().traffic.rollback(champion)


@task(name="serve-window", retries=0, cache_policy=NO_CACHE)
def serve_window(ctx: PromotionContext, stage: str, step: int, hours: float) -> Any:
    """Advance the simulated clock by ``hours``: serve live traffic under the current split and append it to
    the event store. Refused with a clock that does not serve (a real clock: traffic arrives by itself).

    The stages and the monitor do not call it: their looks wait on ``Clock.wait`` (flows.stages.runner),
    which serves the simulated world up to each look's due time. It stays for serving by hand."""
    clock = runtime().clock
    advance = getattr(clock, "advance", None)
    if advance is None:
        raise RuntimeError(
            f"the clock in force ({type(clock).__name__}) does not serve traffic: with a real router, wait "
            "for the look (stagegate.ports.Clock.wait) instead of serving a window"
        )
    return advance(ctx.promotion_id, stage, step, hours, model=ctx.model)
