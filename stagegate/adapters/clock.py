"""The wall clock (``wall``: real time); the simulated clock is the simulator's (simulator.adapters).

A look is scheduled with :func:`stagegate.ports.next_look`; after a deferral or a crash, the look loop is
rebuilt from the ledger's checkpoint (flows.stages.checkpoint, `stagegate resume`), so the process that
takes over neither repeats a look nor skips one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stagegate.ports import Look, Wait


class WallClock:
    """Real time. ``wait`` blocks at most ``max_block_seconds``; a look due later is handed back.

    What the flow does with a ``Wait(ready=False)``: record nothing, end (or suspend) its flow run, and have
    it resumed at ``resume_at`` (``stagegate resume ID``, flows.resume: for example from a scheduled
    deployment run); the resumed run rebuilds the look from the ledger's checkpoint and waits again,
    which is then ``ready`` at once. No worker is held for hours.
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
