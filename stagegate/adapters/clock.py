"""Clocks: ``simulated`` advances the simulated world to the next look; ``wall`` is real time.

A look is scheduled with :func:`stagegate.ports.next_look`; after a crash, :func:`resume_look` rebuilds
the next look from the ledger (the verdicts already recorded for the step), so the process that takes over
neither repeats a look nor skips one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stagegate.ports import SIM_EPOCH, Look, Wait, next_look

# Below this the world is "at" the due time: hours accumulate in floating point.
_EPS_HOURS = 1e-9


class SimulatedClock:
    """Time is the simulated world's; waiting for a look serves the world up to the look's due time.

    Serving goes through the host (the Runtime): the current split from the traffic port, the rankers from
    the registry, and the served requests are appended to the event store under the look's promotion,
    stage and step, which is exactly what a real router's logs would deliver while real time passes.
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, host: Any) -> None:
        self.host = host

    @classmethod
    def from_config(cls, config: Config, host: Any) -> SimulatedClock:
        return cls(host)

    def now(self) -> datetime:
        return SIM_EPOCH + timedelta(days=float(self.host.world.now))

    def wait(self, look: Look) -> Wait:
        hours = (look.due - self.now()) / timedelta(hours=1)
        if hours <= _EPS_HOURS:
            return Wait(ready=True, due=look.due)
        self.advance(look.promotion_id, look.stage, look.step, hours)
        return Wait(ready=True, due=look.due, waited=timedelta(hours=hours))

    def advance(
        self, promotion_id: str, stage: str, step: int, hours: float, model: str | None = None
    ) -> Any:
        """Serve ``hours`` under the current split and record the requests; returns the served batch."""
        host = self.host
        model = model or host.events.promotion(promotion_id)["model"]
        split = host.traffic.get_split()
        batch = host.serve(model, split, hours)
        host.events.append_batch(
            batch,
            promotion_id=promotion_id,
            stage=stage,
            step=step,
            versions=(split.champion, split.candidate),
        )
        return batch


class WallClock:
    """Real time. ``wait`` blocks at most ``max_block_seconds``; a look due later is handed back.

    What the flow does with a ``Wait(ready=False)``: record nothing, end (or suspend) its flow run, and have
    it resumed at ``resume_at`` (for example ``run_deployment(..., scheduled_time=resume_at, timeout=0)``
    of the same deployment, or a scheduled deployment run every interval); the resumed run calls
    :func:`resume_look` and waits again, which is then ``ready`` at once. No worker is held for hours.
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        max_block_seconds: float = Field(default=300.0, ge=0.0)

    def __init__(
        self,
        max_block_seconds: float = 300.0,
        *,
        now: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_block = timedelta(seconds=max_block_seconds)
        self._now = now or (lambda: datetime.now(UTC))
        self._sleep = sleep

    @classmethod
    def from_config(cls, config: Config, host: Any) -> WallClock:
        return cls(config.max_block_seconds)

    def now(self) -> datetime:
        return self._now()

    def wait(self, look: Look) -> Wait:
        remaining = look.due - self.now()
        if remaining <= timedelta(0):
            return Wait(ready=True, due=look.due)
        if remaining > self.max_block:
            return Wait(ready=False, due=look.due, resume_at=look.due)
        self._sleep(remaining.total_seconds())
        return Wait(ready=True, due=look.due, waited=remaining)


def looks_done(store: Any, promotion_id: str, stage: str, step: int) -> int:
    """How many looks of ``stage`` step ``step`` the ledger holds verdicts for (0 before the first)."""
    frame = store.verdicts(promotion_id, stage)
    if frame.empty:
        return 0
    rows = frame[frame["step"] == step]
    return int(rows["look"].max()) if not rows.empty else 0


def resume_look(
    store: Any, promotion_id: str, stage: str, step: int, step_start: datetime, every: timedelta
) -> Look:
    """The next look of a step, continuing from what the ledger recorded (after a crash or a deferral)."""
    return next_look(
        promotion_id, stage, step, step_start, every, looks_done(store, promotion_id, stage, step)
    )
