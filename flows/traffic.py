"""Traffic moves as Prefect tasks with declared retries: a flaky router call is retried, never hand-looped."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.context import PromotionContext, runtime
from stagegate.traffic import Split
from stagegate.world.schema import ServedBatch


@task(name="set-split", retries=3, retry_delay_seconds=1, cache_policy=NO_CACHE)
def set_split(split: Split) -> Split:
    runtime().traffic.set_split(split)
    return split


@task(name="serve-window", retries=0, cache_policy=NO_CACHE)
def serve_window(ctx: PromotionContext, stage: str, step: int, hours: float) -> ServedBatch:
    """Serve ``hours`` of live traffic under the current split and append it to the event store."""
    rt = runtime()
    split = rt.traffic.get_split()
    batch = rt.serve(ctx.model, split, hours)
    rt.events.append_batch(
        batch,
        promotion_id=ctx.promotion_id,
        stage=stage,
        step=step,
        versions=(split.champion, split.candidate),
    )
    return batch
