"""Metric definitions of the warehouse metric source: which table, which columns play which role, and how
each per-user metric, segment and request series is computed from the rows.

They are written in the connections file and validated here (pydantic) before anything connects:
identifiers must be plain column names, every filter's value must fit its operator, and a metric, a
segment and a ratio refer only to names that exist. When ``table.columns`` lists the table's columns, a
definition that names any other column is refused at validation, naming the field; in any case the table
is reflected when the adapter is built and every column named must be one of its columns
(:func:`column_problems`), so a typo never reaches a query.

Values (filter values, arm labels, promotion ids) are never part of the SQL text: the query builder
(stagegate.adapters.warehouse.query) binds every one of them as a parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

#: A column or table name: letters, digits and underscores, not starting with a digit. Quoting is left to
#: SQLAlchemy; the name must also be one of the reflected table's columns.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
#: A metric or segment name as the gates see it (``overlap@k``-style names are the shadow path's, not ours).
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
Scalar = str | int | float | bool
#: a field's location in the definitions, as pydantic reports it: ("per_user", "revenue", "column")
Loc = tuple[str | int, ...]

Operator = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between", "is_null", "not_null"]
_LIST_OPS = {"in", "not_in"}
_NO_VALUE = {"is_null", "not_null"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """``op`` applied to a value and ``value``: eq, ne, lt, le, gt, ge take one value; in and not_in a
    non-empty list; between a list of two (inclusive); is_null and not_null none."""

    op: Operator = "eq"
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        value = self.value
        if self.op in _NO_VALUE:
            if value is not None:
                raise ValueError(f"operator {self.op!r} takes no value")
        elif self.op in _LIST_OPS:
            if not isinstance(value, list) or not value:
                raise ValueError(f"operator {self.op!r} takes a non-empty list of values")
        elif self.op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise ValueError("operator 'between' takes a list of two values [low, high]")
        elif value is None or isinstance(value, list):
            raise ValueError(f"operator {self.op!r} takes one value (use is_null / not_null for NULL)")
        return self


class Filter(Condition):
    """A row filter: only rows whose ``column`` satisfies ``op value`` count towards the metric."""

    column: Identifier


class Aggregate(_Strict):
    """One per-user metric: ``agg`` over ``column`` of the user's rows that pass every filter in ``where``,
    times ``scale``; or, with ``ratio``, one metric divided by another (per user, in the database).

    - ``sum``: the sum (0 for a user with no qualifying row); ``count``: the number of qualifying rows
      (``column`` optional); ``count_distinct``: distinct values of ``column``; ``mean`` and ``max``: of
      ``column`` over the qualifying rows (a user with none has no value, which is an error).
    - A NULL in ``column`` on a qualifying row is never summed as 0 or skipped: the measurement fails and
      names the metric and how many NULLs it found. Filter them out explicitly (``op: not_null``) if that is
      what the metric means.
    - ``ratio: [numerator, denominator]`` names two other metrics; a zero denominator leaves the user
      without a value, which is an error.
    """

    agg: Literal["sum", "count", "count_distinct", "mean", "max"] | None = None
    column: Identifier | None = None
    where: list[Filter] = Field(default_factory=list)
    scale: float = 1.0
    ratio: tuple[Name, Name] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Aggregate:
        if (self.agg is None) == (self.ratio is None):
            raise ValueError("give exactly one of 'agg' (with 'column') or 'ratio: [numerator, denominator]'")
        if self.ratio is not None and (self.column is not None or self.where):
            raise ValueError("a ratio takes no 'column' or 'where': give them to its numerator/denominator")
        if self.agg not in (None, "count") and self.column is None:
            raise ValueError(f"aggregation {self.agg!r} needs a 'column'")
        return self


class Segment(Condition):
    """A per-user flag: the user's ``pick`` of ``column`` (``first``: at the earliest row by the source's
    ``first_by`` order; ``min``; ``max``) satisfies ``op value``. A user whose picked value is NULL fails the
    measurement (a segment is never guessed)."""

    column: Identifier
    pick: Literal["first", "min", "max"] = "first"


class TableRef(_Strict):
    """The table (or view) with one row per served request. ``columns``, if given, is the list of its
    columns: definitions are then checked against it at validation, without a connection."""

    name: Identifier
    schema_: Identifier | None = Field(default=None, alias="schema")
    columns: list[Identifier] | None = None


class Arms(_Strict):
    """The arm column and the value that marks each arm in it (bound as parameters)."""

    column: Identifier = "arm"
    champion: Scalar = 0
    candidate: Scalar = 1


class TimeColumn(_Strict):
    """The request-time column and how to read a window's bounds into it: ``timestamp`` (a timestamp
    column, bound as timezone-aware UTC datetimes), ``epoch_seconds`` (seconds since 1970-01-01 UTC) or
    ``sim_days`` (days since the simulated world's epoch, as stagegate's own events table)."""

    column: Identifier = "t"
    kind: Literal["timestamp", "epoch_seconds", "sim_days"] = "timestamp"


class Definitions(_Strict):
    """Everything the query needs besides the connection: shared by the ``sql`` and ``duckdb`` sources."""

    table: TableRef
    unit: Identifier = "user_id"
    arms: Arms = Field(default_factory=Arms)
    time: TimeColumn = Field(default_factory=TimeColumn)
    promotion: Identifier = "promotion_id"
    stage: Identifier = "stage"
    step: Identifier | None = "step"
    #: the order in which a user's "first" row is found (segments with ``pick: first``): time, then a
    #: unique tie-breaker such as a request id
    first_by: list[Identifier] = Field(default_factory=list)
    per_user: dict[Name, Aggregate] = Field(min_length=1)
    segments: dict[Name, Segment] = Field(default_factory=dict)
    #: request-level series (gate name -> column), e.g. ``latency_ms`` and ``error`` for the latency and
    #: error gates; each value of the arm's kept users' requests is returned
    request_series: dict[Name, Identifier] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_resolve(self) -> Definitions:
        problems: list[tuple[Loc, str]] = []
        for name, metric in self.per_user.items():
            if metric.ratio is None:
                continue
            for side, ref in zip(("numerator", "denominator"), metric.ratio, strict=True):
                if ref not in self.per_user:
                    problems.append((("per_user", name, "ratio"), f"{side} {ref!r} is not a per_user metric"))
                elif self.per_user[ref].ratio is not None:
                    problems.append((("per_user", name, "ratio"), f"{side} {ref!r} is itself a ratio"))
        for name in sorted(set(self.per_user) & set(self.segments)):
            problems.append((("segments", name), f"{name!r} is also a per_user metric: names must differ"))
        if self.table.columns is not None:
            problems += column_problems(self, set(self.table.columns))
        if problems:
            # one error per field, at that field's location, so that each is reported by its path
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("definition", why.replace("{", "{{").replace("}", "}}")),
                        loc=loc,
                        input=None,
                    )
                    for loc, why in problems
                ],
            )
        return self

    def first_order(self) -> list[str]:
        """The columns that order a user's rows for ``pick: first``: ``first_by``, else the time column."""
        return list(self.first_by) or [self.time.column]

    def columns_used(self) -> Iterator[tuple[Loc, str]]:
        """(field location, column) for every column a definition names."""
        yield ("unit",), self.unit
        yield ("arms", "column"), self.arms.column
        yield ("time", "column"), self.time.column
        yield ("promotion",), self.promotion
        yield ("stage",), self.stage
        if self.step is not None:
            yield ("step",), self.step
        for i, column in enumerate(self.first_by):
            yield ("first_by", i), column
        for name, metric in self.per_user.items():
            if metric.column is not None:
                yield ("per_user", name, "column"), metric.column
            for i, where in enumerate(metric.where):
                yield ("per_user", name, "where", i, "column"), where.column
        for name, segment in self.segments.items():
            yield ("segments", name, "column"), segment.column
        for name, column in self.request_series.items():
            yield ("request_series", name), column


def column_problems(definitions: Definitions, columns: set[str]) -> list[tuple[Loc, str]]:
    """(field location, reason) for every column a definition names that is not in ``columns``."""
    have = ", ".join(sorted(columns))
    return [
        (loc, f"column {column!r} is not a column of table {definitions.table.name!r} (columns: {have})")
        for loc, column in definitions.columns_used()
        if column not in columns
    ]
