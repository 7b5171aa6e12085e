"""Guardrail gate: an absolute safety limit on one arm, judged with an upper (or lower) confidence bound.

For a mean metric the bound is the normal interval of the per-user mean. For a ratio metric (see
``stagegate.evidence.RATIO_METRICS``, e.g. error_rate = errors / requests) the rate is pooled over users and
its standard error comes from the delta method (Deng, Knoblich & Lu, KDD 2018, "Applying the Delta Method
in Metric Analytics"), so that requests clustered in users are not treated as independent. For a rate of
counts, the bound is never tighter than the exact Clopper-Pearson bound on the pooled counts, which keeps
"zero errors in 50 requests" from passing a 0.1% limit.

- FAIL: the breach is proven (the whole interval is beyond the limit).
- PASS: safety is proven (the whole interval is within the limit).
- INCONCLUSIVE: not enough evidence either way yet.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator
from scipy import stats

from gates.base import EvidenceError, Gate, GateConfig, arm_of, clean
from stagegate.evidence import CANDIDATE, RATIO_METRICS, ArmSample, Evidence
from stagegate.verdict import Outcome, Verdict


class GuardrailConfig(GateConfig):
    max: float | None = None
    min: float | None = None
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    arm: str = CANDIDATE
    min_users: int = 2

    @model_validator(mode="after")
    def _has_limit(self) -> GuardrailConfig:
        if self.metric is None:
            raise ValueError("a guardrail gate needs a metric")
        if (self.min is None) == (self.max is None):
            raise ValueError("a guardrail gate needs exactly one of min or max")
        return self


def _mean_interval(values: np.ndarray, z: float) -> tuple[float, float, float]:
    mean = float(values.mean())
    se = float(values.std(ddof=1) / np.sqrt(values.size))
    return mean, mean - z * se, mean + z * se


def _ratio_interval(
    num: np.ndarray, den: np.ndarray, z: float, confidence: float
) -> tuple[float, float, float]:
    total_den = den.sum()
    if total_den <= 0:
        raise EvidenceError("ratio denominator sums to zero")
    n = num.size
    rate = float(num.sum() / total_den)
    # Delta method: Var(sum num / sum den) ~ Var(num - rate * den) * n / (sum den)^2.
    resid = num - rate * den
    se = float(np.sqrt(resid.var(ddof=1) * n) / total_den)
    low, high = max(rate - z * se, 0.0), rate + z * se  # a rate of non-negative counts is never below 0
    if np.allclose(num, np.round(num)) and np.allclose(den, np.round(den)):
        k, trials, tail = int(num.sum()), int(total_den), (1 - confidence) / 2
        cp_high = 1.0 if k >= trials else float(stats.beta.ppf(1 - tail, k + 1, trials - k))
        cp_low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, trials - k + 1))
        low, high = min(low, cp_low), max(high, cp_high)
    return rate, low, high


class GuardrailGate(Gate):
    type: ClassVar[str] = "guardrail"
    Config: ClassVar[type[GateConfig]] = GuardrailConfig
    config: GuardrailConfig

    def _estimate(self, arm: ArmSample) -> tuple[float, float, float, int]:
        cfg = self.config
        z = float(stats.norm.ppf(0.5 + cfg.confidence / 2))
        what = f"{cfg.metric} ({cfg.arm})"
        if cfg.metric in RATIO_METRICS and cfg.metric not in arm.metrics:
            num_name, den_name = RATIO_METRICS[cfg.metric]
            missing = [m for m in (num_name, den_name) if m not in arm.metrics]
            if missing:
                raise EvidenceError(
                    f"{cfg.metric} needs per-user {' and '.join(missing)}, not in the evidence"
                )
            num = clean(arm.metric(num_name, cfg.segment), f"{num_name} ({cfg.arm})", cfg.min_users)
            den = clean(arm.metric(den_name, cfg.segment), f"{den_name} ({cfg.arm})", cfg.min_users)
            return (*_ratio_interval(num, den, z, cfg.confidence), num.size)
        values = clean(arm.metric(cfg.metric, cfg.segment), what, cfg.min_users)
        if np.ptp(values) == 0:
            raise EvidenceError(f"{what}: all {values.size} values are equal, so no interval can be formed")
        return (*_mean_interval(values, z), values.size)

    def _evaluate(self, evidence: Evidence) -> Verdict:
        cfg = self.config
        value, low, high, n = self._estimate(arm_of(evidence, cfg.arm))
        if cfg.max is not None:
            limit, breached, safe, side = cfg.max, low > cfg.max, high <= cfg.max, "maximum"
        else:
            limit, breached, safe, side = cfg.min, high < cfg.min, low >= cfg.min, "minimum"
        interval = f"{value:.4g} ({cfg.confidence:.0%} CI {low:.4g} to {high:.4g})"
        if breached:
            outcome, message = (
                Outcome.FAIL,
                f"{cfg.metric} is {interval}: breach of the {side} {limit:g} proven",
            )
        elif safe:
            outcome, message = Outcome.PASS, f"{cfg.metric} is {interval}: within the {side} {limit:g}"
        else:
            outcome, message = (
                Outcome.INCONCLUSIVE,
                f"{cfg.metric} is {interval}: not yet clear of the {side} {limit:g}",
            )
        return Verdict(
            self.name,
            outcome,
            message,
            metric=cfg.metric,
            statistic=value,
            threshold=limit,
            n=n,
            ci_low=low,
            ci_high=high,
        )
