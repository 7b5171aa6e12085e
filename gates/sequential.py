"""Sequential gate: a canary metric judged after every batch, valid however often it is looked at.

The effect is the candidate's change against the champion (relative by default), per user: a mean of
per-user values, or for ratio metrics (``stagegate.evidence.RATIO_METRICS``, e.g. ctr = clicks /
impressions) the pooled ratio with a delta-method variance. Heavy tails can be winsorised (pooled cap) and,
when both arms carry ``pre_period[metric]``, CUPED removes the variance the pre-period explains. Relative
changes are tested on the log scale, ``log(m_c / m_0)``, whose z-statistic stays symmetric for skewed
metrics at small samples (see :mod:`gates.stats.effects`); margins are moved to that scale
(``log(1 - mde)``) and estimates and bounds are reported back as relative changes.

Every look is recomputed from ``evidence.history`` (cumulative, oldest first) plus the current evidence, and
the decision rule of :mod:`gates.stats.decision` is applied:

- FAIL: harm beyond ``harm_margin`` is proven (roll back);
- PASS: non-inferiority at the MDE (or a gain) is proven (promote);
- INCONCLUSIVE: keep going.

``method: group_sequential`` (default) uses Lan-DeMets spending (Pocock-type by default) with non-binding
beta-spending futility up to ``max_users`` candidate users; ``method: always_valid`` uses a pair of mixture
SPRTs / confidence sequences and needs no planned maximum. docs/benchmarks.md has both measured.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from gates.base import EvidenceError, Gate, GateConfig, clean
from gates.stats.cuped import cuped
from gates.stats.decision import (
    Decision,
    SequentialDecision,
    always_valid_decision,
    group_sequential_decision,
)
from gates.stats.effects import EffectEstimate, mean_effect, ratio_effect
from gates.stats.group_sequential import Spending
from gates.stats.robust import winsorize
from stagegate.evidence import CANDIDATE, CHAMPION, RATIO_METRICS, Evidence
from stagegate.verdict import Outcome, Verdict


class SequentialConfig(GateConfig):
    method: Literal["group_sequential", "always_valid"] = "group_sequential"
    mde: float = Field(gt=0, description="minimum detectable effect (harm), relative unless relative: false")
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="false-rollback budget (one-sided)")
    # 0.18 rather than the textbook 0.2: the design then misses a regression at the MDE 18% of the time,
    # which keeps the measured rate under a 20% target with Monte-Carlo margin (docs/benchmarks.md).
    beta: float = Field(default=0.18, gt=0, lt=0.5, description="missed-regression budget at the MDE")
    harm_margin: float = Field(default=0.0, ge=0, description="harm smaller than this is tolerated")
    max_users: int | None = Field(default=None, gt=0, description="group_sequential: planned candidate users")
    spending: Spending = "pocock"
    futility_spending: Spending = "pocock"
    direction: Literal["increase", "decrease"] = "increase"
    relative: bool = True
    cuped: bool = True
    winsorize: float | None = Field(default=None, gt=0.5, lt=1.0, description="cap users at this quantile")
    min_users: int = Field(default=100, ge=2, description="users per arm before a look counts")

    @model_validator(mode="after")
    def _consistent(self) -> SequentialConfig:
        if self.metric is None:
            raise ValueError("a sequential gate needs a metric")
        if self.harm_margin >= self.mde:
            raise ValueError(f"harm_margin ({self.harm_margin}) must be smaller than mde ({self.mde})")
        if self.relative and self.mde >= 1.0:
            raise ValueError(f"a relative mde must be below 1 (a 100% loss), got {self.mde}")
        if self.method == "group_sequential" and self.max_users is None:
            raise ValueError(
                "method group_sequential needs max_users (planned candidate users; see "
                "gates.stats.planning.plan_group_sequential), or use method: always_valid"
            )
        return self


class SequentialGate(Gate):
    type: ClassVar[str] = "sequential"
    Config: ClassVar[type[GateConfig]] = SequentialConfig
    needs_baseline: ClassVar[bool] = True
    config: SequentialConfig

    def _evaluate(self, evidence: Evidence) -> Verdict:
        cfg = self.config
        measured = self._effect(evidence)  # raises (ERROR) on bad current data
        if measured is None:
            n = evidence.arm(CANDIDATE).n_users
            return Verdict(
                self.name,
                Outcome.INCONCLUSIVE,
                f"{cfg.metric}: collecting users ({n} of {cfg.min_users} per arm)",
                metric=cfg.metric,
                n=n + evidence.arm(CHAMPION).n_users,
                threshold=-cfg.harm_margin,
            )
        current, adjustments = measured
        looks, skipped = [], 0
        for past in evidence.history:
            try:
                earlier = self._effect(past)
            except (EvidenceError, KeyError, ValueError):
                skipped += 1  # a look that could not be measured adds no information; it is not trusted
                continue
            if earlier is not None:
                looks.append(earlier[0])
        looks.append(current)
        sign = 1.0 if cfg.direction == "increase" else -1.0
        estimates = sign * np.array([e.estimate for e in looks])
        variances = np.array([e.variance for e in looks])
        mde, harm_margin = self._test_scale(cfg.mde), self._test_scale(cfg.harm_margin)
        if cfg.method == "group_sequential":
            assert cfg.max_users is not None
            result = group_sequential_decision(
                estimates,
                variances,
                np.array([e.n_candidate for e in looks]),
                max_sample_size=cfg.max_users,
                mde=mde,
                alpha=cfg.alpha,
                beta=cfg.beta,
                harm_margin=harm_margin,
                spending=cfg.spending,
                futility_spending=cfg.futility_spending,
            )
        else:
            result = always_valid_decision(
                estimates, variances, mde=mde, alpha=cfg.alpha, beta=cfg.beta, harm_margin=harm_margin
            )
        return self._verdict(result, current, {"skipped_looks": skipped, **adjustments})

    def _test_scale(self, margin: float) -> float:
        """A margin (a loss, as a positive number) on the scale of the test: ``-log(1 - m)`` if relative."""
        return float(-np.log1p(-margin)) if self.config.relative else margin

    def _report(self, value: float) -> float:
        """A value on the test scale back as the policy's unit (a relative change if relative)."""
        return float(np.expm1(value)) if self.config.relative else float(value)

    def _effect(self, evidence: Evidence) -> tuple[EffectEstimate, dict[str, float]] | None:
        """The effect at one look and the adjustments made, or None while an arm has < ``min_users`` users."""
        cfg = self.config
        cand, champ = evidence.arm(CANDIDATE), evidence.arm(CHAMPION)
        if min(cand.n_users, champ.n_users) < cfg.min_users and cand.n_users > 0 and champ.n_users > 0:
            return None
        metric = str(cfg.metric)
        scale = "log" if cfg.relative else "difference"
        if metric in RATIO_METRICS and metric not in cand.metrics:
            num, den = RATIO_METRICS[metric]
            effect = ratio_effect(
                clean(cand.metric(num, cfg.segment), f"{num} (candidate)", 2),
                clean(cand.metric(den, cfg.segment), f"{den} (candidate)", 2),
                clean(champ.metric(num, cfg.segment), f"{num} (champion)", 2),
                clean(champ.metric(den, cfg.segment), f"{den} (champion)", 2),
                scale=scale,
            )
            return effect, {"ratio_metric": 1.0}
        y_c = clean(cand.metric(metric, cfg.segment), f"{metric} (candidate)", 2)
        y_0 = clean(champ.metric(metric, cfg.segment), f"{metric} (champion)", 2)
        adjustments: dict[str, float] = {}
        if cfg.winsorize is not None:
            capped = winsorize(y_c, y_0, upper=cfg.winsorize)
            y_c, y_0 = capped.values
            adjustments |= {"winsorize_cap": capped.upper_cap, "winsorized_users": capped.n_capped}
        if cfg.cuped and metric in cand.pre_period and metric in champ.pre_period and cfg.segment is None:
            # The adjusted arm means estimate the same population means with less variance, so the ratio
            # of adjusted means is the CUPED estimate of the relative change.
            adjusted = cuped(y_c, cand.pre_period[metric], y_0, champ.pre_period[metric])
            effect = mean_effect(adjusted.candidate, adjusted.champion, scale=scale)
            adjustments |= {
                "cuped_theta": adjusted.theta,
                "cuped_variance_reduction": adjusted.variance_reduction,
            }
            return effect, adjustments
        return mean_effect(y_c, y_0, scale=scale), adjustments

    def _verdict(self, r: SequentialDecision, current: EffectEstimate, extra: dict[str, float]) -> Verdict:
        cfg = self.config
        fmt = (lambda x: f"{x:+.2%}") if cfg.relative else (lambda x: f"{x:+.4g}")
        estimate, ci_low, ci_high = self._report(r.estimate), self._report(r.ci_low), self._report(r.ci_high)
        label = "change" if cfg.direction == "increase" else "improvement (lower is better)"
        change = f"{cfg.metric} {label} {fmt(estimate)}"
        where = (
            f"look {r.looks}, {r.information:.0%} of the planned users"
            if r.method == "group_sequential"
            else f"look {r.looks}"
        )
        if r.decision is Decision.ROLLBACK:
            outcome = Outcome.FAIL
            bound = fmt(ci_high)
            message = f"{change}: harm proven, upper bound {bound} is below {fmt(-cfg.harm_margin)} ({where})"
        elif r.decision is Decision.PROMOTE:
            outcome = Outcome.PASS
            bound = fmt(ci_low)
            message = (
                f"{change}: non-inferiority proven, lower bound {bound} clears {fmt(-cfg.mde)} ({where})"
            )
        else:
            outcome = Outcome.INCONCLUSIVE
            message = (
                f"{change} (bounds {fmt(ci_low)} to {fmt(ci_high)}): neither harm beyond "
                f"{fmt(-cfg.harm_margin)} nor non-inferiority at {fmt(-cfg.mde)} proven yet ({where})"
            )
        details = {
            "method": r.method,
            "looks": r.looks,
            "scale": current.scale,
            "se": r.se,  # on the test scale (log ratio when relative)
            "harm_statistic": r.harm_statistic,
            "harm_boundary": r.harm_boundary,
            "promote_statistic": r.promote_statistic,
            "promote_boundary": r.promote_boundary,
            "p_value_harm": r.p_value,
            "candidate_mean": current.candidate_mean,
            "champion_mean": current.champion_mean,
            "n_candidate": current.n_candidate,
            "n_champion": current.n_champion,
            **extra,
        }
        if r.method == "group_sequential":
            details["information"] = r.information  # NaN for always-valid, and NaN != NaN in comparisons
        return Verdict(
            self.name,
            outcome,
            message,
            metric=cfg.metric,
            statistic=estimate,
            threshold=-cfg.harm_margin,
            n=current.n_candidate + current.n_champion,
            ci_low=ci_low,
            ci_high=ci_high,
            details=details,
        )
