"""A signal that Prefect's task engine reports as an error is still the signal (flows.interrupts): the
promotion ends as interrupted (rolled back, exit 130/143), and no stage logs a traceback for it."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from prefect.exceptions import TerminationSignal

from flows.interrupts import interrupt_behind, surface_interrupts


def _crash_handler_error() -> BaseException:
    """What Prefect 3.9's task engine raises when SIGTERM arrives while it creates a task run."""
    try:
        try:
            raise TerminationSignal(signal=15)
        except TerminationSignal:
            raise ValueError("Task run is not set") from None
    except ValueError as exc:
        return exc


def test_an_error_raised_while_handling_a_signal_is_the_signal() -> None:
    error = _crash_handler_error()
    assert error.__cause__ is None and isinstance(error.__context__, TerminationSignal)
    assert isinstance(interrupt_behind(error), TerminationSignal)
    assert interrupt_behind(ValueError("a plain failure")) is None
    try:
        raise RuntimeError("stage failed") from KeyboardInterrupt()
    except RuntimeError as exc:
        assert isinstance(interrupt_behind(exc), KeyboardInterrupt)


def test_a_wrapped_stage_keeps_its_signature_and_its_plain_errors() -> None:
    def stage(ctx: str, resume: object = None) -> str:
        raise KeyError(ctx)

    wrapped = surface_interrupts(stage)
    # Prefect binds and validates parameters by the signature, with the annotations resolved here
    assert inspect.signature(wrapped) == inspect.signature(stage, eval_str=True)
    assert typing.get_type_hints(wrapped) == {"ctx": str, "resume": object, "return": str}
    with pytest.raises(KeyError):
        wrapped("ctx")


_STAGE_SCRIPT = """
from prefect import flow
from tests.core.test_interrupts import _crash_handler_error
from flows.interrupts import surface_interrupts

@flow(name="hidden-signal-stage")
@surface_interrupts
def stage() -> None:
    raise _crash_handler_error()

stage()
"""


def test_a_stage_flow_that_meets_the_hidden_signal_crashes_without_a_traceback(tmp_path: Path) -> None:
    """Through a real flow run (its own process: Prefect ends a process whose flow met SIGTERM by the
    signal itself, as a shell sees a stopped `stagegate promote`)."""
    log = tmp_path / "stage.log"
    with log.open("w") as out:  # a file, not a pipe: the flow's temporary Prefect server outlives it
        done = subprocess.Popen(
            [sys.executable, "-c", _STAGE_SCRIPT],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            env={
                **os.environ,
                "PREFECT_LOGGING_LEVEL": "INFO",
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            },
            start_new_session=True,
        )
        try:
            done.wait(timeout=120)
        finally:
            os.killpg(done.pid, signal.SIGKILL)  # with the temporary server the signal left orphaned
    output = log.read_text()
    assert done.returncode == -signal.SIGTERM, (done.returncode, output[-3000:])
    assert "Crash detected" in output, output[-3000:]
    assert "Traceback" not in output and "Task run is not set" not in output, output[-3000:]
