"""Where a traffic stage's look loop stands, as the ledger keeps it, and the loop state rebuilt from it.

The checkpoint (the ``checkpoint`` JSON of the promotion's ledger row) is written after every step entered
and every look (flows.stages.runner ``Parts.checkpoint``), and when a look is deferred:

    {"version": 1, "stage": "canary", "step_index": 1, "step_start": "2026-...+00:00", "looks_done": 2,
     "total_looks": 5, "streaks": {"sequential:revenue": 0},
     "trail": [{"step_index": 0, "step_start": "...", "number": 1, "due": "..."}, ...],
     "held": null, "resume_at": null}

It holds no evidence: the evidence history of the earlier looks (what sequential gates need) is measured
again through the MetricSource port over the same windows (``trail``), which gives the same evidence as long
as the metric store is append-only in event time (an event that arrives after its look was judged is seen
by the rebuilt history and was not by the original; the sequential gates stay valid, the numbers may move).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from flows.stages.runner import LoopState, Plan, TrailLook, expected_arms, look_evidence, look_window
from stagegate.evidence import Evidence
from stagegate.ports import Measurement, Window

VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (names the promotion and what is wrong)."""


def to_checkpoint(
    stage: str, state: LoopState, *, held: str | None = None, resume_at: datetime | None = None
) -> dict[str, Any]:
    """The JSON the ledger keeps for ``state`` of ``stage``."""
    return {
        "version": VERSION,
        "stage": stage,
        "step_index": state.step_index,
        "step_start": None if state.step_start is None else state.step_start.isoformat(),
        "looks_done": state.looks_done,
        "total_looks": state.total_looks,
        "streaks": {str(k): int(v) for k, v in state.streaks.items()},
        "trail": [
            {
                "step_index": t.step_index,
                "step_start": t.step_start.isoformat(),
                "number": t.number,
                "due": t.due.isoformat(),
            }
            for t in state.trail
        ],
        "held": held,
        "resume_at": None if resume_at is None else resume_at.isoformat(),
    }


def _when(value: Any, where: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        raise CheckpointError(f"checkpoint {where}: {value!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise CheckpointError(f"checkpoint {where}: {value!r} has no time zone")
    return at


def restore_state(
    plan: Plan, data: Mapping[str, Any], measure: Callable[[Window, Sequence[str]], Measurement]
) -> LoopState:
    """The loop state of ``data`` (a checkpoint of ``plan``'s stage), its evidence history measured again.

    Raises CheckpointError when the checkpoint is not of this stage, names a step the plan does not have,
    or is malformed; a measurement that fails raises (the caller retries the resume later)."""
    if data.get("version") != VERSION:
        raise CheckpointError(f"checkpoint version {data.get('version')!r}, expected {VERSION}")
    if data.get("stage") != plan.stage:
        raise CheckpointError(f"checkpoint of stage {data.get('stage')!r}, not {plan.stage!r}")
    try:
        step_index, looks_done, total = (int(data[k]) for k in ("step_index", "looks_done", "total_looks"))
        streaks = {str(k): int(v) for k, v in dict(data.get("streaks") or {}).items()}
        trail = tuple(
            TrailLook(
                int(t["step_index"]),
                _when(t["step_start"], "trail.step_start"),
                int(t["number"]),
                _when(t["due"], "trail.due"),
            )
            for t in data.get("trail") or ()
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint is malformed: {exc!r}") from None
    if not 0 <= step_index <= len(plan.steps) or any(not 0 <= t.step_index < len(plan.steps) for t in trail):
        raise CheckpointError(
            f"checkpoint names a step the {plan.stage} plan ({len(plan.steps)} steps) lacks"
        )
    start = data.get("step_start")
    history: tuple[Evidence, ...] = ()
    for t in trail:
        step = plan.steps[t.step_index]
        window = look_window(plan, step, t.step_start, t.due)
        measurement = measure(window, expected_arms(step.weight, plan.mirrored))
        history = (*history, look_evidence(plan, step, measurement, t.number, history))
    state = LoopState(
        step_index=step_index,
        looks_done=looks_done,
        step_start=None if start is None else _when(start, "step_start"),
        history=history,
        streaks=streaks,
        total_looks=total,
        trail=trail,
    )
    return replace(state, looks_done=0) if state.step_start is None else state
