"""A resumed traffic stage's flow run records a summary of its ``resume`` state, not the evidence of every
earlier look: encoding that as JSON grew the README's promotion past 17 GB when an approved hold resumed
the canary (flows/stages/runner.py summarised_resume)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np

from flows.stages.canary import canary_stage
from flows.stages.rollout import rollout_stage
from flows.stages.runner import LoopState
from flows.stages.shadow import shadow_stage


def test_the_resume_state_is_recorded_as_a_summary() -> None:
    heavy = tuple(np.random.default_rng(i).random(1_000_000) for i in range(18))
    state = LoopState(step_index=2, looks_done=5, step_start=datetime(2026, 1, 1, tzinfo=UTC), history=heavy)
    for stage in (shadow_stage, canary_stage, rollout_stage):
        started = time.monotonic()
        out = stage.serialize_parameters({"ctx": {"model": "m"}, "resume": state})
        assert time.monotonic() - started < 1.0
        assert out["ctx"] == {"model": "m"}
        assert out["resume"]["step_index"] == 2 and out["resume"]["looks_done"] == 5
        assert out["resume"]["history"] == "<18 looks of evidence, not recorded>"
        assert stage.serialize_parameters({"ctx": {"model": "m"}, "resume": None}) == {
            "ctx": {"model": "m"},
            "resume": None,
        }
