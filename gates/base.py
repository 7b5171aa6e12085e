"""The gate protocol: evidence in, verdict out. Pure: no Prefect, no MLflow, no I/O.

A gate type is a subclass of :class:`Gate` with a pydantic ``Config`` (its policy fields). The policy
names the type; :mod:`stagegate.plugins` finds the class through the ``stagegate.gates`` entry-point
group, where the built-ins are registered exactly as a third party's gates would be.

Failing closed is built in: :meth:`Gate.evaluate` turns any data problem (a missing metric or arm, NaN,
empty input) into an ERROR verdict that names it, so a broken metric can never read as a PASS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stagegate.evidence import Evidence
from stagegate.verdict import Action, Outcome, Verdict


class EvidenceError(ValueError):
    """The evidence cannot support a verdict (missing, NaN, empty, degenerate): the gate says ERROR."""


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
            return self._evaluate(evidence)
        except (EvidenceError, KeyError, ValueError, FloatingPointError, ZeroDivisionError) as exc:
            reason = exc.args[0] if exc.args else type(exc).__name__
            return Verdict.error(self.name, f"could not measure: {reason}", metric=self.config.metric)

    @abstractmethod
    def _evaluate(self, evidence: Evidence) -> Verdict: ...


def clean(values: np.ndarray, what: str, min_n: int = 1) -> np.ndarray:
    """Return ``values`` as floats, or raise EvidenceError if they are empty, too few or not all finite."""
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise EvidenceError(f"{what}: no data")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise EvidenceError(f"{what}: {bad} of {arr.size} values are NaN or infinite")
    if arr.size < min_n:
        raise EvidenceError(f"{what}: {arr.size} values, need at least {min_n}")
    return arr
