"""The promotion's states and the moves allowed between them: the ledger refuses every other move.

    registered ─► offline ─► simulation ─► shadow ─► canary ─► rollout ─► promoted
         │            (a stage may be skipped, or entered again: one canary step after another)
         ├─► awaiting_approval ─► approval_granted | approval_denied | approval_timed_out
         └─► rejected_pending ─► rejected          rolled_back_pending ─► rolled_back

Stages only move forward. ``*_pending`` is written once traffic is back on the champion and before the
registry is put back; only the matching final state follows it. ``aborted`` closes any open promotion
(by hand). A final state never changes again. The table is data (:data:`ALLOWED_TRANSITIONS`), so a test
walks all of it, and :func:`check_transition` is the one place that says yes or no.
"""

from __future__ import annotations

from enum import StrEnum


class PromotionState(StrEnum):
    REGISTERED = "registered"
    OFFLINE = "offline"
    SIMULATION = "simulation"
    SHADOW = "shadow"
    CANARY = "canary"
    ROLLOUT = "rollout"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_TIMED_OUT = "approval_timed_out"
    REJECTED_PENDING = "rejected_pending"
    ROLLED_BACK_PENDING = "rolled_back_pending"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


S = PromotionState

#: The stages in the order a promotion passes them (a state of the same name says "in this stage").
STAGE_ORDER: tuple[PromotionState, ...] = (S.OFFLINE, S.SIMULATION, S.SHADOW, S.CANARY, S.ROLLOUT)
TERMINAL_STATES: frozenset[PromotionState] = frozenset({S.PROMOTED, S.REJECTED, S.ROLLED_BACK, S.ABORTED})
PENDING_STATES: frozenset[PromotionState] = frozenset({S.REJECTED_PENDING, S.ROLLED_BACK_PENDING})
OPEN_STATES: frozenset[PromotionState] = frozenset(PromotionState) - TERMINAL_STATES

_APPROVAL = frozenset({S.AWAITING_APPROVAL, S.APPROVAL_GRANTED})
_FAILING = frozenset({S.REJECTED_PENDING, S.ROLLED_BACK_PENDING, S.ABORTED})


def _stage_moves(stage: PromotionState) -> frozenset[PromotionState]:
    later = STAGE_ORDER[STAGE_ORDER.index(stage) :]  # itself (the next canary step) and every later stage
    return frozenset(later) | _APPROVAL | _FAILING | {S.PROMOTED}


ALLOWED_TRANSITIONS: dict[PromotionState, frozenset[PromotionState]] = {
    S.REGISTERED: frozenset(STAGE_ORDER) | _APPROVAL | _FAILING,
    **{stage: _stage_moves(stage) for stage in STAGE_ORDER},
    # A refused answer keeps waiting (recorded again); the guardrail monitor may roll back meanwhile.
    S.AWAITING_APPROVAL: frozenset(
        {S.AWAITING_APPROVAL, S.APPROVAL_GRANTED, S.APPROVAL_DENIED, S.APPROVAL_TIMED_OUT}
    )
    | _FAILING,
    S.APPROVAL_GRANTED: frozenset(STAGE_ORDER) | _APPROVAL | _FAILING | {S.PROMOTED},
    S.APPROVAL_DENIED: _FAILING,
    S.APPROVAL_TIMED_OUT: _FAILING,
    S.REJECTED_PENDING: frozenset({S.REJECTED, S.ABORTED}),
    S.ROLLED_BACK_PENDING: frozenset({S.ROLLED_BACK, S.ABORTED}),
    **{state: frozenset() for state in TERMINAL_STATES},
}


class IllegalTransition(RuntimeError):
    """A move the state table does not allow (the message names the promotion, both states and why)."""


def parse_state(value: str) -> PromotionState:
    try:
        return PromotionState(value)
    except ValueError:
        known = ", ".join(s.value for s in PromotionState)
        raise IllegalTransition(f"unknown promotion state {value!r}; known states: {known}") from None


def check_transition(
    promotion_id: str, current: str, target: str, current_stage: str | None = None
) -> PromotionState:
    """The target state, or :class:`IllegalTransition` saying why the move is refused.

    ``current_stage`` (the ledger's ``stage`` column) keeps stages moving forward after an approval
    state, whose name does not say which stage the promotion is in.
    """
    src, dst = parse_state(current), parse_state(target)
    if src in TERMINAL_STATES:
        raise IllegalTransition(f"promotion {promotion_id} already ended as {src}; cannot move to {dst}")
    if dst not in ALLOWED_TRANSITIONS[src]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED_TRANSITIONS[src]))
        raise IllegalTransition(
            f"promotion {promotion_id}: {src} -> {dst} is not an allowed transition (from {src}: {allowed})"
        )
    stages = {s.value for s in STAGE_ORDER}
    if dst in STAGE_ORDER and current_stage in stages:
        backwards = STAGE_ORDER.index(dst) < STAGE_ORDER.index(PromotionState(current_stage))
        if backwards:
            raise IllegalTransition(
                f"promotion {promotion_id}: cannot go back from stage {current_stage} to {dst}"
            )
    return dst


def failure_outcome(stage: str | None) -> PromotionState:
    """Before a live user saw the candidate a failure *rejects* it; from the canary on it *rolls back*."""
    return S.ROLLED_BACK if stage in (S.CANARY, S.ROLLOUT) else S.REJECTED


def pending_of(outcome: str) -> PromotionState:
    return {S.REJECTED: S.REJECTED_PENDING, S.ROLLED_BACK: S.ROLLED_BACK_PENDING}[parse_state(outcome)]
