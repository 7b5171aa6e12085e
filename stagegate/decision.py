"""From one look's verdicts to one decision: the pipeline's rules, pure and in one place.

- A FAIL or ERROR acts as its gate's policy says (rollback, hold, or record = log only).
- An INCONCLUSIVE keeps the stage looking until its deadline; at the deadline it acts as
  ``on_inconclusive`` says.
- ROLLBACK beats HOLD beats CONTINUE beats ADVANCE: the most cautious wish wins.
- A stage advances only when every gate that is not in record mode has passed and the stage's own
  sample-size requirement is met.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from stagegate.verdict import Action, Outcome, Verdict


class Decision(StrEnum):
    ADVANCE = "advance"
    CONTINUE = "continue"  # keep collecting evidence
    HOLD = "hold"  # wait for a human
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Judged:
    """A verdict with the action the policy attaches to it (None for PASS or when nothing is done yet)."""

    verdict: Verdict
    action: Action | None


@dataclass(frozen=True)
class LookDecision:
    decision: Decision
    reason: str
    judged: list[Judged] = field(default_factory=list)


_RANK = {Decision.ADVANCE: 0, Decision.CONTINUE: 1, Decision.HOLD: 2, Decision.ROLLBACK: 3}
_FROM_ACTION = {Action.ROLLBACK: Decision.ROLLBACK, Action.HOLD: Decision.HOLD, Action.RECORD: None}


def decide(
    verdicts: Sequence[tuple[Verdict, dict[Outcome, Action]]],
    *,
    at_deadline: bool,
    enough_samples: bool = True,
) -> LookDecision:
    """Combine one look's verdicts. ``verdicts`` pairs each verdict with its gate's outcome -> action map."""
    decision, reasons, judged = Decision.ADVANCE, [], []
    for verdict, actions in verdicts:
        wish: Decision | None
        action: Action | None = None
        if verdict.outcome is Outcome.PASS:
            wish = None
        elif verdict.outcome is Outcome.INCONCLUSIVE and not at_deadline:
            wish = Decision.CONTINUE
        else:
            action = actions[verdict.outcome]
            wish = _FROM_ACTION[action]
        judged.append(Judged(verdict, action))
        if wish is not None and _RANK[wish] >= _RANK[decision]:
            if _RANK[wish] > _RANK[decision]:
                reasons = []
            decision = wish
            reasons.append(f"{verdict.gate}: {verdict.message}")
    if decision is Decision.ADVANCE and not enough_samples:
        if at_deadline:
            decision, reasons = Decision.HOLD, ["deadline reached before the stage's minimum sample size"]
        else:
            decision, reasons = Decision.CONTINUE, ["minimum sample size not reached yet"]
    if decision is Decision.ADVANCE:
        recorded = [j.verdict.gate for j in judged if j.verdict.outcome is not Outcome.PASS]
        if not verdicts:
            reasons = ["no gates configured"]
        elif recorded:
            reasons = [f"no gate asks to act; recorded only: {', '.join(recorded)}"]
        else:
            reasons = ["all gates passed"]
    return LookDecision(decision, "; ".join(reasons), judged)
