"""Great Expectations validation of the evaluation data, with the project's suite file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stagegate.evaluation.expectations import (
    FRAME_COLUMNS,
    SuiteFormatError,
    load_suite,
    served_batch_to_frame,
    validate_frame,
    validate_served,
)

from .synth import random_log

SUITE = Path(__file__).resolve().parents[2] / "expectations" / "eval_events.yaml"


@pytest.fixture(scope="module")
def log():
    served, _ = random_log(np.random.default_rng(0), 1200, 300, 60)
    return served


@pytest.fixture(scope="module")
def frame(log) -> pd.DataFrame:
    return served_batch_to_frame(log)


def _failed(report) -> dict[str, str]:
    return {r.label(): r.reason for r in report.failures}


def test_frame_shape(log, frame) -> None:
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert len(frame) == log.n
    assert frame["n_clicks"].sum() == np.asarray(log.clicks).sum()
    assert set(frame["device"]) <= {"desktop", "mobile"}
    assert (frame["min_pscore"] <= frame["max_pscore"]).all()


def test_valid_data_passes_without_progress_bars(frame, capfd) -> None:
    report = validate_frame(frame, SUITE)
    assert report.success, report.summary()
    assert report.n_rows == len(frame) and len(report.rows) == len(load_suite(SUITE)[1])
    assert "Calculating Metrics" not in capfd.readouterr().err
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["success"] is True and payload["n_failed"] == 0


def test_nan_revenue_fails(frame) -> None:
    df = frame.copy()
    df.loc[5, "revenue"] = np.nan
    report = validate_frame(df, SUITE)
    assert not report.success
    failed = _failed(report)
    assert list(failed) == ["ExpectColumnValuesToNotBeNull(column='revenue')"]
    assert "1 of 1200 values unexpected" in failed["ExpectColumnValuesToNotBeNull(column='revenue')"]
    json.dumps(report.to_dict())  # the NaN example is JSON-safe


@pytest.mark.parametrize(("bad", "column"), [(0.0, "min_pscore"), (1.5, "max_pscore")])
def test_propensity_outside_unit_interval_fails(log, bad: float, column: str) -> None:
    p = np.array(log.pscore)
    p[7, 2] = bad
    report = validate_served(replace(log, pscore=p), SUITE)
    assert not report.success
    (row,) = report.failures
    assert row.kwargs["column"] == column and row.unexpected_count == 1
    assert row.partial_unexpected == [bad]


def test_missing_column_fails_naming_it(frame) -> None:
    report = validate_frame(frame.drop(columns=["latency_ms"]), SUITE)
    assert not report.success
    failed = _failed(report)
    assert failed["ExpectColumnToExist(column='latency_ms')"] == "column 'latency_ms' is missing"
    assert "does not exist" in failed["ExpectColumnValuesToNotBeNull(column='latency_ms')"]
    assert "latency_ms" in report.summary()
    assert all("latency_ms" in label or "column_set" in label for label in failed)


def test_other_data_faults(frame) -> None:
    df = frame.copy()
    df.loc[0, "hour"] = 24
    df.loc[1, "n_purchases"] = df.loc[1, "n_clicks"] + 1
    df.loc[2, "device"] = None
    df.loc[3, "request_id"] = df.loc[4, "request_id"]
    failed = _failed(validate_frame(df, SUITE))
    assert {
        "ExpectColumnValuesToBeBetween(column='hour', min_value=0.0, max_value=23.0)",
        "ExpectColumnPairValuesAToBeGreaterThanB(column_A='n_clicks', column_B='n_purchases', or_equal=True)",
        "ExpectColumnValuesToNotBeNull(column='device')",
        "ExpectColumnValuesToBeUnique(column='request_id')",
    } <= set(failed)
    small = validate_frame(frame.head(10), SUITE)
    assert "observed 10" in _failed(small)["ExpectTableRowCountToBeBetween(min_value=1000)"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("expectations: [", "not valid YAML"),
        ("expectations: []", "non-empty list"),
        ("- kwargs: {column: a}", "entry 0: missing 'expectation'"),
        ("- {expectation: ExpectColumnToExist, kwargs: {column: a}, colour: red}", "entry 0: unknown keys"),
        (
            "- {expectation: ExpectColumnToExist, kwargs: {column: a}}\n- {expectation: ExpectMagic}",
            "entry 1: unknown expectation 'ExpectMagic'",
        ),
        (
            "- {expectation: ExpectColumnValuesToBeBetween, kwargs: {colum: a, min_value: 0}}",
            "entry 0 (ExpectColumnValuesToBeBetween): invalid kwargs",
        ),
        ("- {expectation: ExpectColumnToExist, kwargs: [a]}", "'kwargs' must be a mapping"),
    ],
)
def test_malformed_suite_names_file_and_entry(tmp_path: Path, frame, text: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(SuiteFormatError, match=r"broken\.yaml") as info:
        validate_frame(frame, path)
    assert message in str(info.value)


def test_missing_suite_file_and_snake_case_names(tmp_path: Path, frame) -> None:
    with pytest.raises(SuiteFormatError, match="cannot read"):
        validate_frame(frame, tmp_path / "nope.yaml")
    path = tmp_path / "snake.yaml"
    path.write_text("- {expectation: expect_column_values_to_not_be_null, columns: [revenue, hour]}\n")
    report = validate_frame(frame, path)
    assert report.success and report.suite_name == "snake" and len(report.rows) == 2
