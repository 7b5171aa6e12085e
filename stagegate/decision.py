"""From one look's verdicts to one decision: the pipeline's rules, pure and in one place.

Two rules, chosen per stage by the policy (``decision: {rule: ...}``):

``any_harm`` (:func:`decide`, the rule before risk_aware): every gate acts on its own verdict.

- A FAIL or ERROR acts as its gate's policy says (rollback, hold, or record = log only).
- An INCONCLUSIVE keeps the stage looking until its deadline; at the deadline it acts as
  ``on_inconclusive`` says. With ``on_inconclusive: record`` a candidate whose harm was merely *not proven*
  by the deadline advances: that is what this rule promotes on.
- ROLLBACK beats HOLD beats CONTINUE beats ADVANCE: the most cautious wish wins.
- A stage advances only when every gate that is not in record mode has passed and the stage's own
  sample-size requirement is met.

``risk_aware`` (:func:`decide_risk_aware`): Schultzberg, Ankargren & Frånberg (2024), *Risk-aware product
decisions in A/B tests with multiple metrics* (arXiv 2402.11609). Gates have roles:

- quality (sample-ratio, latency, expectations, absolute limits): act as under ``any_harm``, and must pass;
- guardrail: a non-inferiority test within the guardrail's margin; FAIL (harm proven) rolls back;
- success: a deterioration test (FAIL rolls back) and a superiority test (``better`` PASS: improvement
  proven).

A candidate advances only when every quality gate passed, **every guardrail is proven non-inferior**
and, when the stage names success metrics, **at least one is proven better**. Otherwise it waits; at the
deadline it is held for a human (``Decision.HOLD``), never advanced: no harm proven is not proof of no harm.
Between canary steps (``between_steps: ramp``) an unproven but unharmed candidate may move to the next,
bigger step to collect the evidence; the last step must prove or hold. The error rates
(:func:`risk_aware_levels`): success metrics share ``alpha`` (Bonferroni, ``alpha / S``); guardrails'
non-inferiority tests are not alpha-adjusted, but their power is, to ``1 - (1 - power) / G``, so that the
decision as a whole keeps ``power`` when all ``G`` guardrails must pass.

Measurement errors (:func:`update_error_streaks`): an ERROR counts against its gate's
``consecutive_error_limit`` (Argo Rollouts' consecutiveErrorLimit) before it acts; a tolerated ERROR
keeps the stage looking (also at its deadline: the limit bounds the extension), a verdict that measured
resets the count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from stagegate.verdict import Action, Outcome, Verdict


class Decision(StrEnum):
    ADVANCE = "advance"
    CONTINUE = "continue"  # keep collecting evidence
    HOLD = "hold"  # wait for a human
    ROLLBACK = "rollback"


class Role(StrEnum):
    """What a gate is for in the risk-aware rule."""

    SUCCESS = "success"  # the change should improve it: superiority at alpha / S, and deterioration
    GUARDRAIL = "guardrail"  # must not get worse beyond its margin: non-inferiority, and deterioration
    QUALITY = "quality"  # validity and safety checks (SRM, latency, expectations, absolute limits)


Rule = Literal["risk_aware", "any_harm"]


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
    #: consecutive ERROR looks per gate after this look (state the caller carries to the next look)
    error_streaks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GateLook:
    """One gate's verdict on one look, with what the policy says about it.

    ``superiority`` is the success metric's improvement test on the same evidence (risk_aware only).
    ``error_tolerated`` marks an ERROR still within its gate's consecutive-error limit.
    """

    verdict: Verdict
    actions: Mapping[Outcome, Action]
    role: Role | None = None
    superiority: Verdict | None = None
    error_tolerated: bool = False


@dataclass(frozen=True)
class RiskAwareLevels:
    """Error rates of the risk-aware rule for ``n_success`` success metrics and ``n_guardrails`` guardrails.

    Attributes
    ----------
    success_alpha : float
        Level of each success metric's superiority test: ``alpha / S`` (Bonferroni over success metrics
        only), so that a candidate with no true improvement is shipped on a false success with probability
        at most ``alpha``.
    success_beta : float
        Type-II error of each superiority test at its MDE: ``1 - power``.
    guardrail_alpha : float
        Level of each guardrail's non-inferiority test (a candidate whose true harm is the margin passes
        with at most this probability): ``alpha``, not adjusted; the candidate must pass every guardrail,
        so multiplicity works against shipping, not for it.
    guardrail_beta : float
        Type-II error of each guardrail's non-inferiority test at no harm: ``(1 - power) / G``, so that a
        harmless candidate passes all ``G`` guardrails with probability at least ``power`` (Bonferroni on
        the misses).
    deterioration_alpha : float
        Level of the harm test of every metric: ``min(alpha, guardrail_beta)``. A harm rollback is never
        looser than ``alpha``; for guardrails it is also a miss of the non-inferiority test, so it stays
        within the power budget.
    """

    success_alpha: float
    success_beta: float
    guardrail_alpha: float
    guardrail_beta: float
    deterioration_alpha: float


def risk_aware_levels(n_success: int, n_guardrails: int, alpha: float, power: float) -> RiskAwareLevels:
    """The risk-aware rule's error rates (Schultzberg, Ankargren & Frånberg 2024, §3)."""
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not 0.5 < power < 1.0:
        raise ValueError(f"power must be in (0.5, 1), got {power}")
    if n_success < 0 or n_guardrails < 1:
        raise ValueError(f"need at least one guardrail, got {n_guardrails} ({n_success} success metrics)")
    guardrail_beta = round((1.0 - power) / n_guardrails, 12)
    return RiskAwareLevels(
        success_alpha=alpha / max(n_success, 1),
        success_beta=round(1.0 - power, 12),
        guardrail_alpha=alpha,
        guardrail_beta=guardrail_beta,
        deterioration_alpha=min(alpha, guardrail_beta),
    )


def update_error_streaks(
    streaks: Mapping[str, int], outcomes: Mapping[str, Outcome], limits: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, bool]]:
    """Count consecutive ERROR looks per gate; returns the new counts and which ERRORs are tolerated.

    A gate's ERROR is tolerated while its streak (this look included) is at most its limit, so a limit of
    ``L`` tolerates ``L`` consecutive unmeasurable looks and acts on the ``L + 1``-th (Argo Rollouts'
    consecutiveErrorLimit; 0 acts on the first error). Any other outcome resets the gate's count.
    """
    new: dict[str, int] = {}
    tolerated: dict[str, bool] = {}
    for key, outcome in outcomes.items():
        count = streaks.get(key, 0) + 1 if outcome is Outcome.ERROR else 0
        new[key] = count
        tolerated[key] = outcome is Outcome.ERROR and count <= limits.get(key, 0)
    return new, tolerated


_RANK = {Decision.ADVANCE: 0, Decision.CONTINUE: 1, Decision.HOLD: 2, Decision.ROLLBACK: 3}
_FROM_ACTION = {Action.ROLLBACK: Decision.ROLLBACK, Action.HOLD: Decision.HOLD, Action.RECORD: None}


def _as_look(item: GateLook | tuple[Verdict, Mapping[Outcome, Action]]) -> GateLook:
    return item if isinstance(item, GateLook) else GateLook(item[0], item[1])


class _Wishes:
    """The most cautious wish wins; reasons are kept for the winning level only."""

    def __init__(self) -> None:
        self.decision, self.reasons = Decision.ADVANCE, []

    def add(self, wish: Decision | None, reason: str) -> None:
        if wish is None or _RANK[wish] < _RANK[self.decision]:
            return
        if _RANK[wish] > _RANK[self.decision]:
            self.reasons = []
        self.decision = wish
        self.reasons.append(reason)


def _own_action(look: GateLook, at_deadline: bool) -> tuple[Decision | None, Action | None, str]:
    """The any_harm reading of one verdict: (wish, action, reason)."""
    v = look.verdict
    if v.outcome is Outcome.PASS:
        return None, None, ""
    if v.outcome is Outcome.ERROR and look.error_tolerated:
        return Decision.CONTINUE, None, f"{v.gate}: {v.message} (measurement error tolerated, looking again)"
    if v.outcome is Outcome.INCONCLUSIVE and not at_deadline:
        return Decision.CONTINUE, None, f"{v.gate}: {v.message}"
    action = look.actions[v.outcome]
    return _FROM_ACTION[action], action, f"{v.gate}: {v.message}"


def decide(
    verdicts: Sequence[GateLook | tuple[Verdict, Mapping[Outcome, Action]]],
    *,
    at_deadline: bool,
    enough_samples: bool = True,
) -> LookDecision:
    """The ``any_harm`` rule. ``verdicts`` pairs each verdict with its gate's outcome -> action map."""
    looks = [_as_look(item) for item in verdicts]
    wishes, judged = _Wishes(), []
    for look in looks:
        wish, action, reason = _own_action(look, at_deadline)
        judged.append(Judged(look.verdict, action))
        wishes.add(wish, reason)
    decision, reasons = _sample_size(wishes.decision, wishes.reasons, at_deadline, enough_samples)
    if decision is Decision.ADVANCE:
        recorded = [j.verdict.gate for j in judged if j.verdict.outcome is not Outcome.PASS]
        if not looks:
            reasons = ["no gates configured"]
        elif recorded:
            reasons = [f"no gate asks to act; recorded only: {', '.join(recorded)}"]
        else:
            reasons = ["all gates passed"]
    return LookDecision(decision, "; ".join(reasons), judged)


def _sample_size(
    decision: Decision, reasons: list[str], at_deadline: bool, enough_samples: bool
) -> tuple[Decision, list[str]]:
    if decision is Decision.ADVANCE and not enough_samples:
        if at_deadline:
            return Decision.HOLD, ["deadline reached before the stage's minimum sample size"]
        return Decision.CONTINUE, ["minimum sample size not reached yet"]
    return decision, reasons


def decide_risk_aware(
    looks: Sequence[GateLook],
    *,
    at_deadline: bool,
    enough_samples: bool = True,
    last_step: bool = True,
    between_steps: Literal["ramp", "hold"] = "ramp",
) -> LookDecision:
    """The ``risk_aware`` rule (module docstring): advance only on proof, hold at the deadline.

    Every look needs a role. Quality gates and every measurement error act as under :func:`decide`. A
    guardrail's FAIL or a success metric's FAIL (harm proven) acts as its ``on_fail`` (rollback). The
    candidate advances when every quality gate and guardrail passed and, if there are success metrics, at
    least one superiority test passed, with the stage's sample size met. Otherwise the stage continues; at
    the deadline of the last step (or of any step with ``between_steps: hold``) it holds for a human; at an
    earlier step's deadline with ``between_steps: ramp`` it moves to the next step, saying what is unproven.
    """
    wishes, judged = _Wishes(), []
    unproven: list[str] = []
    n_success, success_proven = 0, []
    for look in looks:
        v = look.verdict
        if look.role is None:
            raise ValueError(f"gate {v.gate!r} has no role: the risk_aware rule needs one on every gate")
        if look.role is Role.QUALITY or v.outcome in (Outcome.ERROR, Outcome.FAIL):
            wish, action, reason = _own_action(look, at_deadline)
            judged.append(Judged(v, action))
            wishes.add(wish, reason)
            if look.role is Role.SUCCESS:
                n_success += 1
            continue
        judged.append(Judged(v, None))
        if look.role is Role.GUARDRAIL:
            if v.outcome is not Outcome.PASS:
                unproven.append(f"{v.gate} not proven non-inferior ({v.message})")
        else:  # success: the deterioration test did not fire; is the improvement proven?
            n_success += 1
            sup = look.superiority
            if sup is None:
                raise ValueError(f"success gate {v.gate!r} has no superiority test")
            judged.append(Judged(sup, None))
            if sup.outcome is Outcome.PASS:
                success_proven.append(sup.gate)
    if n_success and not success_proven:
        unproven.append("no success metric proven better")
    if unproven:
        wishes.add(Decision.CONTINUE, "; ".join(unproven))
    decision, reasons = wishes.decision, wishes.reasons
    if decision is Decision.CONTINUE and at_deadline and unproven and _only_unproven(looks, at_deadline):
        if not last_step and between_steps == "ramp":
            decision = Decision.ADVANCE
            reasons = [
                f"deadline: no harm proven, moving to the next step to collect evidence; {reasons[-1]}"
            ]
        else:
            decision = Decision.HOLD
            reasons = [f"deadline: nothing harmful proven, but not proven safe either; {reasons[-1]}"]
    decision, reasons = _sample_size(decision, reasons, at_deadline, enough_samples)
    if decision is Decision.ADVANCE and not unproven:
        better = f"; proven better: {', '.join(success_proven)}" if success_proven else ""
        reasons = [f"every guardrail proven non-inferior{better}"]
    return LookDecision(decision, "; ".join(reasons), judged)


def _only_unproven(looks: Sequence[GateLook], at_deadline: bool) -> bool:
    """True when nothing but unproven guardrails / success metrics keeps the stage waiting."""
    for look in looks:
        wish, _, _ = (
            _own_action(look, at_deadline)
            if look.role is Role.QUALITY or look.verdict.outcome in (Outcome.ERROR, Outcome.FAIL)
            else (None, None, "")
        )
        if wish is not None and _RANK[wish] >= _RANK[Decision.CONTINUE]:
            return False
    return True
