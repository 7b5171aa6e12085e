"""The promotion policy: which stages a candidate goes through and which gates decide at each.

A policy is data (YAML in policies/). This schema refuses anything it does not know (``extra="forbid"``),
so a misspelt field is an error, never a silently ignored setting. Gate entries are validated against
their own gate type's schema by :func:`stagegate.policy.load.load_policy`.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stagegate.policy.durations import Duration

STAGE_ORDER = ("offline", "simulation", "shadow", "canary", "rollout")
StageName = Literal["offline", "simulation", "shadow", "canary", "rollout"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Approvals(_Strict):
    """Who may approve, and what happens when nobody answers in time (default: reject)."""

    approvers: list[str] = Field(
        min_length=1, description="who may answer, by name; each needs a token (`stagegate approvers add`)"
    )
    timeout: Duration = Field(
        default=timedelta(hours=24), description="how long the flow waits for an answer"
    )
    on_timeout: Literal["reject"] = Field(default="reject", description="no answer in time is a rejection")


class DecisionRule(_Strict):
    """How a stage's verdicts become one decision (stagegate.decision; docs in its module docstring).

    ``any_harm``: every gate acts on its own verdict; with ``on_inconclusive: record`` a candidate advances
    when harm was not proven by the deadline. ``risk_aware`` (Schultzberg, Ankargren & Frånberg 2024): every
    gate has a ``role``; the candidate advances only when every guardrail is proven non-inferior within its
    ``margin`` and, if success metrics are named, one is proven better; at the deadline it is held for a
    human. ``alpha`` is split over success metrics; ``power`` is the rule's power, guardrails get
    ``1 - (1 - power) / G`` each. ``between_steps`` (canary): at an earlier step's deadline with nothing
    harmful proven, ``ramp`` to the next step or ``hold`` for a human.
    """

    rule: Literal["risk_aware", "any_harm"] = Field(
        default="any_harm", description="the decision rule (above)"
    )
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="false-success budget of the decision")
    power: float = Field(default=0.8, gt=0.5, lt=1.0, description="power of the decision at no harm")
    between_steps: Literal["ramp", "hold"] = Field(
        default="ramp", description="canary, risk_aware: at an earlier step's deadline, ramp on or hold"
    )


class _Stage(_Strict):
    # Each entry is the gate type's own fields plus the pipeline's: role (success | guardrail | quality),
    # margin (a guardrail's non-inferiority margin) and consecutive_error_limit (stagegate.policy.gates).
    gates: list[dict[str, Any]] = Field(default_factory=list, description="the stage's gates (see Gates)")
    decision: DecisionRule = Field(default_factory=DecisionRule, description="how the verdicts decide")
    # Approval points: the flow pauses for a named approver before this stage starts.
    approval: Literal["before"] | None = Field(
        default=None, description="`before`: pause for an approver before the stage starts"
    )


class OfflineStage(_Stage):
    expectations: str | None = Field(default=None, description="expectation suite for the evaluation data")
    k: int = Field(default=10, ge=1, le=100, description="cut-off of the ranking metrics (ndcg@k, recall@k)")
    label: Literal["click", "purchase"] = Field(default="click", description="what counts as relevant")
    bootstrap_resamples: int = Field(
        default=2000, ge=200, description="resamples of the paired bootstrap CIs"
    )


class SimulationStage(_Stage):
    """A twin world fitted from the training log and the public catalogue (never the live world's hidden
    truth) runs candidate and champion for ``days`` simulated days with common random numbers and stock
    depletion; gates see the paired per-user ``revenue_per_user``, ``clicks_per_user`` and
    ``purchases_per_user`` from the twin. Off-policy estimates on the logged hold-out (the champion logs
    with a stochastic policy, so propensities exist) are added as ``<metric>:<estimator>``, e.g.
    ``revenue_per_user:dr``, for every estimator in ``estimators`` (and ``estimator``)."""

    estimator: Literal["ips", "snips", "dr"] = Field(
        default="snips", description="the off-policy estimator whose estimate the gates see unsuffixed"
    )
    estimators: list[Literal["ips", "snips", "dr", "rips"]] = Field(
        default_factory=lambda: ["ips", "snips", "dr"], description="OPE estimators logged as evidence"
    )
    clip: float | None = Field(default=100.0, gt=1.0, description="largest importance weight kept")
    days: float = Field(default=7.0, gt=0, le=60, description="simulated days in the twin world")
    seeds: int = Field(default=1, ge=1, le=20, description="twin runs (stock paths) averaged per arm")


class ShadowStage(_Stage):
    min_requests: int = Field(default=5000, ge=1, description="mirrored requests before the stage may end")
    max_hours: float = Field(default=48.0, gt=0, description="the stage's deadline")
    batch_hours: float = Field(default=2.0, gt=0, description="hours between looks")


class CanaryStep(_Strict):
    weight: float = Field(gt=0, le=100, description="percent of users on the candidate")
    min_users: int | None = Field(default=None, ge=1, description="candidate users before the step may end")
    max_hours: float | None = Field(
        default=None, gt=0, description="this step's deadline (default: the stage's)"
    )


class CanaryStage(_Stage):
    steps: list[CanaryStep] = Field(min_length=1, description="traffic steps, weights strictly increasing")
    batch_hours: float = Field(default=2.0, gt=0, description="hours between looks")
    max_hours_per_step: float = Field(default=72.0, gt=0, description="each step's deadline")
    approval: Literal["before", "before_rollout"] | None = Field(
        default=None, description="`before` the canary, or `before_rollout` (after its last step)"
    )

    @model_validator(mode="after")
    def _weights_increase(self) -> CanaryStage:
        weights = [step.weight for step in self.steps]
        if any(b <= a for a, b in pairwise(weights)):
            raise ValueError(f"canary step weights must increase strictly, got {weights}")
        return self


class RolloutStage(_Stage):
    bake: Duration = Field(default=timedelta(minutes=10), description="how long the new champion is watched")
    holdback: float = Field(default=0.0, ge=0.0, lt=0.5, description="share kept on the old champion")
    batch_hours: float = Field(default=2.0, gt=0, description="hours between looks")


class Stages(_Strict):
    """The stages a candidate goes through, always in this order; a stage left out is skipped, except
    rollout, which always runs."""

    offline: OfflineStage | None = None
    simulation: SimulationStage | None = None
    shadow: ShadowStage | None = None
    canary: CanaryStage | None = None
    rollout: RolloutStage = Field(default_factory=RolloutStage)

    def configured(self) -> list[tuple[str, _Stage]]:
        """The stages this policy runs, in pipeline order."""
        return [(name, getattr(self, name)) for name in STAGE_ORDER if getattr(self, name) is not None]


class Policy(_Strict):
    model: str = Field(min_length=1, description="registered model name in MLflow")
    baseline: str = Field(default="champion", description="alias of the incumbent")
    # With no incumbent (the very first model), relative gates cannot run. Refusing is the safe default;
    # ``absolute_only`` skips them explicitly and says so in the report.
    on_missing_baseline: Literal["refuse", "absolute_only"] = Field(
        default="refuse", description="no incumbent: refuse, or skip the comparative gates and say so"
    )
    approvals: Approvals | Literal["auto"] = Field(
        default="auto", description="`auto` (approval points pass at once, recorded) or who may approve"
    )
    on_crash: Literal["roll_back", "resume"] = Field(
        default="roll_back",
        description="what `stagegate reconcile` does with a promotion whose process died: roll it back "
        "(the safe default), or resume it from the ledger's checkpoint when it has one (a traffic stage)",
    )
    stages: Stages = Field(description="the stages to run, in pipeline order")

    def gate_specs(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(stage, index, spec) for every gate entry, in pipeline order."""
        return [
            (name, i, spec) for name, stage in self.stages.configured() for i, spec in enumerate(stage.gates)
        ]
