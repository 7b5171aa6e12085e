"""One look loop for every stage that watches live traffic: shadow, canary, rollout, the guardrail monitor
(and the benchmarks that replay them). No Prefect in here: every collaborator is passed in.

A stage is a :class:`Plan`: its steps (shadow and rollout have one, the canary one per ramp step), the look
interval, whether traffic is mirrored. For every look of a step the runner

1. schedules it from the step's start alone (:func:`stagegate.ports.next_look`; the look that reaches the
   step's deadline is due *at* the deadline, never after it);
2. waits for it through the Clock port (``clock.wait(look)``: the simulated clock serves the world up to
   the due time, the wall clock blocks at most its ``max_block_seconds``). A wait that is not ready raises
   :class:`ResumeLater`: nothing is judged and nobody sleeps;
3. measures the step's cumulative window ``[step start, due)`` through the MetricSource port
   (``measure(window, expect)``, the arms with users expected); a measurement that fails becomes an ERROR
   of every gate, counted against each gate's ``consecutive_error_limit`` (the streaks are carried from look
   to look, across steps), so one flaky query never acts;
4. judges the look with the evidence history of every earlier look of the stage (sequential gates), the
   step's deadline and minimum sample, and acts on the decision: look again, next step, hold, roll back.

A HOLD returns with the :class:`LoopState` to resume from: an approved hold continues the *same* step with
its next look, or, when the hold came at the step's deadline, the next step (the last step's approved
hold ends the stage). Nothing here moves traffic except through ``enter_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from stagegate.decision import Decision, LookDecision
from stagegate.evidence import CANDIDATE, CHAMPION, Evidence
from stagegate.ports import Look, Measurement, Wait, Window, next_look

F = TypeVar("F", bound=Any)  # a Prefect Flow


class LookClock(Protocol):
    """The part of the Clock port the runner uses."""

    def now(self) -> datetime: ...

    def wait(self, look: Look) -> Wait: ...


@dataclass(frozen=True)
class Step:
    """One step of a stage.

    ``number`` is the step in the ledger (0 for shadow, rollout and the monitor; 1, 2, ... for canary
    steps); ``weight`` the candidate's share of users (0 for shadow). ``deadline_hours`` None means no
    deadline (the monitor looks until it is told to stop). ``min_samples`` is the sample the step needs
    before it may advance (candidate users, or requests for a ``requests``-counted plan). With
    ``judge_early`` False a look is judged only once the sample is reached or at the deadline (shadow: one
    judgement on enough mirrored requests). With ``bake`` True the step never advances before its deadline
    (rollout: the bake runs its full time).
    """

    number: int
    weight: float
    label: str = ""
    deadline_hours: float | None = None
    min_samples: int = 1
    judge_early: bool = True
    bake: bool = False
    last: bool = True


@dataclass(frozen=True)
class Plan:
    """A stage's looks: ``steps`` in order, one look every ``every``.

    ``sample`` says what ``Step.min_samples`` counts: ``candidate_units`` (users on the candidate) or
    ``requests`` (mirrored requests). ``whole_step`` measures each look from the start of the step's data
    (open window start) rather than from the moment this runner entered it: the monitor joins a step that
    began before it. ``max_looks`` bounds the loop (the monitor). A ``watch`` plan (the monitor) ends only
    on a ROLLBACK (or when told to stop): a hold or an advance is already a human's to decide.
    """

    promotion_id: str
    stage: str
    steps: tuple[Step, ...]
    every: timedelta
    mirrored: bool = False
    sample: Literal["candidate_units", "requests"] = "candidate_units"
    whole_step: bool = False
    max_looks: int | None = None
    watch: bool = False


@dataclass(frozen=True)
class TrailLook:
    """Where one look of ``history`` came from: its step (index into ``Plan.steps``), the step's start, the
    look's number and due time. Enough to measure its window again (flows.stages.checkpoint)."""

    step_index: int
    step_start: datetime
    number: int
    due: datetime


@dataclass(frozen=True)
class LoopState:
    """Where the loop stands: the step (index into ``Plan.steps``), the looks done in it, its start, the
    evidence of every earlier look (and, in ``trail``, the window each came from), the consecutive-error
    streaks, the looks done in the whole stage."""

    step_index: int = 0
    looks_done: int = 0
    step_start: datetime | None = None
    history: tuple[Evidence, ...] = ()
    streaks: Mapping[str, int] = field(default_factory=dict)
    total_looks: int = 0
    trail: tuple[TrailLook, ...] = ()


@dataclass(frozen=True)
class LookRecord:
    """What ``after_look`` is told about one look (for metrics and logs)."""

    step: Step
    look: Look
    total_looks: int
    candidate_units: int
    mixed_units: int
    requests: int
    judged: bool
    decision: Decision | None
    error: str | None


@dataclass(frozen=True)
class LoopResult:
    """The loop's outcome. ``resume`` is set on a HOLD: where an approved hold continues (see module doc).
    ``decision`` is CONTINUE only when the loop was told to stop (``stop_reason``) or ran out of looks."""

    decision: Decision
    reason: str
    looks: int
    resume: LoopState | None = None
    last: LookDecision | None = None


class ResumeLater(RuntimeError):
    """The next look is due later than the clock may block: judge nothing, sleep nowhere, resume then.

    ``look`` is the look to wait for again and ``state`` the loop's state to resume from (a resumed run
    rebuilds both from the ledger's checkpoint: flows.stages.checkpoint, flows.resume)."""

    def __init__(self, stage: str, look: Look, resume_at: datetime, state: LoopState) -> None:
        super().__init__(
            f"{stage} step {look.step} look {look.number} is due at {look.due.isoformat()}, later than the "
            f"clock may block: resume at {resume_at.isoformat()}"
        )
        self.stage, self.look, self.resume_at, self.state = stage, look, resume_at, state


#: judge(step=, look=, evidence=, at_deadline=, enough_samples=, last_step=, error_streaks=,
#: measurement_error=) -> LookDecision
Judge = Callable[..., LookDecision]


@dataclass
class Parts:
    """The collaborators of one run of the loop.

    - ``clock``: ``now()`` and ``wait(look)`` (the Clock port);
    - ``measure(window, expect)``: a Measurement (the MetricSource port, e.g. as a task with retries); any
      exception is a failed measurement;
    - ``judge``: one look judged (and persisted) by the stage's gates and rule;
    - ``enter_step(step, start)``: move traffic for a step (and record it) before its first look;
    - ``after_look(record)``: log what was seen;
    - ``stop()``: a reason to stop before the next look, or None (the monitor: the promotion stopped
      waiting for approval);
    - ``between_looks()``: called after a look that keeps the loop going (the monitor's pacing);
    - ``checkpoint(state, held)``: record where the loop stands, after a step is entered and after every
      look (the ledger's checkpoint, from which `stagegate resume` continues); ``held`` is the reason of a
      HOLD (the state is then where an approved hold continues), else None.
    """

    clock: LookClock
    measure: Callable[[Window, Sequence[str]], Measurement]
    judge: Judge
    enter_step: Callable[[Step, datetime], None] = lambda step, start: None
    after_look: Callable[[LookRecord], None] | None = None
    stop: Callable[[], str | None] | None = None
    between_looks: Callable[[], None] | None = None
    checkpoint: Callable[[LoopState, str | None], None] | None = None

    def save(self, state: LoopState, held: str | None = None) -> None:
        if self.checkpoint is not None:
            self.checkpoint(state, held)


def expected_arms(weight: float, mirrored: bool) -> tuple[str, ...]:
    """The arms that must have users: both when mirrored or split, only the one that serves otherwise."""
    if mirrored or 0.0 < weight < 1.0:
        return (CHAMPION, CANDIDATE)
    return (CANDIDATE,) if weight >= 1.0 else (CHAMPION,)


def schedule(plan: Plan, step: Step, state: LoopState) -> Look:
    """The step's next look: due ``every`` after the previous one, and at the deadline for the look that
    reaches it (the bake ends on time). Looks past the deadline (while a measurement error is tolerated)
    keep the regular schedule."""
    assert state.step_start is not None
    look = next_look(
        plan.promotion_id, plan.stage, step.number, state.step_start, plan.every, state.looks_done
    )
    if step.deadline_hours is not None:
        deadline = state.step_start + timedelta(hours=step.deadline_hours)
        previous_due = state.step_start + state.looks_done * plan.every
        if look.due > deadline and previous_due < deadline:
            look = replace(look, due=deadline)
    return look


def _at_deadline(step: Step, state: LoopState, look: Look) -> bool:
    if step.deadline_hours is None or state.step_start is None:
        return False
    return look.due >= state.step_start + timedelta(hours=step.deadline_hours)


def run_looks(plan: Plan, parts: Parts, resume: LoopState | None = None) -> LoopResult:
    """Run ``plan``'s steps and looks from ``resume`` (the start by default); see the module docstring."""
    state = resume or LoopState()
    last: LookDecision | None = None
    while state.step_index < len(plan.steps):
        step = plan.steps[state.step_index]
        if state.step_start is None:
            start = parts.clock.now()
            parts.enter_step(step, start)
            state = replace(state, step_start=start, looks_done=0)
            parts.save(state)
        while True:
            if plan.max_looks is not None and state.total_looks >= plan.max_looks:
                return LoopResult(Decision.CONTINUE, "max looks reached", state.total_looks, last=last)
            if parts.stop is not None and (why := parts.stop()) is not None:
                return LoopResult(Decision.CONTINUE, why, state.total_looks, last=last)
            look = schedule(plan, step, state)
            wait = parts.clock.wait(look)
            if not wait.ready:
                raise ResumeLater(plan.stage, look, wait.resume_at or look.due, state)
            result, state, record = _one_look(plan, parts, step, state, look)
            if parts.after_look is not None:
                parts.after_look(record)
            if result is None:  # not judged yet (sample not reached before the deadline)
                parts.save(state)
                continue
            last = result
            at_deadline = _at_deadline(step, state, look)
            decision = result.decision
            if decision is Decision.ADVANCE and step.bake and not at_deadline:
                decision = Decision.CONTINUE  # a bake runs its full time
            if plan.watch and decision is not Decision.ROLLBACK:
                decision = Decision.CONTINUE
            if decision is Decision.CONTINUE:
                parts.save(state)
                if parts.between_looks is not None:
                    parts.between_looks()
                continue
            reason = f"{step.label}: {result.reason}" if step.label else result.reason
            if decision is Decision.ADVANCE:
                state = replace(state, step_index=state.step_index + 1, step_start=None, looks_done=0)
                parts.save(state)
                break
            if decision is Decision.HOLD:
                # An approved hold continues where the loop stands: the same step's next look, or the next
                # step when the step's time is up (asking again at once would only repeat the hold).
                after = (
                    replace(state, step_index=state.step_index + 1, step_start=None, looks_done=0)
                    if at_deadline
                    else state
                )
                parts.save(after, held=reason)
                return LoopResult(Decision.HOLD, reason, state.total_looks, resume=after, last=result)
            return LoopResult(decision, reason, state.total_looks, last=result)
    n = len(plan.steps)
    reason = (
        (last.reason if last is not None else "nothing left to judge") if n == 1 else f"all {n} steps passed"
    )
    return LoopResult(Decision.ADVANCE, reason, state.total_looks, last=last)


def _one_look(
    plan: Plan, parts: Parts, step: Step, state: LoopState, look: Look
) -> tuple[LookDecision | None, LoopState, LookRecord]:
    """Measure and (unless the step waits for its sample) judge one look; the new state."""
    assert state.step_start is not None
    evidence: Evidence | None = None
    error: str | None = None
    units = mixed = requests = 0
    try:
        measurement = parts.measure(
            look_window(plan, step, state.step_start, look.due), expected_arms(step.weight, plan.mirrored)
        )
        evidence = look_evidence(plan, step, measurement, look.number, state.history)
        units, mixed, requests = (
            measurement.n_units(CANDIDATE),
            measurement.mixed_units,
            measurement.n_requests,
        )
    except Exception as exc:  # a failed measurement: every gate says ERROR for this look
        error = f"{type(exc).__name__}: {exc}"
    samples = requests if plan.sample == "requests" else units
    enough = samples >= step.min_samples
    at_deadline = _at_deadline(step, state, look)
    state = replace(state, looks_done=state.looks_done + 1, total_looks=state.total_looks + 1)
    judged = error is not None or enough or at_deadline or step.judge_early
    result: LookDecision | None = None
    if judged:
        result = parts.judge(
            step=step.number,
            look=look.number,
            evidence=evidence,
            at_deadline=at_deadline,
            enough_samples=enough,
            last_step=step.last,
            error_streaks=dict(state.streaks),
            measurement_error=error,
        )
        state = replace(state, streaks=dict(result.error_streaks))
    if evidence is not None and judged:  # earlier looks keep only what sequential gates need
        trail = TrailLook(state.step_index, state.step_start, look.number, look.due)
        state = replace(state, history=(*state.history, evidence), trail=(*state.trail, trail))
    record = LookRecord(
        step,
        look,
        state.total_looks,
        units,
        mixed,
        requests,
        judged,
        result.decision if result else None,
        error,
    )
    return result, state, record


def look_window(plan: Plan, step: Step, step_start: datetime, due: datetime) -> Window:
    """The window a look of ``step`` measures: the step's data up to the look's due time."""
    return Window(
        plan.promotion_id,
        plan.stage,
        step.number,
        None if plan.whole_step else step_start,
        due,
        plan.mirrored,
    )


def look_evidence(
    plan: Plan, step: Step, measurement: Measurement, look: int, history: tuple[Evidence, ...]
) -> Evidence:
    """A look's evidence from its measurement: the step's configured allocation, the earlier looks."""
    allocation = None if plan.mirrored else {CHAMPION: 1.0 - step.weight, CANDIDATE: step.weight}
    return measurement.evidence(allocation, look, history)


def summarised_resume(stage_flow: F) -> F:
    """Have Prefect record a summary of a stage flow's ``resume`` parameter instead of the whole of it.

    Prefect stores every flow run's parameters as JSON (``Flow.serialize_parameters``: fastapi's
    ``jsonable_encoder``, which deep-copies a dataclass and then walks it). A held traffic stage's
    ``resume`` is a :class:`LoopState` carrying the evidence of every earlier look: encoding it when an
    approved hold resumed the canary (the README's context_aware, 18 looks) ran for minutes and grew the
    process past 17 GB. The flow itself still receives the object; only what the server records changes.
    """
    encode = stage_flow.serialize_parameters

    def serialize_parameters(parameters: dict[str, object]) -> dict[str, object]:
        if not isinstance(parameters.get("resume"), LoopState):
            return encode(parameters)
        state = parameters["resume"]
        assert isinstance(state, LoopState)
        out = encode({k: v for k, v in parameters.items() if k != "resume"})
        out["resume"] = {
            "step_index": state.step_index,
            "looks_done": state.looks_done,
            "total_looks": state.total_looks,
            "step_start": state.step_start.isoformat() if state.step_start else None,
            "history": f"<{len(state.history)} looks of evidence, not recorded>",
        }
        return out

    stage_flow.serialize_parameters = serialize_parameters  # type: ignore[method-assign]
    return stage_flow
