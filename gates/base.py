"""The gate protocol: evidence in, verdict out. Pure: no Prefect, no MLflow, no I/O.

A gate type is a subclass of :class:`Gate` with a pydantic ``Config`` (its policy fields). The policy
names the type; :mod:`stagegate.plugins` finds the class through the ``stagegate.gates`` entry-point
group, where the built-ins are registered exactly as a third party's gates would be.

Failing closed is built in: :meth:`Gate.evaluate` turns any data problem (a missing metric or arm, NaN,
malformed input) into an ERROR verdict that names it, so a broken metric can never read as a PASS; "not
enough data yet" (:class:`NotEnoughData`: no users or events so far, a zero mean, too few users) is
INCONCLUSIVE, never PASS and never ERROR.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gates.missing import drop_missing
from stagegate.evidence import ArmSample, Evidence
from stagegate.verdict import Action, Outcome, Verdict


class EvidenceError(ValueError):
    """The evidence cannot support a verdict (missing, NaN, malformed, degenerate): the gate says ERROR."""


class NotEnoughData(EvidenceError):
    """Not enough data *yet* (no users or events so far, a zero mean, too few users): INCONCLUSIVE.

    A canary that has just started, a 1% step whose candidate has not clicked yet, an arm with no user
    yet: none of these is a measurement failure, and rolling back on them would punish harmless
    candidates for the traffic they were given. NaN, missing metrics and malformed data stay ERROR.
    """


class GateConfig(BaseModel):
    """Fields every gate accepts in the policy. Subclasses add their own; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = Field(default=None, description="label in reports; defaults to type:metric[segment]")
    metric: str | None = None
    segment: str | None = None
    # Fail closed: a breach or a failure to measure rolls back; a lack of evidence at the deadline waits
    # for a human.
    on_fail: Action = Action.ROLLBACK
    on_inconclusive: Action = Action.HOLD
    on_error: Action = Action.ROLLBACK
    max_missing_share: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="share of an arm's users whose metric value is missing (NaN, NULL in the source) that "
        "the gate leaves out of the look, counted in its verdict; above it the gate is ERROR. Default 0: any "
        "missing value is ERROR (missing is never zero; leaving users out assumes missing at random)",
    )


class Gate(ABC):
    """Base class of every gate plugin."""

    type: ClassVar[str]
    Config: ClassVar[type[GateConfig]] = GateConfig
    #: True when the gate compares candidate with champion and cannot run without a baseline.
    needs_baseline: ClassVar[bool] = False

    def __init__(self, config: GateConfig) -> None:
        self.config = config

    @classmethod
    def from_spec(cls, spec: dict) -> Gate:
        return cls(cls.Config.model_validate(spec))

    @property
    def name(self) -> str:
        if self.config.name:
            return self.config.name
        label = self.type if self.config.metric is None else f"{self.type}:{self.config.metric}"
        return label if self.config.segment is None else f"{label}[{self.config.segment}]"

    def action_for(self, outcome: Outcome) -> Action | None:
        """The policy's action for a verdict; None for PASS."""
        return {
            Outcome.PASS: None,
            Outcome.FAIL: self.config.on_fail,
            Outcome.INCONCLUSIVE: self.config.on_inconclusive,
            Outcome.ERROR: self.config.on_error,
        }[outcome]

    def evaluate(self, evidence: Evidence) -> Verdict:
        """Judge the evidence. Never raises on bad data: that is an ERROR verdict naming the problem."""
        try:
            evidence, missing = drop_missing(evidence, self.config.metric, self.config.max_missing_share)
            verdict = self._evaluate(evidence)
            if missing is None:
                return verdict
            return dataclasses.replace(
                verdict,
                message=f"{verdict.message} ({missing.describe()})",
                details={**verdict.details, "missing_users": missing.missing},
            )
        except NotEnoughData as exc:
            return Verdict(
                self.name,
                Outcome.INCONCLUSIVE,
                f"not enough data yet: {exc.args[0] if exc.args else 'no data'}",
                metric=self.config.metric,
                n=_users(evidence),
            )
        except (EvidenceError, KeyError, ValueError, FloatingPointError, ZeroDivisionError) as exc:
            reason = exc.args[0] if exc.args else type(exc).__name__
            return Verdict.error(self.name, f"could not measure: {reason}", metric=self.config.metric)

    @abstractmethod
    def _evaluate(self, evidence: Evidence) -> Verdict: ...


def clean(values: np.ndarray, what: str, min_n: int = 1) -> np.ndarray:
    """Return ``values`` as finite floats.

    Raises EvidenceError (ERROR) if any value is NaN or infinite, and NotEnoughData (INCONCLUSIVE) if there
    are none yet or fewer than ``min_n``.
    """
    arr = np.asarray(values, dtype=float).ravel()
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise EvidenceError(f"{what}: {bad} of {arr.size} values are NaN or infinite")
    if arr.size == 0:
        raise NotEnoughData(f"{what}: no users yet")
    if arr.size < min_n:
        raise NotEnoughData(f"{what}: {arr.size} users so far, need at least {min_n}")
    return arr


def arm_of(evidence: Evidence, name: str) -> ArmSample:
    """The arm ``name``; NotEnoughData if it is absent but configured to receive traffic (no user yet).

    A metric source builds arms from the users it has seen, so an arm the split sends traffic to can be
    absent early on. An arm that is neither present nor configured is a KeyError (ERROR) naming it.
    """
    if name in evidence.arms:
        return evidence.arms[name]
    share = evidence.allocation.get(name, 0.0) if evidence.allocation else 0.0
    if share > 0:
        raise NotEnoughData(f"no {name} users yet ({share:g} of the traffic is configured for it)")
    return evidence.arm(name)  # raises the KeyError that names the arm


def _users(evidence: Evidence) -> int:
    return int(sum(a.n_users for a in evidence.arms.values()))
