"""The verdict contract: what every gate returns.

Four outcomes, after Argo Rollouts' analysis runs (Successful, Failed, Inconclusive, Error):

- PASS: the evidence meets the gate's limit.
- FAIL: the evidence breaks the limit (a regression, a breach) with the gate's stated confidence.
- INCONCLUSIVE: not enough evidence yet; a sequential gate says "keep looking".
- ERROR: the gate could not measure (missing, NaN or empty data, zero variance). Never a PASS.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    ERROR = "ERROR"


class Action(StrEnum):
    """What the pipeline does with a non-PASS verdict (set per gate in the policy)."""

    ROLLBACK = "rollback"  # return all traffic to the champion, tag the candidate rolled_back
    HOLD = "hold"  # stop and wait for a human
    RECORD = "record"  # dry run: log the verdict, never act on it


@dataclass(frozen=True)
class Verdict:
    """One gate's judgement of one look at the evidence.

    ``statistic`` is the measured quantity (an estimate, a p-value, a bound), ``threshold`` the limit or
    boundary it was compared with, ``n`` the sample size behind it (users, or requests for request-level
    gates) and ``message`` one human sentence that a release manager can read without the code.
    """

    gate: str
    outcome: Outcome
    message: str
    metric: str | None = None
    statistic: float | None = None
    threshold: float | None = None
    n: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A PASS must rest on a real number: a NaN statistic can never be a PASS (fail closed).
        if self.outcome is Outcome.PASS and self.statistic is not None and not math.isfinite(self.statistic):
            raise ValueError(f"gate {self.gate!r}: a PASS verdict cannot carry a non-finite statistic")

    @classmethod
    def error(cls, gate: str, message: str, metric: str | None = None, n: int = 0) -> Verdict:
        return cls(gate=gate, outcome=Outcome.ERROR, message=message, metric=metric, n=n)

    def as_row(self) -> dict[str, Any]:
        """A flat dict for tables (MLflow table artifacts, Prefect table artifacts, the CLI)."""
        row = asdict(self)
        row["outcome"] = self.outcome.value
        row.pop("details")
        return row
