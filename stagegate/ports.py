"""The four ports the promotion flow talks through: traffic, metrics, offline data and time.

The flow never knows where traffic is split, where metrics come from, where logs live or how time passes:
it calls these protocols, and a connections file (stagegate.connections) picks one adapter per port from
the entry-point groups ``stagegate.traffic``, ``stagegate.metrics``, ``stagegate.offline_data`` and
``stagegate.clock``. The simulated world is one adapter set (the embedded default); a router, Prometheus,
a warehouse or a scheduler are others. Like Argo Rollouts' metric-provider interface, each port is a few
methods with a written contract and nothing else.

This module imports nothing from the simulator (simulator.world), the models or the flows: an adapter
depends on the port, never the other way round (tests/core/test_import_rules.py enforces it).

Time crosses every port as timezone-aware UTC ``datetime``. The simulated world counts days since it
began; its adapters map day ``d`` to ``SIM_EPOCH + d days``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence

#: Day 0 of the simulated world, so that simulated time crosses the ports as a datetime like real time.
SIM_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

ARMS = (CHAMPION, CANDIDATE)


class MeasurementError(RuntimeError):
    """A metric source could not measure: the query failed, timed out, or returned no data where data was
    expected. The caller records it as an ERROR verdict (and counts it against a consecutive-error limit);
    it is never turned into empty or zero data, which a gate could mistake for "no harm"."""

    def __init__(self, message: str, *, window: Window | None = None) -> None:
        where = f" ({window.describe()})" if window is not None else ""
        super().__init__(f"{message}{where}")
        self.window = window


class UnjudgeableGates(ValueError):
    """Gates that cannot judge what a metric source measures (named, with the reason)."""


class TrafficError(RuntimeError):
    """A split could not be set or did not read back as set: nothing may assume it moved."""


def _aware(when: datetime | None, name: str) -> None:
    if when is not None and when.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {when.isoformat()}")


@dataclass(frozen=True)
class Window:
    """What one query asks for: one promotion's traffic in one stage (and ramp step) over ``[start, end)``.

    ``step=None`` means every step of the stage; ``start``/``end`` of None mean open ends (the stage's
    first and last recorded request). ``mirrored`` is True for shadow traffic: both arms are the same
    requests, the candidate's answers scored but never shown, so the result is paired user by user.
    """

    promotion_id: str
    stage: str
    step: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    mirrored: bool = False

    def __post_init__(self) -> None:
        _aware(self.start, "Window.start")
        _aware(self.end, "Window.end")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"empty window: end {self.end.isoformat()} <= start {self.start.isoformat()}")

    def describe(self) -> str:
        step = "all steps" if self.step is None else f"step {self.step}"
        span = (
            f"{self.start.isoformat() if self.start else '…'} to {self.end.isoformat() if self.end else '…'}"
        )
        return f"promotion {self.promotion_id}, {self.stage} {step}, {span}"


@dataclass(frozen=True)
class Measurement:
    """Per-unit aggregates of each arm for one window: what a MetricSource returns.

    ``arms[name]`` is an :class:`~stagegate.evidence.ArmSample`: named float64 numpy columns with one value
    per unit (user) in ``metrics``, boolean segment masks over the same units in ``segments``, and
    request-level series (``latency_ms``, ``error``) in ``requests`` for the gates that judge requests.
    ``mixed_units`` counts units seen in both arms and dropped from both (nobody is credited to two models).
    Construction checks the shape contract and raises MeasurementError when an adapter breaks it.
    """

    window: Window
    arms: Mapping[str, ArmSample]
    mixed_units: int = 0
    n_requests: int = 0

    def __post_init__(self) -> None:
        for name, arm in self.arms.items():
            n = len(arm.user_ids)
            for kind, columns in (("metric", arm.metrics), ("segment", arm.segments)):
                for col, values in columns.items():
                    values = np.asarray(values)
                    if values.shape != (n,):
                        raise MeasurementError(
                            f"arm {name!r}: {kind} {col!r} has shape {values.shape}, expected ({n},)",
                            window=self.window,
                        )
                    if kind == "segment" and values.dtype != bool:
                        raise MeasurementError(
                            f"arm {name!r}: segment {col!r} is {values.dtype}, expected bool",
                            window=self.window,
                        )

    @property
    def paired(self) -> bool:
        return self.window.mirrored

    def n_units(self, arm: str) -> int:
        return self.arms[arm].n_users if arm in self.arms else 0

    def evidence(
        self, allocation: Mapping[str, float] | None = None, look: int = 1, history: tuple[Evidence, ...] = ()
    ) -> Evidence:
        """The gates' view of this measurement (stagegate.evidence.Evidence)."""
        return Evidence(
            stage=self.window.stage,
            arms=dict(self.arms),
            paired=self.paired,
            allocation=dict(allocation or {}),
            look=look,
            history=history,
        )


@dataclass(frozen=True)
class Look:
    """One scheduled look at a stage step: the ``number``-th (1-based), judged on data up to ``due``.

    Due times come from the step's start and the look interval alone, never from when the previous look
    happened to finish, so a look that resumes after a crash lands on the same schedule (see
    :func:`next_look`).
    """

    promotion_id: str
    stage: str
    step: int
    number: int
    step_start: datetime
    due: datetime
    every: timedelta

    def window(self, mirrored: bool = False) -> Window:
        """The cumulative data this look judges: the step from its start to ``due``."""
        return Window(self.promotion_id, self.stage, self.step, self.step_start, self.due, mirrored)


def next_look(
    promotion_id: str, stage: str, step: int, step_start: datetime, every: timedelta, looks_done: int
) -> Look:
    """The look after ``looks_done`` recorded ones: due at ``step_start + (looks_done + 1) * every``.

    ``looks_done`` and ``step_start`` come from the ledger (the verdicts recorded for the step, the step's
    transition), so a process that crashed between looks resumes with the right look number and due time.
    """
    _aware(step_start, "step_start")
    if every <= timedelta(0):
        raise ValueError(f"look interval must be positive, got {every}")
    if looks_done < 0:
        raise ValueError(f"looks_done must be >= 0, got {looks_done}")
    number = looks_done + 1
    return Look(promotion_id, stage, step, number, step_start, step_start + number * every, every)


@dataclass(frozen=True)
class Wait:
    """What :meth:`Clock.wait` found: ``ready`` (judge the look now) or not yet, with the due time.

    When ``ready`` is False the caller must not judge and must not block: it ends (or suspends) its flow run
    and arranges to be resumed at ``resume_at`` (a scheduled run of the same deployment, or
    ``suspend_flow_run`` resumed by the scheduler); the resumed run recomputes the look from the ledger with
    :func:`next_look`.
    """

    ready: bool
    due: datetime
    resume_at: datetime | None = None
    waited: timedelta = field(default=timedelta(0))


# -- the ports ----------------------------------------------------------------------------------------------


class Split(BaseModel):
    """Who serves: the champion version, and optionally a candidate on a share of users (sticky by hash)."""

    model_config = ConfigDict(frozen=True)

    champion: str | None = None
    candidate: str | None = None
    candidate_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow: bool = False

    @property
    def is_all_champion(self) -> bool:
        return self.candidate is None or (self.candidate_weight == 0.0 and not self.shadow)


@runtime_checkable
class TrafficController(Protocol):
    """Who serves which users.

    Contract:

    - ``get_split()`` returns the split in force now (all-champion ``Split()`` if none was ever set).
    - ``set_split(split)`` makes ``split`` the one in force and persists it *before returning*, so that a
      crashed promotion can be reconciled from the last split set; raises (TrafficError or the client's
      own error) when the backend refused, never returns as if it had moved.
    - ``rollback(champion=None)`` sends all traffic to the champion (``champion`` if given, else the current
      split's), shadow off, then reads the split back and raises TrafficError unless it is all-champion.
      This is the call the flow's roll-back uses; it is idempotent.
    """

    def get_split(self) -> Split: ...

    def set_split(self, split: Split) -> None: ...

    def rollback(self, champion: str | None = None) -> Split: ...


@runtime_checkable
class MetricSource(Protocol):
    """Per-unit aggregates of live traffic, for the gates.

    Contract of ``measure(window, expect)``:

    - returns a :class:`Measurement` of the requests of ``window`` (promotion, stage, step, time span),
      aggregated per unit (user) for each arm: the metrics the policy's gates name (``revenue_per_user``,
      ``clicks``, ``purchases``, ``requests``, ``errors``, ``impressions``, ...), the segment masks
      (``cold_start``, ``light``, ``heavy``, devices, dayparts) and request-level series where a gate needs
      them (``latency_ms``, ``error``);
    - every arm in ``expect`` must have at least one unit: an arm with no data where data was expected
      raises MeasurementError, as does a failed, timed-out or partial query. It never returns empty or
      zero data in place of a measurement;
    - it does not move traffic or time: two calls with the same window return the same numbers once the
      window has closed.

    Optional: ``check_gates(gates)``, for a source that cannot feed every gate type (the ``prometheus``
    source measures arm-level aggregates only): raises :class:`UnjudgeableGates` naming each gate it cannot
    feed and why. A promotion calls it for every traffic stage's gates before it opens
    (flows.context.check_metric_source), so such a policy is refused before anything moves.
    """

    def measure(self, window: Window, expect: Sequence[str] = ARMS) -> Measurement: ...


@runtime_checkable
class OfflineData(Protocol):
    """The logged data the offline and simulation stages read, in one schema (:data:`IMPRESSIONS_SCHEMA`,
    :data:`CATALOGUE_SCHEMA`, documented in docs/architecture.md "Offline data schema").

    Contract:

    - ``holdout()`` and ``training_log()`` return the logged impressions after and before the hold-out
      cut-off as Arrow tables that satisfy IMPRESSIONS_SCHEMA (required columns present with their types;
      optional ones either absent or typed as listed); the two never overlap in time;
    - ``catalogue()`` returns the public item catalogue as an Arrow table that satisfies CATALOGUE_SCHEMA;
    - a source that cannot deliver raises (OSError, or ValueError naming the missing column): never a
      table with the column silently dropped.
    """

    def holdout(self) -> pa.Table: ...

    def training_log(self) -> pa.Table: ...

    def catalogue(self) -> pa.Table: ...


@runtime_checkable
class Clock(Protocol):
    """When the next look happens.

    Contract:

    - ``now()`` is the time on this clock (timezone-aware UTC; simulated time for the simulated clock);
    - ``wait(look)`` brings the clock to ``look.due`` *if it can do so without holding a worker*, and says
      whether the look may be judged now. The simulated clock advances the world (serves traffic under the
      current split) up to the due time and always returns ``ready``. A real clock never sleeps for hours:
      if the due time is further away than it may block, it returns ``ready=False`` with ``resume_at``,
      and the flow suspends or ends its run to be resumed then (see :class:`Wait`);
    - a look that resumes after a crash is rebuilt from the ledger with :func:`next_look`; ``wait`` on a
      look whose due time has passed returns ``ready`` at once.
    """

    def now(self) -> datetime: ...

    def wait(self, look: Look) -> Wait: ...


PORTS: dict[str, type] = {
    "traffic": TrafficController,
    "metrics": MetricSource,
    "offline_data": OfflineData,
    "clock": Clock,
}


# -- the offline data schema -----------------------------------------------------------------------------

_SLATE = pa.list_(pa.int32())

#: Logged impressions, one row per served request (hold-out and training log alike). Required columns are
#: the ones every stage reads; the others are optional (absent, or null where the producer did not know).
IMPRESSIONS_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.int64(), nullable=False, metadata={"required": "yes"}),
        pa.field("t", pa.float64(), nullable=False, metadata={"required": "yes", "unit": "days"}),
        pa.field("user_id", pa.int64(), nullable=False, metadata={"required": "yes"}),
        pa.field("user_segment", pa.int8(), nullable=False, metadata={"required": "yes"}),
        pa.field("device", pa.int8(), nullable=False, metadata={"required": "yes"}),
        pa.field("hour", pa.int8(), nullable=False, metadata={"required": "yes"}),
        pa.field("arm", pa.int8(), nullable=False, metadata={"required": "yes"}),
        pa.field("items", _SLATE, nullable=False, metadata={"required": "yes"}),
        pa.field("pscore", pa.list_(pa.float64()), nullable=False, metadata={"required": "yes"}),
        pa.field("clicks", pa.list_(pa.bool_()), nullable=False, metadata={"required": "yes"}),
        pa.field("purchases", pa.list_(pa.bool_()), nullable=False, metadata={"required": "yes"}),
        pa.field("revenue", pa.float64(), nullable=False, metadata={"required": "yes"}),
        pa.field("latency_ms", pa.float64(), nullable=False, metadata={"required": "yes"}),
        pa.field("error", pa.bool_(), nullable=False, metadata={"required": "yes"}),
        pa.field("pscore_prefix", pa.list_(pa.float64()), metadata={"required": "no"}),
        pa.field("session_id", pa.int64(), metadata={"required": "no"}),
        pa.field("slate_index", pa.int16(), metadata={"required": "no"}),
        pa.field("stock_at_serve", pa.list_(pa.int64()), metadata={"required": "no"}),
        pa.field("in_stock_at_serve", pa.binary(), metadata={"required": "no"}),
        pa.field("recent_items", pa.list_(pa.int32()), metadata={"required": "no"}),
    ]
)

#: The public item catalogue, one row per item. ``emb_<j>`` columns (float64, any number) are optional.
CATALOGUE_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False, metadata={"required": "yes"}),
        pa.field("category", pa.int64(), nullable=False, metadata={"required": "yes"}),
        pa.field("price", pa.float64(), nullable=False, metadata={"required": "yes"}),
        pa.field("publish_day", pa.float64(), nullable=False, metadata={"required": "yes"}),
        pa.field("margin", pa.float64(), metadata={"required": "no"}),
        pa.field("saliency", pa.float64(), metadata={"required": "no"}),
        pa.field("stock", pa.int64(), metadata={"required": "no"}),
    ]
)
EMBEDDING_PREFIX = "emb_"


def required_fields(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if (f.metadata or {}).get(b"required") == b"yes"]


def schema_problems(table: pa.Table, schema: pa.Schema, *, extra_prefix: str | None = None) -> list[str]:
    """Every way ``table`` breaks ``schema``: a missing required column, a column of the wrong type, a null
    in a non-nullable column, or (unless it starts with ``extra_prefix``) a column the schema does not
    know. Empty when the table conforms."""
    problems = []
    names = set(table.column_names)
    for f in schema:
        if f.name not in names:
            if (f.metadata or {}).get(b"required") == b"yes":
                problems.append(f"missing required column {f.name!r} ({f.type})")
            continue
        column = table.column(f.name)
        if not column.type.equals(f.type):
            problems.append(f"column {f.name!r} is {column.type}, expected {f.type}")
        elif not f.nullable and column.null_count:
            problems.append(f"column {f.name!r} has {column.null_count} nulls; it may have none")
    known = {f.name for f in schema}
    for name in table.column_names:
        if name in known:
            continue
        if extra_prefix and name.startswith(extra_prefix):
            if not pa.types.is_floating(table.column(name).type):
                problems.append(f"column {name!r} is {table.column(name).type}, expected a float type")
            continue
        problems.append(f"unknown column {name!r}")
    return problems


def check_table(
    table: pa.Table, schema: pa.Schema, what: str, *, extra_prefix: str | None = None
) -> pa.Table:
    """Return ``table`` if it conforms to ``schema``; else raise ValueError listing every problem."""
    problems = schema_problems(table, schema, extra_prefix=extra_prefix)
    if problems:
        raise ValueError(f"{what} does not match its schema: " + "; ".join(problems))
    return table
