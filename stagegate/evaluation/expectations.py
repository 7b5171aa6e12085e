"""Validate the evaluation data with Great Expectations 1.x before any metric is trusted (fail closed).

The served log is flattened to one row per request (:func:`served_batch_to_frame`) and validated in an
ephemeral GX context against a suite kept as data (expectations/eval_events.yaml)::

    name: eval_events
    expectations:
      - expectation: ExpectColumnValuesToNotBeNull     # a class of gx.expectations (or snake_case name)
        columns: [revenue, hour]                        # optional: one expectation per column
        kwargs: {mostly: 1.0}                           # the class's own arguments
      - expectation: ExpectTableRowCountToBeBetween
        kwargs: {min_value: 1000}

A bare list of entries is accepted as well. A malformed suite raises :class:`SuiteFormatError` naming the
file and the entry. ``great_expectations`` is imported inside the functions that need it (about 5 s).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from stagegate.evaluation.logs import as_batches, concat
from stagegate.logs import DEVICES, SEGMENTS, ServedBatch

if TYPE_CHECKING:
    import pandas as pd

FRAME_COLUMNS = (
    "request_id",
    "t",
    "user_id",
    "hour",
    "device",
    "user_segment",
    "arm",
    "revenue",
    "latency_ms",
    "error",
    "n_clicks",
    "n_purchases",
    "min_pscore",
    "max_pscore",
)
ARMS = ("champion", "candidate")
#: What a suite validates (its ``frame`` key): ``served`` = served_batch_to_frame (codes as names, the
#: default), ``impressions`` = impressions_frame (the OfflineData table's own columns and types).
FRAMES = ("served", "impressions")
_ENTRY_KEYS = {"expectation", "kwargs", "columns", "meta"}


class SuiteFormatError(ValueError):
    """The expectation suite file cannot be read or one of its entries is invalid."""


@dataclass(frozen=True)
class ExpectationSpec:
    """One suite entry after parsing: the GX class name and its keyword arguments."""

    expectation: str
    kwargs: Mapping[str, Any]
    entry: int  # index of the entry in the file (one entry may expand to several specs)


@dataclass(frozen=True)
class ExpectationRow:
    """The outcome of one expectation."""

    expectation: str
    kwargs: Mapping[str, Any]
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    element_count: int | None = None
    observed_value: Any = None
    partial_unexpected: list[Any] = field(default_factory=list)
    exception: str | None = None

    @property
    def reason(self) -> str:
        """One sentence: why this expectation failed (or "ok")."""
        if self.success:
            return "ok"
        if self.exception:
            return f"could not evaluate: {self.exception}"
        if self.expectation == "ExpectColumnToExist":
            return f"column {self.kwargs.get('column')!r} is missing"
        parts = []
        if self.unexpected_count is not None:
            of = f" of {self.element_count}" if self.element_count is not None else ""
            parts.append(f"{self.unexpected_count}{of} values unexpected")
            if self.partial_unexpected:
                parts.append(f"e.g. {self.partial_unexpected[:5]}")
        if self.observed_value is not None:
            parts.append(f"observed {self.observed_value!r}")
        return ", ".join(parts) or "expectation not met"

    def label(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.expectation}({args})"


@dataclass(frozen=True)
class ExpectationReport:
    """The suite's verdict on one frame: ``success`` is False if any expectation failed or errored."""

    suite_name: str
    suite_path: str
    success: bool
    n_rows: int
    rows: tuple[ExpectationRow, ...]

    @property
    def failures(self) -> tuple[ExpectationRow, ...]:
        return tuple(r for r in self.rows if not r.success)

    def summary(self) -> str:
        """One human sentence, naming the failed expectations and why."""
        n_ok = len(self.rows) - len(self.failures)
        head = f"suite {self.suite_name!r} on {self.n_rows} rows: {n_ok}/{len(self.rows)} expectations met"
        if self.success:
            return head
        return head + "; failed: " + "; ".join(f"{r.label()}: {r.reason}" for r in self.failures)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN → None, numpy scalars → Python), e.g. for ``mlflow.log_dict``."""
        return _json_safe(
            {
                "suite_name": self.suite_name,
                "suite_path": self.suite_path,
                "success": self.success,
                "n_rows": self.n_rows,
                "n_expectations": len(self.rows),
                "n_failed": len(self.failures),
                "summary": self.summary(),
                "results": [
                    {
                        "expectation": r.expectation,
                        "kwargs": dict(r.kwargs),
                        "success": r.success,
                        "unexpected_count": r.unexpected_count,
                        "unexpected_percent": r.unexpected_percent,
                        "element_count": r.element_count,
                        "observed_value": r.observed_value,
                        "partial_unexpected": r.partial_unexpected,
                        "exception": r.exception,
                        "reason": r.reason,
                    }
                    for r in self.rows
                ],
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def served_batch_to_frame(log: ServedBatch | Sequence[ServedBatch]) -> pd.DataFrame:
    """One row per request with the columns of ``FRAME_COLUMNS``.

    ``device``, ``user_segment`` and ``arm`` become their names (an unknown code becomes None, which the
    suite's not-null and in-set expectations catch); ``n_clicks``/``n_purchases`` count the slate's
    positive slots; ``min_pscore``/``max_pscore`` are the slate's extreme propensities (NaN propagates).
    """
    import pandas as pd

    batches = as_batches(log)
    pscore = concat(batches, lambda b: b.pscore).astype(float)
    return pd.DataFrame(
        {
            "request_id": concat(batches, lambda b: b.context.request_id),
            "t": concat(batches, lambda b: b.context.t).astype(float),
            "user_id": concat(batches, lambda b: b.context.user_id),
            "hour": concat(batches, lambda b: b.context.hour).astype(np.int64),
            "device": _names(concat(batches, lambda b: b.context.device), DEVICES),
            "user_segment": _names(concat(batches, lambda b: b.context.user_segment), SEGMENTS),
            "arm": _names(concat(batches, lambda b: b.arm), ARMS),
            "revenue": concat(batches, lambda b: b.revenue).astype(float),
            "latency_ms": concat(batches, lambda b: b.latency_ms).astype(float),
            "error": concat(batches, lambda b: b.error).astype(bool),
            "n_clicks": concat(batches, lambda b: b.clicks).astype(bool).sum(axis=1),
            "n_purchases": concat(batches, lambda b: b.purchases).astype(bool).sum(axis=1),
            "min_pscore": pscore.min(axis=1) if pscore.shape[1] else np.full(len(pscore), np.nan),
            "max_pscore": pscore.max(axis=1) if pscore.shape[1] else np.full(len(pscore), np.nan),
        }
    )


def load_suite(path: str | Path) -> tuple[str, list[ExpectationSpec]]:
    """Parse a suite file (structure only, no GX import): ``(suite name, specs)``; SuiteFormatError if bad."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SuiteFormatError(f"{path}: cannot read expectation suite: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SuiteFormatError(f"{path}: not valid YAML: {exc}") from exc
    name = path.stem
    if isinstance(doc, Mapping):
        unknown = set(doc) - {"name", "expectations", "frame"}
        if unknown:
            raise SuiteFormatError(
                f"{path}: unknown top-level keys {sorted(unknown)} (allowed: name, expectations, frame)"
            )
        if doc.get("frame", "served") not in FRAMES:
            raise SuiteFormatError(f"{path}: frame {doc.get('frame')!r} is not one of {list(FRAMES)}")
        name = str(doc.get("name", name))
        entries = doc.get("expectations")
    else:
        entries = doc
    if not isinstance(entries, list) or not entries:
        raise SuiteFormatError(f"{path}: expected a non-empty list of expectations (or a mapping with one)")
    specs: list[ExpectationSpec] = []
    for i, entry in enumerate(entries):
        where = f"{path}: entry {i}"
        if not isinstance(entry, Mapping):
            raise SuiteFormatError(
                f"{where}: expected a mapping with 'expectation' and 'kwargs', got {entry!r}"
            )
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise SuiteFormatError(
                f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_ENTRY_KEYS)})"
            )
        exp = entry.get("expectation")
        if not isinstance(exp, str) or not exp:
            raise SuiteFormatError(f"{where}: missing 'expectation' (a gx.expectations class name)")
        kwargs = entry.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise SuiteFormatError(f"{where} ({exp}): 'kwargs' must be a mapping, got {kwargs!r}")
        columns = entry.get("columns")
        if columns is None:
            specs.append(ExpectationSpec(_class_name(exp), dict(kwargs), i))
            continue
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
            raise SuiteFormatError(f"{where} ({exp}): 'columns' must be a non-empty list of column names")
        if "column" in kwargs:
            raise SuiteFormatError(f"{where} ({exp}): give either 'columns' or kwargs.column, not both")
        specs.extend(ExpectationSpec(_class_name(exp), {**kwargs, "column": c}, i) for c in columns)
    return name, specs


def build_suite(path: str | Path, context: Any = None) -> Any:
    """The suite as a ``gx.ExpectationSuite``; SuiteFormatError if the file or an entry is invalid.

    GX objects resolve through the process's current data context, so an ephemeral one is made first
    unless ``context`` is given (GX would otherwise look for a file context in the working directory).
    """
    name, specs = load_suite(path)
    return _build(name, specs, str(path), context)


def _build(name: str, specs: Sequence[ExpectationSpec], where: str, context: Any = None) -> Any:
    import great_expectations as gx

    if context is None:
        context = _ephemeral_context()
    suite = gx.ExpectationSuite(name=name)
    for spec in specs:
        cls = getattr(gx.expectations, spec.expectation, None)
        if not (isinstance(cls, type) and issubclass(cls, gx.expectations.Expectation)):
            raise SuiteFormatError(
                f"{where}: entry {spec.entry}: unknown expectation {spec.expectation!r} "
                "(not in gx.expectations)"
            )
        try:
            suite.add_expectation(cls(**spec.kwargs))
        except Exception as exc:  # pydantic validation errors of the GX class
            detail = " ".join(str(exc).split())
            raise SuiteFormatError(
                f"{where}: entry {spec.entry} ({spec.expectation}): invalid kwargs: {detail}"
            ) from exc
    return suite


def validate_frame(df: pd.DataFrame, suite_path: str | Path) -> ExpectationReport:
    """Validate ``df`` against the suite in an ephemeral GX context (progress bars off).

    Every expectation runs; one that raises inside GX (e.g. its column is missing) counts as failed with
    the exception's message. SuiteFormatError if the suite file is malformed.
    """
    name, specs = load_suite(suite_path)
    return validate_specs(df, name, specs, str(suite_path))


def validate_specs(
    df: pd.DataFrame, name: str, specs: Sequence[ExpectationSpec], where: str
) -> ExpectationReport:
    """Validate ``df`` against parsed expectations (``where``: the suite's file, for messages)."""
    import great_expectations as gx

    context = _ephemeral_context()
    suite = context.suites.add(_build(name, specs, where, context))
    batch_def = (
        context.data_sources.add_pandas("stagegate")
        .add_dataframe_asset("eval_events")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}-validation", data=batch_def, suite=suite)
    )
    result = validation.run(batch_parameters={"dataframe": df})
    rows = tuple(_row(r) for r in result.results)
    return ExpectationReport(
        suite_name=suite.name,
        suite_path=where,
        success=bool(result.success) and all(r.success for r in rows),
        n_rows=len(df),
        rows=rows,
    )


def validate_served(log: ServedBatch | Sequence[ServedBatch], suite_path: str | Path) -> ExpectationReport:
    """``validate_frame(served_batch_to_frame(log), suite_path)``."""
    return validate_frame(served_batch_to_frame(log), suite_path)


# -- the OfflineData table itself ---------------------------------------------------------------------------

#: numpy dtype names of the schema's scalar Arrow types, as GX's ExpectColumnValuesToBeOfType reads them
_NUMPY_TYPE = {"int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "double": "float64",
               "float": "float32", "bool": "bool"}  # fmt: skip


def suite_frame(path: str | Path) -> str:
    """The ``frame`` a suite file validates (``served`` unless it says ``impressions``)."""
    doc = yaml.safe_load(Path(path).read_text()) if Path(path).exists() else None
    return str(doc.get("frame", "served")) if isinstance(doc, Mapping) else "served"


def impressions_frame(table: Any) -> pd.DataFrame:
    """One row per request of an impressions table (stagegate.ports.IMPRESSIONS_SCHEMA), types kept.

    Scalar columns keep their Arrow type as a numpy dtype (a null turns an integer column into float64,
    which the type expectations catch); a list column ``x`` stays a column of Python lists, with
    ``x_len`` (entries per row) and ``x_value_type`` (the Arrow element type, e.g. ``int32``) beside it;
    ``n_clicks``, ``n_purchases``, ``min_pscore`` and ``max_pscore`` are derived as in the served frame.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_list(column.type):
            out[name] = pd.Series(column.to_pylist(), dtype=object)
            out[f"{name}_len"] = np.asarray(pc.list_value_length(column).fill_null(-1), dtype=np.int64)
            out[f"{name}_value_type"] = np.full(table.num_rows, str(column.type.value_type), dtype=object)
        elif pa.types.is_binary(column.type):
            out[name] = pd.Series(column.to_pylist(), dtype=object)
        else:
            out[name] = column.to_pandas()
    for name, derived in (("clicks", "n_clicks"), ("purchases", "n_purchases")):
        if name in table.column_names and pa.types.is_list(table.column(name).type):
            flat = pc.list_flatten(table.column(name)).cast(pa.int64())
            parents = np.asarray(pc.list_parent_indices(table.column(name)), dtype=np.int64)
            out[derived] = np.bincount(parents, weights=np.asarray(flat, float), minlength=table.num_rows)
    if "pscore" in table.column_names and pa.types.is_list(table.column("pscore").type):
        rows = table.column("pscore").to_pylist()
        out["min_pscore"] = np.array([min(r) if r else np.nan for r in rows], dtype=float)
        out["max_pscore"] = np.array([max(r) if r else np.nan for r in rows], dtype=float)
    return pd.DataFrame(out)


def schema_specs(schema: Any, present: Sequence[str]) -> list[ExpectationSpec]:
    """The expectations an Arrow schema implies for :func:`impressions_frame`: every required column
    exists and has no nulls; every column present has the schema's type (lists: a list per row and the
    element type). Derived from the schema itself, so the suite cannot drift from it."""
    import pyarrow as pa

    specs: list[ExpectationSpec] = []
    for i, f in enumerate(schema):
        required = (f.metadata or {}).get(b"required") == b"yes"
        if not required and f.name not in present:
            continue
        specs.append(ExpectationSpec("ExpectColumnToExist", {"column": f.name}, i))
        if not f.nullable:
            specs.append(ExpectationSpec("ExpectColumnValuesToNotBeNull", {"column": f.name}, i))
        if pa.types.is_list(f.type):
            specs.append(
                ExpectationSpec("ExpectColumnValuesToBeOfType", {"column": f.name, "type_": "list"}, i)
            )
            specs.append(
                ExpectationSpec(
                    "ExpectColumnValuesToBeInSet",
                    {"column": f"{f.name}_value_type", "value_set": [str(f.type.value_type)]},
                    i,
                )
            )
        elif pa.types.is_binary(f.type):
            specs.append(
                ExpectationSpec("ExpectColumnValuesToBeOfType", {"column": f.name, "type_": "bytes"}, i)
            )
        else:
            type_ = _NUMPY_TYPE[str(f.type)]
            specs.append(
                ExpectationSpec("ExpectColumnValuesToBeOfType", {"column": f.name, "type_": type_}, i)
            )
    return specs


def validate_holdout(table: Any, batches: Any, suite_path: str | Path) -> ExpectationReport:
    """The offline stage's data check: the impressions table against its schema (:func:`schema_specs` of
    IMPRESSIONS_SCHEMA) and the policy's suite. A suite with ``frame: impressions`` runs on the same
    impressions frame; a ``served`` suite on ``served_batch_to_frame(batches)`` (the same requests as
    ServedBatch objects). One report: it succeeds only if every expectation of both does."""
    from stagegate.ports import IMPRESSIONS_SCHEMA

    name, specs = load_suite(suite_path)
    frame = impressions_frame(table)
    own = schema_specs(IMPRESSIONS_SCHEMA, table.column_names)
    if suite_frame(suite_path) == "impressions":
        return validate_specs(frame, name, own + specs, str(suite_path))
    schema_report = validate_specs(frame, "impressions_schema", own, "stagegate.ports.IMPRESSIONS_SCHEMA")
    served = validate_specs(served_batch_to_frame(batches), name, specs, str(suite_path))
    return ExpectationReport(
        suite_name=f"{schema_report.suite_name}+{served.suite_name}",
        suite_path=str(suite_path),
        success=schema_report.success and served.success,
        n_rows=served.n_rows,
        rows=schema_report.rows + served.rows,
    )


# --------------------------------------------------------------------------------------------------------


def _ephemeral_context() -> Any:
    """A fresh in-memory GX context with its "Calculating Metrics" progress bars off."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _names(codes: np.ndarray, names: Sequence[str]) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    table = np.array([*names, None], dtype=object)
    ok = (codes >= 0) & (codes < len(names))
    return table[np.where(ok, codes, len(names))]


def _class_name(name: str) -> str:
    """Accept ``expect_column_to_exist`` as well as ``ExpectColumnToExist``."""
    if re.fullmatch(r"[a-z0-9_]+", name):
        return "".join(part.capitalize() for part in name.split("_"))
    return name


def _exception_message(info: Any) -> str | None:
    """GX reports exceptions either flat or keyed by metric id; find the first message."""
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception raised")
    for value in info.values():
        msg = _exception_message(value)
        if msg:
            return msg
    return None


def _row(r: Any) -> ExpectationRow:
    cfg = r.expectation_config
    kwargs = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
    res = dict(r.result or {})
    exc = _exception_message(r.exception_info)
    return ExpectationRow(
        expectation=_class_name(str(cfg.type)),
        kwargs=_json_safe(kwargs),
        success=bool(r.success) and exc is None,
        unexpected_count=_int_or_none(res.get("unexpected_count")),
        unexpected_percent=_float_or_none(res.get("unexpected_percent")),
        element_count=_int_or_none(res.get("element_count")),
        observed_value=_json_safe(res.get("observed_value")),
        partial_unexpected=_json_safe(list(res.get("partial_unexpected_list") or [])[:20]),
        exception=exc,
    )


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _float_or_none(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _json_safe(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | np.ndarray):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)
