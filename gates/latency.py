"""Latency gate: compare a quantile (p50, p95, p99) of request latency, candidate against champion.

Means hide tail regressions and Mann-Whitney tests a location shift, not a quantile (the Kayenta issues
in the reference), so this gate compares the quantile itself: the relative change ``q_c / q_0 - 1`` with an
order-statistic interval (:func:`gates.stats.quantiles.quantile_change`). With ``sequential: true``
(default) the interval is a confidence sequence, so looking after every batch keeps its level.

- FAIL: the candidate's quantile is proven more than ``max_increase`` above the champion's (the whole
  interval lies above it).
- PASS: the increase is proven to be at most ``max_increase``.
- INCONCLUSIVE: not enough requests to tell yet.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from gates.base import EvidenceError, Gate, GateConfig, arm_of, clean
from gates.stats.quantiles import min_sample_size, quantile_change
from stagegate.evidence import CANDIDATE, CHAMPION, Evidence
from stagegate.verdict import Outcome, Verdict


class LatencyConfig(GateConfig):
    metric: str | None = "latency_ms"
    quantile: float = Field(default=0.99, gt=0, lt=1)
    max_increase: float = Field(default=0.10, ge=0, description="largest tolerated relative increase")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    sequential: bool = True
    min_requests: int = Field(default=200, ge=2)

    @model_validator(mode="after")
    def _has_metric(self) -> LatencyConfig:
        if not self.metric:
            raise ValueError("a latency gate needs a request-level metric, e.g. latency_ms")
        return self


class LatencyGate(Gate):
    type: ClassVar[str] = "latency"
    Config: ClassVar[type[GateConfig]] = LatencyConfig
    needs_baseline: ClassVar[bool] = True
    config: LatencyConfig

    def _evaluate(self, evidence: Evidence) -> Verdict:
        cfg = self.config
        metric = str(cfg.metric)
        samples = []
        for arm in (CANDIDATE, CHAMPION):
            requests = arm_of(evidence, arm).requests
            if metric not in requests:
                raise EvidenceError(f"no request-level {metric!r} for the {arm} (have: {sorted(requests)})")
            samples.append(clean(requests[metric], f"{metric} ({arm})"))  # empty or NaN: ERROR
        cand, champ = samples
        need = max(cfg.min_requests, min_sample_size(cfg.quantile))
        if min(cand.size, champ.size) < need:
            return Verdict(
                self.name,
                Outcome.INCONCLUSIVE,
                f"{metric}: collecting requests ({min(cand.size, champ.size)} of {need} per arm)",
                metric=metric,
                threshold=cfg.max_increase,
                n=cand.size + champ.size,
            )
        if np.ptp(cand) == 0 and np.ptp(champ) == 0:
            raise EvidenceError(f"{metric}: every request has the same value in both arms (zero variance)")
        res = quantile_change(
            cand,
            champ,
            cfg.quantile,
            confidence=cfg.confidence,
            sequential=cfg.sequential,
            tau=float(np.log1p(max(cfg.max_increase, 0.01))),
        )
        label = f"p{cfg.quantile * 100:g} {metric}"
        kind = "CS" if cfg.sequential else "CI"
        shown = (
            f"{label} {res.candidate.estimate:.4g} vs {res.champion.estimate:.4g} ({res.statistic:+.1%}, "
            f"{cfg.confidence:.0%} {kind} {res.ci_low:+.1%} to {res.ci_high:+.1%})"
        )
        if res.ci_low > cfg.max_increase:
            outcome, message = Outcome.FAIL, f"{shown}: more than {cfg.max_increase:+.0%} proven"
        elif res.ci_high <= cfg.max_increase:
            outcome, message = Outcome.PASS, f"{shown}: within {cfg.max_increase:+.0%}"
        else:
            outcome, message = Outcome.INCONCLUSIVE, f"{shown}: not yet clear of {cfg.max_increase:+.0%}"
        details = {
            "quantile": cfg.quantile,
            "candidate_quantile": res.candidate.estimate,
            "champion_quantile": res.champion.estimate,
            "candidate_se": res.candidate.se,
            "champion_se": res.champion.se,
            "n_candidate": res.candidate.n,
            "n_champion": res.champion.n,
            "sequential": cfg.sequential,
        }
        return Verdict(
            self.name,
            outcome,
            message,
            metric=metric,
            statistic=res.statistic,
            threshold=cfg.max_increase,
            n=res.candidate.n + res.champion.n,
            ci_low=res.ci_low,
            ci_high=res.ci_high,
            details=details,
        )
