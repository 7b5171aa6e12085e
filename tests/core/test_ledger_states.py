"""The promotion state table: every pair of states walked through the real ledger, and every state the
flows write is a state of the table."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import pytest

from stagegate.events.store import EventStore
from stagegate.ledger_states import (
    ALLOWED_TRANSITIONS,
    STAGE_ORDER,
    TERMINAL_STATES,
    IllegalTransition,
    PromotionState,
    check_transition,
)

REPO = Path(__file__).resolve().parents[2]


def path_to(state: PromotionState) -> list[PromotionState]:
    """A shortest legal path from ``registered`` to ``state`` (breadth first over the table)."""
    start = PromotionState.REGISTERED
    parent: dict[PromotionState, PromotionState | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(ALLOWED_TRANSITIONS[node]):
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    assert state in parent, f"{state} cannot be reached from registered"
    path = [state]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])  # type: ignore[arg-type]
    return path[::-1][1:]


def test_the_table_covers_every_state_and_final_states_are_final() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(PromotionState)
    for state in TERMINAL_STATES:
        assert ALLOWED_TRANSITIONS[state] == frozenset()
    for state in set(PromotionState) - TERMINAL_STATES:  # every open state can be closed, and reached
        assert ALLOWED_TRANSITIONS[state] & TERMINAL_STATES, state
        assert state == PromotionState.REGISTERED or path_to(state)[-1] == state


def test_the_ledger_walks_the_whole_table(tmp_path: Path) -> None:
    """For every (from, to) pair: the ledger accepts exactly the moves of the table, and a refused move
    changes nothing (state and transition log as before)."""
    store = EventStore("sqlite://")  # in memory: 256 promotions, the same SQL as on a file
    accepted = refused = 0

    def at(src: PromotionState, model: str) -> str:
        pid = store.open_promotion(model=model, version="2", policy_path="p", policy={}, champion_version="1")
        for state in path_to(src):
            store.transition(pid, state.value, "walk", stage=state.value if state in STAGE_ORDER else None)
        assert store.promotion(pid)["state"] == src
        return pid

    def close(pid: str) -> None:  # frees the model's one open slot
        if store.promotion(pid)["state"] not in TERMINAL_STATES:
            store.transition(pid, "aborted", "walk done")

    for src in PromotionState:
        stuck = at(src, f"refused-{src.value}")  # refused moves leave it where it is: one serves them all
        before = len(store.transitions(stuck))
        for dst in PromotionState:
            if dst in ALLOWED_TRANSITIONS[src]:
                pid = at(src, f"{src.value}-{dst.value}")
                store.transition(pid, dst.value, "walk", stage=dst.value if dst in STAGE_ORDER else None)
                assert store.promotion(pid)["state"] == dst
                assert store.transitions(pid)[-1]["from_state"] == src
                close(pid)
                accepted += 1
            else:
                with pytest.raises(IllegalTransition, match=f"{src.value}|already ended"):
                    store.transition(stuck, dst.value, "walk")
                assert store.promotion(stuck)["state"] == src
                assert len(store.transitions(stuck)) == before
                refused += 1
        close(stuck)
    n = len(PromotionState)
    assert accepted == sum(len(v) for v in ALLOWED_TRANSITIONS.values())
    assert accepted + refused == n * n


def test_stages_never_go_back_even_through_an_approval_state(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    pid = store.open_promotion(model="m", version="2", policy_path="p", policy={}, champion_version="1")
    store.transition(pid, "canary", "step 1", stage="canary")
    store.transition(pid, "canary", "step 2", stage="canary")  # the next canary step
    store.transition(pid, "approval_granted", "ok")
    with pytest.raises(IllegalTransition, match="cannot go back from stage canary to shadow"):
        store.transition(pid, "shadow", "back", stage="shadow")
    store.transition(pid, "rollout", "on", stage="rollout")
    with pytest.raises(IllegalTransition, match="rollout -> canary"):
        store.transition(pid, "canary", "back")


def test_unknown_states_and_skipping_the_pending_step_are_refused() -> None:
    with pytest.raises(IllegalTransition, match="unknown promotion state 'canary_step'"):
        check_transition("p", "canary", "canary_step")
    with pytest.raises(IllegalTransition, match="canary -> rolled_back is not an allowed transition"):
        check_transition("p", "canary", "rolled_back")
    with pytest.raises(IllegalTransition, match="rejected_pending -> rolled_back"):
        check_transition("p", "rejected_pending", "rolled_back")
    with pytest.raises(IllegalTransition, match="already ended as promoted"):
        check_transition("p", "promoted", "rolled_back_pending")


def test_every_state_the_flows_write_is_in_the_table() -> None:
    """The literal states passed to ``transition(...)`` anywhere in flows/ and stagegate/."""
    pattern = re.compile(r"transition\(\s*[\w.]+,\s*\"([a-z_]+)\"")
    written = set()
    for path in [*REPO.glob("flows/**/*.py"), *REPO.glob("stagegate/**/*.py")]:
        written |= set(pattern.findall(path.read_text(encoding="utf-8")))
    assert {"promoted", "awaiting_approval", "approval_granted"} <= written  # the pattern finds them
    assert written <= {s.value for s in PromotionState}, written - {s.value for s in PromotionState}
    # the stage subflows write their stage's name; the rollback writes <outcome>_pending then <outcome>
    assert {s.value for s in STAGE_ORDER} | {"rejected_pending", "rolled_back_pending"} <= {
        s.value for s in PromotionState
    }
