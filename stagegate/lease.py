"""Keeping a promotion's lease alive while its process lives: a heartbeat thread.

The lease (``promotions.owner``, ``heartbeat_at``, ``lease_expires_at``) says "this process is still
driving the promotion". The process renews it every quarter of its length, from a daemon thread, so a
long stage, a long approval pause or a busy CPU never lets it lapse; a killed process stops renewing, and
``stagegate reconcile`` takes the promotion over once the lease runs out (at once, when the owner is a
process of this host that is gone). A renewal that fails (the ledger is down) is retried at the next beat.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from stagegate.events.store import lease_seconds

log = logging.getLogger("stagegate.lease")


class LeaseKeeper:
    """``with LeaseKeeper(store, promotion_id):`` renews the lease every ``interval`` seconds."""

    def __init__(self, events: Any, promotion_id: str, interval: float | None = None) -> None:
        self.events = events
        self.promotion_id = promotion_id
        self.interval = interval if interval is not None else lease_seconds() / 4
        self.beats = 0
        self.lost = False  # the promotion ended, or another owner took it over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{promotion_id[:8]}")

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                held = self.events.heartbeat(self.promotion_id)
            except Exception as exc:  # the ledger is down: the lease may lapse, which is the safe side
                log.warning("lease of %s not renewed: %r", self.promotion_id, exc)
                continue
            if not held:
                self.lost = True
                log.info("lease of %s no longer held (ended or taken over): stop renewing", self.promotion_id)
                return
            self.beats += 1

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
