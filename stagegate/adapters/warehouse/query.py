"""SQLAlchemy Core queries from metric definitions: the database aggregates, the adapter only reads.

Three statements per window, each a SELECT over the same filtered rows (promotion, stage, step, time,
the two arms' values):

- :func:`summary_query`: the window's request count, its requests that cannot be attributed (NULL unit
  or arm) and its mixed units (seen in both arms);
- :func:`per_user_query`: one row per (arm, unit) of the units seen in one arm only, with every metric,
  every segment flag and, per metric, the count of NULLs it met (never summed as 0);
- :func:`series_query`: the request-level series (latency, error) of those units' requests.

Every column comes from the reflected table (an unknown name raises KeyError before any SQL is built) and
every value — promotion id, stage, arm labels, filter values, window bounds, scales — is a bound
parameter: nothing from the connections file or the window is formatted into the SQL text.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Double,
    Integer,
    Select,
    Table,
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    null,
    or_,
    select,
)

from stagegate.adapters.warehouse.definitions import Aggregate, Condition, Definitions
from stagegate.evidence import CANDIDATE, CHAMPION
from stagegate.ports import SIM_EPOCH, Window

RANK = "_sg_rank"
_COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


@dataclass(frozen=True)
class Labels:
    """Result-column labels of the per-user query (generated, so a metric's name never becomes SQL)."""

    metrics: dict[str, str]
    nulls: dict[str, str]
    segments: dict[str, str]


def _bound_time(value: datetime, kind: str) -> Any:
    if kind == "sim_days":
        return (value - SIM_EPOCH) / timedelta(days=1)
    if kind == "epoch_seconds":
        return value.timestamp()
    return value.astimezone(UTC)


def condition(expr: ColumnElement[Any], cond: Condition) -> ColumnElement[bool]:
    """``expr op value`` with the value bound."""
    op, value = cond.op, cond.value
    if op == "is_null":
        return expr.is_(None)
    if op == "not_null":
        return expr.is_not(None)
    if op == "in":
        return expr.in_(value)
    if op == "not_in":
        return expr.not_in(value)
    if op == "between":
        low, high = value  # type: ignore[misc]
        return expr.between(literal(low), literal(high))
    return _COMPARE[op](expr, literal(value))


def window_rows(table: Table, d: Definitions, window: Window) -> Select[Any]:
    """The table's rows of the window (any arm value, NULLs included), as a subquery's SELECT."""
    where = [table.c[d.promotion] == literal(window.promotion_id), table.c[d.stage] == literal(window.stage)]
    if window.step is not None:
        if d.step is None:
            raise ValueError(f"window asks for step {window.step} but the definitions name no step column")
        where.append(table.c[d.step] == literal(window.step))
    time = table.c[d.time.column]
    if window.start is not None:
        where.append(time >= literal(_bound_time(window.start, d.time.kind)))
    if window.end is not None:
        where.append(time < literal(_bound_time(window.end, d.time.kind)))
    return select(table).where(*where)


def _arm_values(d: Definitions) -> list[Any]:
    return [d.arms.champion, d.arms.candidate]


def summary_query(table: Table, d: Definitions, window: Window) -> Select[Any]:
    """(requests, unattributed, mixed units) of the window; requests count only the two arms' rows."""
    rows = window_rows(table, d, window).subquery("sg_window")
    unit, arm = rows.c[d.unit], rows.c[d.arms.column]
    in_arms = arm.in_(_arm_values(d))
    mixed = (
        select(unit)
        .where(in_arms, unit.is_not(None))
        .group_by(unit)
        .having(func.count(distinct(arm)) > literal(1))
        .subquery("sg_mixed")
    )
    return select(
        func.coalesce(func.sum(case((in_arms, literal(1)), else_=literal(0))), literal(0)).label("requests"),
        func.coalesce(
            func.sum(case((or_(unit.is_(None), arm.is_(None)), literal(1)), else_=literal(0))), literal(0)
        ).label("unattributed"),
        select(func.count()).select_from(mixed).scalar_subquery().label("mixed"),
    ).select_from(rows)


def kept_rows(table: Table, d: Definitions, window: Window) -> Any:
    """The window's rows of units seen in one arm only, each ranked within its (arm, unit) by
    ``first_by``, as a subquery."""
    rows = window_rows(table, d, window).subquery("sg_window")
    unit, arm = rows.c[d.unit], rows.c[d.arms.column]
    in_arms = arm.in_(_arm_values(d))
    mixed = (
        select(unit)
        .where(in_arms, unit.is_not(None))
        .group_by(unit)
        .having(func.count(distinct(arm)) > literal(1))
    )
    order = [rows.c[c] for c in d.first_order()]
    rank = func.row_number().over(partition_by=[arm, unit], order_by=order).label(RANK)
    return select(rows, rank).where(in_arms, unit.is_not(None), unit.not_in(mixed)).subquery("sg_kept")


def _number(col: ColumnElement[Any]) -> ColumnElement[Any]:
    """A column as double precision; booleans as 1.0 / 0.0 (NULL stays NULL: never read as false)."""
    if isinstance(col.type, Boolean):
        return case((col.is_(None), null()), (col, literal(1.0)), else_=literal(0.0))
    return cast(col, Double)


def _aggregate(kept: Any, m: Aggregate) -> ColumnElement[Any]:
    where = and_(*(condition(kept.c[f.column], f) for f in m.where)) if m.where else None
    col = kept.c[m.column] if m.column is not None else None

    def only(expr: ColumnElement[Any]) -> ColumnElement[Any]:
        return expr if where is None else case((where, expr), else_=null())

    if m.agg == "count":
        value: ColumnElement[Any] = func.count(only(literal(1)))
    elif m.agg == "count_distinct":
        value = func.count(distinct(only(col)))
    elif m.agg == "sum":
        value = func.coalesce(func.sum(only(_number(col))), literal(0.0))
    elif m.agg == "mean":
        value = func.avg(only(_number(col)))
    else:
        value = func.max(only(_number(col)))
    value = cast(value, Double)
    return value if m.scale == 1.0 else value * literal(m.scale, Double)


def _null_count(kept: Any, m: Aggregate) -> ColumnElement[Any] | None:
    if m.column is None:
        return None
    hit = kept.c[m.column].is_(None)
    if m.where:
        hit = and_(hit, *(condition(kept.c[f.column], f) for f in m.where))
    return func.sum(case((hit, literal(1)), else_=literal(0)))


def per_user_query(table: Table, d: Definitions, window: Window) -> tuple[Select[Any], Labels]:
    """One row per (arm, unit): ``arm``, ``unit``, then the labelled metrics, NULL counts and segments."""
    kept = kept_rows(table, d, window)
    labels = Labels(metrics={}, nulls={}, segments={})
    columns: list[ColumnElement[Any]] = [kept.c[d.arms.column].label("arm"), kept.c[d.unit].label("unit")]
    values: dict[str, ColumnElement[Any]] = {}
    for i, (name, m) in enumerate(d.per_user.items()):
        if m.ratio is None:
            values[name] = _aggregate(kept, m)
        nulls = _null_count(kept, m)
        if nulls is not None:
            labels.nulls[name] = f"n{i}"
            columns.append(nulls.label(f"n{i}"))
    for i, (name, m) in enumerate(d.per_user.items()):
        if m.ratio is not None:
            num, den = (values[r] for r in m.ratio)
            ratio = num / func.nullif(den, literal(0.0))
            values[name] = ratio if m.scale == 1.0 else ratio * literal(m.scale, Double)
        labels.metrics[name] = f"m{i}"
    columns += [values[name].label(labels.metrics[name]) for name in d.per_user]
    for i, (name, s) in enumerate(d.segments.items()):
        col = kept.c[s.column]
        if s.pick == "first":
            picked = func.max(case((kept.c[RANK] == literal(1), col), else_=null()))
        else:
            picked = getattr(func, s.pick)(col)
        flag = case((picked.is_(None), null()), (condition(picked, s), literal(1)), else_=literal(0))
        labels.segments[name] = f"s{i}"
        columns.append(cast(flag, Integer).label(f"s{i}"))
    query = (
        select(*columns)
        .group_by(kept.c[d.arms.column], kept.c[d.unit])
        .order_by(kept.c[d.arms.column], kept.c[d.unit])
    )
    return query, labels


def series_query(table: Table, d: Definitions, window: Window) -> Select[Any]:
    """``arm`` and each request series (labelled r0, r1, ...) of the kept units' requests."""
    kept = kept_rows(table, d, window)
    columns = [kept.c[d.arms.column].label("arm")]
    columns += [_number(kept.c[col]).label(f"r{i}") for i, col in enumerate(d.request_series.values())]
    order = [kept.c[d.arms.column], kept.c[d.unit], *(kept.c[c] for c in d.first_order())]
    return select(*columns).order_by(*order)


def arm_name(d: Definitions, value: Any) -> str:
    """The arm a value of the arm column stands for (values compared as the database returns them)."""
    if value == d.arms.champion:
        return CHAMPION
    if value == d.arms.candidate:
        return CANDIDATE
    raise ValueError(f"arm value {value!r} is neither champion {d.arms.champion!r} nor candidate")
