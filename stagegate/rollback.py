"""Rolling a promotion back: traffic first, then the ledger and the registry, then read it all back.

The one procedure behind the flow's ``roll-back`` task, the guardrail monitor and ``stagegate reconcile``.
It needs only what the promotion's context (or its ledger row) says: the model, the candidate and the
champion at the start. In order:

1. **Traffic** to 100% champion, written without reading the current split (which may be unreadable) and
   without writing the ledger first (which may be down): nothing may stand between a failure and the
   champion serving everyone.
2. **Ledger** ``<outcome>_pending``, then the **registry**: ``champion`` back on the old champion,
   ``previous`` dropped if it points there, ``candidate`` removed, the candidate tagged with the outcome.
3. **Verify** by reading back: the split is 100% champion, no ``candidate`` alias, the champion alias
   is the old champion, the candidate's status tag is the outcome. A failed verification goes round again
   (bounded); only a verified rollback closes the ledger as ``<outcome>``.

A rollback from outside the promotion's own process (``stagegate reconcile``, ``stagegate promotions
abort``, a script) first reads the ledger once (at most 5 s): a promotion that has ended is not touched
(rolled back twice, or after a promotion: nothing is written; see :func:`roll_back_promotion`). The flow
and its monitor pass ``moved_traffic`` and write the split before anything else.

Every call to a store runs under a deadline (:func:`bounded`), so an unreachable store costs seconds, not
the rollback. When the ledger cannot be written, the rollback still happens and the promotion stays open;
its lease runs out and ``stagegate reconcile`` closes it when the ledger is back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stagegate.ledger_states import (
    PENDING_STATES,
    TERMINAL_STATES,
    IllegalTransition,
    PromotionState,
    pending_of,
)
from stagegate.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, PREVIOUS_ALIAS, TAG_STATUS

log = logging.getLogger("stagegate.rollback")
T = TypeVar("T")

CALL_TIMEOUT = float(os.environ.get("STAGEGATE_CALL_TIMEOUT", "20"))  # seconds one store call may take
ATTEMPTS = 3  # rounds of (traffic, ledger, registry, verify), and tries of each call within a round
RETRY_DELAY = 0.5  # seconds before a call's second try; doubles after each
LEDGER_READ_TIMEOUT = 5.0  # the most a rollback from outside waits for the ledger before moving traffic


class CallTimeout(TimeoutError):
    """A store call that did not answer within its deadline."""


class PromotionEnded(RuntimeError):
    """A rollback asked for a promotion the ledger says was promoted: nothing was changed (the promoted
    version keeps serving; going back is a new promotion of the old version)."""

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state


class RollbackIncomplete(RuntimeError):
    """Traffic or the registry could not be put back and verified (the message says which and why)."""

    def __init__(self, message: str, report: RollbackReport) -> None:
        super().__init__(message)
        self.report = report


def bounded(call: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` or :class:`CallTimeout` after ``timeout`` seconds.

    The call runs in a daemon thread: a client that hangs past its deadline is abandoned, not waited for
    (clients' own timeouts and retries can add up to minutes; MLflow's HTTP client retries 7 times).
    """
    timeout = CALL_TIMEOUT if timeout is None else timeout
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name=f"bounded-{getattr(call, '__name__', 'call')}")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise CallTimeout(f"{getattr(call, '__qualname__', call)} did not answer within {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def release_interrupted(stop: BaseException) -> None:
    """Free what an interrupt left holding a database lock, before a rollback in the same process.

    A KeyboardInterrupt can land inside a write whose library catches Exception only: the session is
    neither rolled back nor closed, and its connection, kept alive by the locals of the traceback's
    finished frames, may still hold SQLite's write lock, so the rollback's registry calls (from a worker
    thread, with a deadline) would time out on it. Clearing those frames' locals and collecting lets the
    pool take such a connection back, which rolls its transaction back. Best effort: an interrupt can also
    leave a lock of the library's own held, which nothing in the process can free; then the registry part
    of the rollback times out and `stagegate reconcile` finishes it (traffic was moved first). Measured
    with benchmarks/interrupt_locks.py (a Ctrl-C at a random moment of a loop of MLflow writes, one process
    a trial): 1 of 15 left the store locked without this and 1 of 15 with it in one run, 3 of 15 and 0 of
    15 in an earlier one: no difference this sample can resolve.
    """
    import gc
    import sys
    import traceback

    traceback.clear_frames(stop.__traceback__)
    previous = sys.unraisablehook
    # Objects of the cut write complain as they are torn down (an ORM instance that was never flushed):
    # expected here, so logged rather than printed as "Exception ignored" tracebacks.
    sys.unraisablehook = lambda u: log.debug("freeing the interrupted write: %r", u.exc_value)
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous


def retried(
    call: Callable[..., T],
    *args: Any,
    attempts: int | None = None,
    delay: float | None = None,
    timeout: float | None = None,
    give_up_on: tuple[type[BaseException], ...] = (),
    **kwargs: Any,
) -> T:
    """:func:`bounded` with ``attempts`` tries and exponential back-off; the last error is raised."""
    attempts = ATTEMPTS if attempts is None else attempts
    delay = RETRY_DELAY if delay is None else delay
    for attempt in range(1, attempts + 1):
        try:
            return bounded(call, *args, timeout=timeout, **kwargs)
        except give_up_on:
            raise
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning(
                "%s failed (try %d of %d): %r", getattr(call, "__name__", call), attempt, attempts, exc
            )
            time.sleep(delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RollbackTarget:
    """What a rollback restores, known from the promotion's context or ledger row alone."""

    promotion_id: str
    model: str
    version: str
    champion_version: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RollbackTarget:
        return cls(row["id"], row["model"], str(row["version"]), row.get("champion_version"))


@dataclass
class RollbackReport:
    promotion_id: str
    outcome: str
    traffic_ok: bool = False  # champion split written and read back
    registry_ok: bool = False  # aliases and tags put back and read back
    ledger_closed: bool = False  # the ledger says ``outcome`` (now or already)
    rounds: int = 0
    problems: list[str] = field(default_factory=list)
    already_ended: bool = False  # the promotion had ended before: nothing was written

    @property
    def verified(self) -> bool:
        return self.traffic_ok and self.registry_ok


def champion_split(champion_version: str | None) -> Any:
    from stagegate.traffic import Split

    return Split(champion=champion_version)


def _restore_registry(
    registry: Any, target: RollbackTarget, stage: str, reason: str, outcome: str, kw: dict[str, Any]
) -> None:
    model = target.model
    if target.champion_version is not None:
        retried(registry.set_alias, model, CHAMPION_ALIAS, target.champion_version, **kw)
        previous = retried(registry.get_alias, model, PREVIOUS_ALIAS, **kw)
        if previous is not None and previous.version == target.champion_version:
            retried(registry.delete_alias, model, PREVIOUS_ALIAS, **kw)
    else:
        current = retried(registry.get_alias, model, CHAMPION_ALIAS, **kw)
        if current is not None and current.version == target.version:
            retried(registry.delete_alias, model, CHAMPION_ALIAS, **kw)
    retried(registry.delete_alias, model, CANDIDATE_ALIAS, **kw)
    retried(registry.tag, model, target.version, status=outcome, stage=stage, reason=reason, **kw)


def verify_traffic(traffic: Any, target: RollbackTarget, timeout: float | None = None) -> str | None:
    """None when the split reads back as 100% champion; else what is wrong."""
    try:
        split = bounded(traffic.get_split, timeout=timeout)
    except Exception as exc:
        return f"the split does not read back: {exc!r}"
    if split.champion != target.champion_version or not split.is_all_champion or split.shadow:
        return f"the split reads back as {split.model_dump()}, not 100% champion v{target.champion_version}"
    return None


def verify_registry(
    registry: Any, target: RollbackTarget, outcome: str, timeout: float | None = None
) -> str | None:
    """None when aliases and the candidate's status tag read back as a rollback leaves them."""
    try:
        candidate = bounded(registry.get_alias, target.model, CANDIDATE_ALIAS, timeout=timeout)
        champion = bounded(registry.get_alias, target.model, CHAMPION_ALIAS, timeout=timeout)
        tags = bounded(registry.get_version, target.model, target.version, timeout=timeout).tags
    except Exception as exc:
        return f"the registry does not read back: {exc!r}"
    problems = []
    if candidate is not None:
        problems.append(f"alias {CANDIDATE_ALIAS!r} still on v{candidate.version}")
    if target.champion_version is not None and (
        champion is None or champion.version != target.champion_version
    ):
        problems.append(f"alias {CHAMPION_ALIAS!r} on {champion.version if champion else 'nothing'}")
    if target.champion_version is None and champion is not None and champion.version == target.version:
        problems.append(f"alias {CHAMPION_ALIAS!r} still on the candidate v{target.version}")
    if tags.get(TAG_STATUS) != outcome:
        problems.append(f"v{target.version} tagged {TAG_STATUS}={tags.get(TAG_STATUS)!r}, not {outcome!r}")
    return "; ".join(problems) or None


def _ledger_pending(
    events: Any, target: RollbackTarget, outcome: str, text: str, stage: str, kw: dict[str, Any]
) -> tuple[str, str]:
    """Write ``<outcome>_pending``; returns (outcome to finish with, ledger status: pending | ended)."""
    pending = pending_of(outcome)
    try:
        retried(
            events.transition,
            target.promotion_id,
            pending.value,
            text,
            stage=stage,
            give_up_on=(IllegalTransition,),
            **kw,
        )
        return outcome, "pending"
    except IllegalTransition:
        state = PromotionState(bounded(events.promotion, target.promotion_id, timeout=kw["timeout"])["state"])
        if state in TERMINAL_STATES:
            return state.value, "ended"  # someone (the monitor, a reconciler) closed it already
        if state in PENDING_STATES:  # a rollback was already under way: finish what it recorded
            return state.value.removesuffix("_pending"), "pending"
        raise


def _ended_state(events: Any, target: RollbackTarget, timeout: float | None) -> str | None:
    """The promotion's terminal state, or None when it is open or the ledger does not answer."""
    try:
        read = min(timeout if timeout is not None else CALL_TIMEOUT, LEDGER_READ_TIMEOUT)
        state = PromotionState(bounded(events.promotion, target.promotion_id, timeout=read)["state"])
    except Exception as exc:  # a ledger that is down must not delay the traffic
        log.warning("rollback of %s: the ledger does not read (%r); rolling back", target.promotion_id, exc)
        return None
    return state.value if state in TERMINAL_STATES else None


def roll_back_promotion(
    target: RollbackTarget,
    *,
    traffic: Any,
    registry: Any,
    events: Any,
    stage: str,
    reason: str,
    outcome: str,
    rounds: int | None = None,
    call_timeout: float | None = None,
    attempts: int | None = None,
    moved_traffic: bool = False,
) -> RollbackReport:
    """Roll ``target`` back (see the module docstring); :class:`RollbackIncomplete` if traffic or the
    registry cannot be put back and verified. The ledger may stay open (``report.ledger_closed``).
    ``rounds``, ``attempts`` (tries of each call within a round) and ``call_timeout`` (seconds each store
    call may take) bound it where time is short: an interrupted process rolling back before it ends takes
    at most about rounds x (1 + 2 x attempts + 4) x call_timeout.

    Twice, or after the end: unless ``moved_traffic``, the ledger is read first (one bounded try). A
    promotion that has ended is not touched: a promoted one raises :class:`PromotionEnded` (its version
    keeps serving), a rolled-back or rejected one returns its report with nothing written (traffic and
    registry only read back, ``report.already_ended``): no split, alias or tag is written again, so an old
    promotion's rollback can neither demote a later champion nor cut a later promotion's canary. A ledger
    that does not answer is no reason to wait: the rollback goes on, traffic first. ``moved_traffic``: the
    caller (the promotion's own flow) moved traffic itself and may have done so after someone else closed
    the ledger (a lost lease), so the champion split is written whatever the ledger says."""
    text = f"{stage}: {reason}"
    kw = {"timeout": call_timeout, "attempts": attempts}
    report = RollbackReport(target.promotion_id, outcome)
    if not moved_traffic and (ended := _ended_state(events, target, call_timeout)) is not None:
        if ended == PromotionState.PROMOTED.value:
            raise PromotionEnded(
                f"promotion {target.promotion_id} of {target.model!r} was promoted: v{target.version} serves "
                "and keeps serving; nothing was changed (to go back, promote the earlier version again)",
                ended,
            )
        report.outcome, report.ledger_closed, report.already_ended = ended, True, True
        traffic_problem = verify_traffic(traffic, target, call_timeout)
        registry_problem = verify_registry(registry, target, ended, call_timeout)
        report.traffic_ok, report.registry_ok = traffic_problem is None, registry_problem is None
        report.problems += [
            f"already {ended}; nothing changed; now: {p}" for p in (traffic_problem, registry_problem) if p
        ]
        log.info("rollback of %s: already %s, nothing changed", target.promotion_id, ended)
        return report
    ledger = "unwritten"  # unwritten | pending | ended | unreachable
    for round_ in range(1, (rounds or ATTEMPTS) + 1):
        report.rounds = round_
        try:  # 1. traffic, before anything else
            retried(traffic.set_split, champion_split(target.champion_version), **kw)
        except Exception as exc:
            report.problems.append(f"round {round_}: setting the champion split failed: {exc!r}")
            log.error("rollback of %s: %s", target.promotion_id, report.problems[-1])
        if ledger in ("unwritten", "unreachable"):  # 2. the ledger says a rollback is under way
            try:
                report.outcome, ledger = _ledger_pending(events, target, report.outcome, text, stage, kw)
            except IllegalTransition as exc:  # the rollback goes on; the ledger says why it stays open
                ledger = "refused"
                report.problems.append(f"round {round_}: the ledger refused the rollback: {exc}")
            except Exception as exc:
                ledger = "unreachable"
                report.problems.append(f"round {round_}: the ledger cannot be written: {exc!r}")
                log.error("rollback of %s: %s", target.promotion_id, report.problems[-1])
        try:  # 2. the registry
            _restore_registry(registry, target, stage, reason, report.outcome, kw)
        except Exception as exc:
            report.problems.append(f"round {round_}: the registry could not be put back: {exc!r}")
            log.error("rollback of %s: %s", target.promotion_id, report.problems[-1])
        traffic_problem = verify_traffic(traffic, target, call_timeout)  # 3. read back
        registry_problem = verify_registry(registry, target, report.outcome, call_timeout)
        report.traffic_ok, report.registry_ok = traffic_problem is None, registry_problem is None
        for problem in (traffic_problem, registry_problem):
            if problem:
                report.problems.append(f"round {round_}: verification: {problem}")
                log.error("rollback of %s: %s", target.promotion_id, problem)
        if report.verified:
            break
        time.sleep(RETRY_DELAY * round_)
    if not report.verified:
        raise RollbackIncomplete(
            f"rollback of promotion {target.promotion_id} ({target.model} v{target.version}) not verified "
            f"after {report.rounds} rounds: {'; '.join(report.problems[-3:])}",
            report,
        )
    if ledger == "ended":
        report.ledger_closed = True
    elif ledger == "pending":
        try:
            retried(
                events.transition,
                target.promotion_id,
                report.outcome,
                text,
                stage=stage,
                give_up_on=(IllegalTransition,),
                **kw,
            )
            report.ledger_closed = True
        except IllegalTransition:  # a retried write that had landed, or another closer was first
            state = bounded(events.promotion, target.promotion_id, timeout=call_timeout)["state"]
            report.ledger_closed = state in TERMINAL_STATES
            report.outcome = state if report.ledger_closed else report.outcome
        except Exception as exc:
            report.problems.append(f"closing the ledger failed: {exc!r}")
    return report
