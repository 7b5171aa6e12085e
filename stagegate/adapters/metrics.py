"""The ``events`` metric source: per-user aggregates from the event store's rows (SQLite or PostgreSQL).

This is what the stages compute today (stagegate.events.metrics), behind the MetricSource port: a failed
query, a window with no requests, or an expected arm without users raise MeasurementError.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stagegate.connections.secrets import SecretRef
from stagegate.ports import ARMS, SIM_EPOCH, Measurement, MeasurementError, Window

#: A window's start is a datetime (whole microseconds) and event times are float days: a request served at
#: the very start of a step must not fall out of it by rounding (the step's own rows are filtered by step).
_START_SLACK_DAYS = 1e-10  # about 9 microseconds


def sim_days(when: datetime) -> float:
    """A port datetime as the simulated world's time (days since SIM_EPOCH)."""
    return (when - SIM_EPOCH) / timedelta(days=1)


class EventStoreMetricSource:
    """Reads the ``events`` table behind ``url`` and aggregates per user by arm and segment."""

    class Config(BaseModel):
        """``url``: a SQLAlchemy URL without its password (default: the workspace's event store);
        ``password``: a secret reference, put into the URL at connection time; ``slate_k``: slate length."""

        model_config = ConfigDict(extra="forbid")

        url: str | None = None
        password: SecretRef | None = None
        slate_k: int = Field(default=10, ge=1)

    def __init__(self, store: Any, slate_k: int = 10) -> None:
        self.store = store
        self.slate_k = slate_k

    @classmethod
    def from_config(cls, config: Config, host: Any) -> EventStoreMetricSource:
        if config.url is None and config.password is None:
            return cls(host.events, config.slate_k)  # the process's own store: one engine, not two
        from sqlalchemy.engine import make_url

        from stagegate.events.store import EventStore

        url = make_url(config.url or host.workspace.events_url)
        if config.password is not None:
            url = url.set(password=config.password.resolve())
        return cls(EventStore(url.render_as_string(hide_password=False)), config.slate_k)

    def _load(self, window: Window) -> Any:
        try:
            frame = self.store.load_events(window.promotion_id, window.stage, step=window.step)
        except Exception as exc:  # a failed query is a measurement error, never "no data"
            raise MeasurementError(f"event query failed: {exc!r}", window=window) from exc
        if window.start is not None:
            frame = frame[frame["t"] >= sim_days(window.start) - _START_SLACK_DAYS]
        if window.end is not None:
            frame = frame[frame["t"] < sim_days(window.end)]
        return frame

    def measure(self, window: Window, expect: Sequence[str] = ARMS) -> Measurement:
        from stagegate.events.metrics import arm_samples, shadow_samples

        frame = self._load(window)
        if frame.empty:
            raise MeasurementError("no requests recorded in the window", window=window)
        if window.mirrored:
            arms, mixed = shadow_samples(frame, self.slate_k), 0
            if not arms:
                raise MeasurementError("no mirrored (shadow) requests in the window", window=window)
        else:
            arms, mixed = arm_samples(frame, self.slate_k)
        missing = [arm for arm in expect if arm not in arms or arms[arm].n_users == 0]
        if missing:
            raise MeasurementError(f"no users in arm(s) {missing} where data was expected", window=window)
        return Measurement(window=window, arms=arms, mixed_units=mixed, n_requests=len(frame))
