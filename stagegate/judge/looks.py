"""One call of the judge: measure the rollout's window, judge it with its earlier looks, remember it.

Contract of :meth:`Judge.look`:

- The window is ``[start, end)`` of the rollout's promotion and stage (and canary step, if given). ``end``
  is the caller's, or the judge's clock rounded down to the look grid (``look_every``), so a retry within
  one slot measures the same window.
- A call whose window has not moved past the last counted look, or whose measurement of the same step
  and split has no request more than that look's (no new data), is **not** a new look: the stored answer
  is returned with ``"repeated": true``. Only a new look is counted, and its evidence stored. A repeated
  call that reads the look at the deadline (``deadline``) when the stored answer did not, or the other
  way round, gets the stored evidence judged again under its reading (still not a new look).
- The gates run on the new evidence with every earlier look of the rollout's revision as
  ``Evidence.history`` (from the state database, so a restart changes nothing), and the stage's decision
  rule is applied with the error streaks carried from earlier calls.
- A failed measurement (MeasurementError, or any exception of the MetricSource: fail closed) is never a
  look and never a pass: every gate is ERROR, the streaks grow by one (once per window: a retry of the
  same failed window is not counted twice), and the answer's verdict is ERROR.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stagegate.decision import Decision, LookDecision
from stagegate.evidence import CANDIDATE, CHAMPION
from stagegate.judge.config import JudgeSetup
from stagegate.judge.state import JudgeState, LookConflict, RolloutState, StoredLook, pack_arms
from stagegate.judge.verdicts import JudgeVerdict, gate_row, judge_verdict
from stagegate.policy.gates import judge_look
from stagegate.ports import Measurement, MeasurementError, Window


class BadLookRequest(ValueError):
    """The request cannot name a window (an empty or inverted span, a bad weight): HTTP 400."""


@dataclass(frozen=True)
class LookRequest:
    """Which rollout asks, and which traffic to judge.

    ``tool`` and ``namespace``/``name`` key the state (``argo:ns/name``); ``revision`` is the canary's
    identity (Argo's pod-template hash, Flagger's checksum): a new revision is a new canary. ``promotion``
    is the MetricSource's promotion id (default ``<namespace>.<name>``); ``step`` the canary step (None:
    every step); ``weight`` the candidate's share in percent (the allocation the SRM gate tests and the
    sequential gates group ramp steps by); ``deadline`` marks the tool's last look of the step (Argo's
    verdict metric, Flagger's confirm-promotion): the stage's rule then reads it at its deadline (an
    INCONCLUSIVE acts as its gate's ``on_inconclusive``; risk_aware ramps an earlier step or holds the
    last one).
    """

    tool: str
    namespace: str
    name: str
    revision: str = ""
    promotion: str | None = None
    step: int | None = None
    weight: float | None = None
    start: datetime | None = None
    end: datetime | None = None
    deadline: bool = False

    @property
    def key(self) -> str:
        return f"{self.tool}:{self.namespace}/{self.name}"

    @property
    def promotion_id(self) -> str:
        return self.promotion or f"{self.namespace}.{self.name}"

    def allocation(self) -> dict[str, float]:
        if self.weight is None:
            return {}
        if not 0.0 < self.weight < 100.0:
            raise BadLookRequest(f"weight must be a percentage strictly between 0 and 100, got {self.weight}")
        share = self.weight / 100.0
        return {CHAMPION: 1.0 - share, CANDIDATE: share}


@dataclass(frozen=True)
class LookResult:
    verdict: JudgeVerdict
    decision: Decision
    answer: dict


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Judge:
    """The judge behind the HTTP endpoints (one per server process)."""

    def __init__(
        self, setup: JudgeSetup, state: JudgeState, now: Callable[[], datetime] = wall_clock
    ) -> None:
        self.setup = setup
        self.state = state
        self.now = now
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def window_end(self, request: LookRequest) -> datetime:
        if request.end is not None:
            return request.end
        every = self.setup.look_every.total_seconds()
        stamp = math.floor(self.now().timestamp() / every) * every
        return datetime.fromtimestamp(stamp, UTC)

    def look(self, request: LookRequest) -> LookResult:
        """Judge one call (module docstring)."""
        allocation = request.allocation()
        end = self.window_end(request)
        try:
            window = Window(request.promotion_id, self.setup.stage_name, request.step, request.start, end)
        except ValueError as exc:
            raise BadLookRequest(str(exc)) from exc
        with self._lock(request.key):
            state = self.state.load(request.key, request.revision, self.now())
            last = state.last
            if last is not None and end <= last.window_end:
                return self._replay(request, state, end)
            try:
                measurement = self.setup.metrics.measure(window)
            except MeasurementError as exc:
                return self._failed(request, state, window, str(exc))
            except Exception as exc:  # any failure of the source is a failed measurement: fail closed
                return self._failed(request, state, window, f"metric source failed: {exc!r}")
            if (
                last is not None
                and _same_window(last, window, allocation)
                and (measurement.n_requests <= last.n_requests)
            ):
                return self._replay(request, state, end)  # the window moved, no new request arrived
            return self._judge(request, state, window, measurement, allocation)

    def open_first_step(self, request: LookRequest, result: LookResult) -> bool:
        """Whether Flagger's confirm-traffic-increase may let an *unmeasured* look through: only when no
        look of this revision was ever counted (the canary has had no traffic to measure: Flagger asks
        before its first step too) and only once per revision, whichever judge process answers. Without
        it the first step could never start; with the once-only rule a source that never measures halts
        the canary at its first step (Flagger's threshold then rolls it back), never at a bigger one."""
        if result.verdict is not JudgeVerdict.ERROR or result.answer.get("look") != 0:
            return False
        return self.state.open_first_step(request.key, request.revision)

    def _judge(
        self,
        request: LookRequest,
        state: RolloutState,
        window: Window,
        measurement: Measurement,
        allocation: dict[str, float],
    ) -> LookResult:
        stage = self.setup.stage_name
        number = len(state.looks) + 1
        history = tuple(look.evidence(stage) for look in state.looks)
        evidence = measurement.evidence(allocation, look=number, history=history)
        decision = self._decide(evidence, request, measurement.n_units(CANDIDATE), state.error_streaks)
        verdict = judge_verdict(decision, measurement_failed=False)
        answer = self._answer(request, state, window, verdict, decision, number, error=None)
        answer["error_streaks_before"] = dict(state.error_streaks)
        answer["n_requests"] = int(measurement.n_requests)
        answer["users"] = {arm: int(measurement.n_units(arm)) for arm in measurement.arms}
        answer["allocation"] = allocation
        look = StoredLook(
            number=number,
            step=window.step,
            window_start=window.start,
            window_end=window.end,  # type: ignore[arg-type]
            n_requests=int(measurement.n_requests),
            allocation=allocation,
            evidence_blob=pack_arms(measurement.arms),
            answer=answer,
        )
        try:
            self.state.record_look(state, look, decision.error_streaks)
        except LookConflict:  # another judge process counted this look first: theirs stands
            fresh = self.state.load(request.key, request.revision, self.now())
            return self._replay(request, fresh, window.end)  # type: ignore[arg-type]
        return LookResult(verdict, decision.decision, answer)

    def _decide(
        self, evidence: Any, request: LookRequest, candidates: int, streaks: Mapping[str, int]
    ) -> LookDecision:
        """The gates on ``evidence`` and the stage's rule. The deadline is the tool's (Argo's count, Flagger's
        iterations): only a look the caller marks ``deadline`` is read at the deadline."""
        min_users = self.setup.min_users(request.step)
        return judge_look(
            self.setup.gates,
            evidence,
            at_deadline=request.deadline,
            enough_samples=min_users is None or candidates >= min_users,
            last_step=self.setup.last_step(request.step),
            error_streaks=streaks,
        )

    def _replay(self, request: LookRequest, state: RolloutState, end: datetime) -> LookResult:
        """A call that is not a new look: the stored answer of the latest counted look whose window ends by
        ``end`` (the first look if the caller asks for an earlier window than any counted). When the caller
        reads it at the deadline and the stored answer was not (or the other way round), the stored
        evidence is judged again under that reading; nothing is counted or stored."""
        index = 0
        for i, look in enumerate(state.looks):
            if look.window_end <= end:
                index = i
        stored = state.looks[index]
        answer = dict(stored.answer)
        answer["repeated"] = True
        if bool(answer.get("at_deadline")) == request.deadline:
            return LookResult(JudgeVerdict(answer["verdict"]), Decision(answer["decision"]), answer)
        stage = self.setup.stage_name
        history = tuple(look.evidence(stage) for look in state.looks[:index])
        evidence = dataclasses.replace(stored.evidence(stage), history=history)
        step_request = dataclasses.replace(request, step=stored.step)
        candidates = int(answer.get("users", {}).get(CANDIDATE, 0))
        decision = self._decide(evidence, step_request, candidates, answer.get("error_streaks_before", {}))
        verdict = judge_verdict(decision, measurement_failed=False)
        answer.update(
            verdict=verdict.value,
            decision=decision.decision.value,
            reason=decision.reason,
            at_deadline=request.deadline,
            gates=[gate_row(j.verdict, j.action) for j in decision.judged],
        )
        return LookResult(verdict, decision.decision, answer)

    def _failed(self, request: LookRequest, state: RolloutState, window: Window, message: str) -> LookResult:
        end = window.end
        assert end is not None
        streaks = dict(state.error_streaks)
        if state.last_error_end == end:
            # A retry of the window that already failed: the streaks already count it once.
            streaks = {key: max(0, count - 1) for key, count in streaks.items()}
        decision = judge_look(
            self.setup.gates,
            None,
            at_deadline=request.deadline,
            last_step=self.setup.last_step(request.step),
            error_streaks=streaks,
            measurement_error=message,
        )
        self.state.record_error(state, decision.error_streaks, end)
        answer = self._answer(
            request, state, window, JudgeVerdict.ERROR, decision, len(state.looks), error=message
        )
        return LookResult(JudgeVerdict.ERROR, decision.decision, answer)

    def _answer(
        self,
        request: LookRequest,
        state: RolloutState,
        window: Window,
        verdict: JudgeVerdict,
        decision: LookDecision,
        number: int,
        *,
        error: str | None,
    ) -> dict:
        return {
            "verdict": verdict.value,
            "decision": decision.decision.value,
            "reason": decision.reason,
            "look": number,
            "repeated": False,
            "rollout": {
                "tool": request.tool,
                "namespace": request.namespace,
                "name": request.name,
                "revision": state.revision,
            },
            "stage": self.setup.stage_name,
            "rule": self.setup.gates.rule,
            "at_deadline": request.deadline,
            "window": {
                "promotion": window.promotion_id,
                "step": window.step,
                "start": window.start.isoformat() if window.start else None,
                "end": window.end.isoformat() if window.end else None,
            },
            "gates": [gate_row(j.verdict, j.action) for j in decision.judged],
            "error_streaks": dict(decision.error_streaks),
            "error": error,
            "judged_at": self.now().isoformat(),
        }


def _same_window(last: StoredLook, window: Window, allocation: dict[str, float]) -> bool:
    """The same traffic as the last look, only later: same step, start and split (a new canary step's
    first window may hold fewer requests than the previous step's last one, and is still new)."""
    return last.step == window.step and last.window_start == window.start and last.allocation == allocation
