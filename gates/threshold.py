"""Threshold gate: an absolute limit on one arm's metric (TFX-style value thresholds).

The statistic is the mean of the per-user values (or a scalar the stage computed, such as catalogue
coverage). Deterministic: the limit is the decision, with no interval, which is right for health checks
such as "NDCG@10 on cold-start users at least 0.05" or "out-of-stock share at most 1%".
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from gates.base import Gate, GateConfig, arm_of, clean
from stagegate.evidence import CANDIDATE, Evidence
from stagegate.verdict import Outcome, Verdict


class ThresholdConfig(GateConfig):
    min: float | None = None
    max: float | None = None
    arm: str = CANDIDATE
    min_users: int = 1

    @model_validator(mode="after")
    def _has_limit(self) -> ThresholdConfig:
        if self.metric is None:
            raise ValueError("a threshold gate needs a metric")
        if self.min is None and self.max is None:
            raise ValueError("a threshold gate needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class ThresholdGate(Gate):
    type: ClassVar[str] = "threshold"
    Config: ClassVar[type[GateConfig]] = ThresholdConfig
    config: ThresholdConfig

    def _evaluate(self, evidence: Evidence) -> Verdict:
        cfg = self.config
        scalars = evidence.scalars.get(cfg.arm, {})
        arm = arm_of(evidence, cfg.arm)
        if cfg.metric in scalars and cfg.metric not in arm.metrics:
            value, n = float(clean([scalars[cfg.metric]], f"{cfg.metric} ({cfg.arm})")[0]), arm.n_users
        else:
            values = clean(arm.metric(cfg.metric, cfg.segment), self._what(), min_n=cfg.min_users)
            value, n = float(values.mean()), values.size
        too_low = cfg.min is not None and value < cfg.min
        too_high = cfg.max is not None and value > cfg.max
        limit = cfg.min if too_low else cfg.max if too_high else (cfg.min if cfg.min is not None else cfg.max)
        if too_low or too_high:
            word = "below the minimum" if too_low else "above the maximum"
            return self._verdict(
                Outcome.FAIL, value, limit, n, f"{self._what()} is {value:.4g}, {word} {limit:g}"
            )
        return self._verdict(Outcome.PASS, value, limit, n, f"{self._what()} is {value:.4g}, within limits")

    def _what(self) -> str:
        seg = f" on {self.config.segment} users" if self.config.segment else ""
        return f"{self.config.metric}{seg} ({self.config.arm})"

    def _verdict(self, outcome: Outcome, value: float, limit: float | None, n: int, message: str) -> Verdict:
        return Verdict(
            self.name, outcome, message, metric=self.config.metric, statistic=value, threshold=limit, n=n
        )
