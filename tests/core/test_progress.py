"""Long CLI steps say they are under way and how long they took, on stderr (stdout stays the answer)."""

from __future__ import annotations

import pytest

from stagegate.progress import progress


def test_a_step_says_it_started_and_when_it_ended(capsys: pytest.CaptureFixture[str]) -> None:
    with progress("building the world"):
        print("the answer")
    out, err = capsys.readouterr()
    assert out == "the answer\n"
    lines = err.splitlines()
    assert lines[0] == "building the world..." and lines[-1].startswith("building the world: done in ")


def test_a_failed_step_says_so_and_raises(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), progress("training"):
        raise RuntimeError("boom")
    assert "training: failed after" in capsys.readouterr().err
