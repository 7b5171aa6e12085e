"""Relative gate: the candidate against the champion, decided on a bootstrap confidence interval.

The change is relative (mean_candidate / mean_champion - 1) unless ``relative: false``. Users are resampled,
paired when the evidence is paired (offline: the same held-out users scored by both models), independent
otherwise. With ``direction: decrease`` a lower value is the improvement (e.g. calibration KL).

- PASS: the whole interval of the improvement lies at or above ``min_change`` (the loss is proven small).
- FAIL: the whole interval lies below ``min_change`` (a loss larger than allowed is proven).
- INCONCLUSIVE: the interval straddles ``min_change``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from gates.base import Gate, GateConfig, arm_of, clean
from gates.stats.bootstrap import paired_bootstrap, unpaired_bootstrap
from stagegate.evidence import CANDIDATE, CHAMPION, Evidence
from stagegate.verdict import Outcome, Verdict


class RelativeConfig(GateConfig):
    min_change: float = Field(description="smallest acceptable improvement, e.g. -0.01 allows a 1% loss")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    relative: bool = True
    direction: Literal["increase", "decrease"] = "increase"
    n_resamples: int = Field(default=2000, ge=200)
    seed: int = 0
    min_users: int = 20

    @model_validator(mode="after")
    def _has_metric(self) -> RelativeConfig:
        if self.metric is None:
            raise ValueError("a relative gate needs a metric")
        return self


class RelativeGate(Gate):
    type: ClassVar[str] = "relative"
    Config: ClassVar[type[GateConfig]] = RelativeConfig
    needs_baseline: ClassVar[bool] = True
    config: RelativeConfig

    def _evaluate(self, evidence: Evidence) -> Verdict:
        cfg = self.config
        seg = f" on {cfg.segment} users" if cfg.segment else ""
        cand = clean(
            arm_of(evidence, CANDIDATE).metric(cfg.metric, cfg.segment),
            f"{cfg.metric}{seg} (candidate)",
            cfg.min_users,
        )
        champ = clean(
            arm_of(evidence, CHAMPION).metric(cfg.metric, cfg.segment),
            f"{cfg.metric}{seg} (champion)",
            cfg.min_users,
        )
        boot = paired_bootstrap if evidence.paired else unpaired_bootstrap
        res = boot(
            cand,
            champ,
            relative=cfg.relative,
            confidence=cfg.confidence,
            n_resamples=cfg.n_resamples,
            seed=cfg.seed,
        )
        sign = 1.0 if cfg.direction == "increase" else -1.0
        est, low, high = sign * res.statistic, *sorted((sign * res.ci_low, sign * res.ci_high))
        unit = "relative change" if cfg.relative else "change"
        interval = (
            f"{unit} {est:+.2%} ({cfg.confidence:.0%} CI {low:+.2%} to {high:+.2%})"
            if cfg.relative
            else (f"{unit} {est:+.4g} ({cfg.confidence:.0%} CI {low:+.4g} to {high:+.4g})")
        )
        if low >= cfg.min_change:
            outcome, verb = Outcome.PASS, "at or above"
        elif high < cfg.min_change:
            outcome, verb = Outcome.FAIL, "entirely below"
        else:
            outcome, verb = Outcome.INCONCLUSIVE, "straddling"
        message = f"{cfg.metric}{seg}: {interval}, {verb} the allowed {cfg.min_change:+g}"
        return Verdict(
            self.name,
            outcome,
            message,
            metric=cfg.metric,
            statistic=est,
            threshold=cfg.min_change,
            n=int(res.n),
            ci_low=low,
            ci_high=high,
            details={
                "paired": evidence.paired,
                "champion_mean": float(champ.mean()),
                "candidate_mean": float(cand.mean()),
            },
        )
