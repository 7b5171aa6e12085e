"""Sequential gate: a canary metric judged after every batch, valid however often it is looked at.

The effect is the candidate's change against the champion (relative by default), per user: a mean of
per-user values, or for ratio metrics (``stagegate.evidence.RATIO_METRICS``, e.g. ctr = clicks /
impressions) the pooled ratio with a delta-method variance. The estimate and its variance come from
:mod:`gates.stats.two_sample`, built to stay valid on zero-inflated heavy-tailed revenue, sparse counts
and small canaries: each arm's variance is ``max(own, pooled under H0)``, the relative change is tested
through the linear (Fieller) statistic ``(rho m_0 - m_c) / sqrt(V_c + rho^2 V_0)`` rather than a log ratio,
per-user values are winsorised at the pooled ``winsorize`` quantile (0.999 by default), and a look is
trusted only once each arm expects ``min_events`` users with a non-zero value. When both arms carry
``pre_period[metric]``, CUPED removes the variance the pre-period explains. docs/statistics.md has the
simulations that check it.

"Not enough data yet" (an arm with no user yet, no events, a zero champion mean, fewer than ``min_users``
users or ``min_events`` expected events) is INCONCLUSIVE, never ERROR; such looks add nothing to the
sequential statistics. NaN, missing metrics and degenerate data stay ERROR.

Every look is recomputed from ``evidence.history`` (cumulative, oldest first) plus the current evidence, and
the decision rule of :mod:`gates.stats.decision` is applied:

- FAIL: harm beyond ``harm_margin`` is proven (roll back);
- PASS: non-inferiority at the MDE (or a gain) is proven (promote);
- INCONCLUSIVE: keep going.

``method: group_sequential`` (default) uses Lan-DeMets spending (Pocock-type by default) with non-binding
beta-spending futility up to ``max_users`` candidate users; the first look at or past ``max_users`` is the
final analysis and later looks repeat its decision (never re-tested). ``method: always_valid`` uses a pair
of mixture SPRTs / confidence sequences (a scale mixture around ``tau = mde``) and needs no planned maximum.
docs/benchmarks.md has both measured.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from gates.base import EvidenceError, Gate, GateConfig, NotEnoughData, arm_of, clean
from gates.stats.budget import canary_harm_test
from gates.stats.cuped import cuped
from gates.stats.decision import (
    Decision,
    SequentialDecision,
    always_valid_decision,
    group_sequential_decision,
)
from gates.stats.effects import EffectEstimate
from gates.stats.group_sequential import Spending
from gates.stats.two_sample import Status, TwoSampleEffect, expected_events, winsorize_pooled
from gates.stats.two_sample import mean_effect as two_sample_mean
from gates.stats.two_sample import ratio_effect as two_sample_ratio
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
    winsorize: float | None = Field(
        default=0.999, gt=0.5, lt=1.0, description="cap users at this pooled quantile (null: no cap)"
    )
    min_users: int = Field(default=100, ge=2, description="users per arm before a look counts")
    min_events: float = Field(
        default=10.0,
        ge=0,
        description="users with a non-zero value each arm must expect before a look counts",
    )
    budget: Literal["step", "canary"] = Field(
        default="step",
        description=(
            "always_valid: 'canary' carries harm evidence across ramp steps (looks of earlier steps in "
            "evidence.history, grouped by their allocation) and shares alpha with budget_gates gates"
        ),
    )
    budget_gates: int = Field(default=1, ge=1, description="budget canary: sequential gates sharing alpha")

    @model_validator(mode="after")
    def _consistent(self) -> SequentialConfig:
        if self.metric is None:
            raise ValueError("a sequential gate needs a metric")
        if self.harm_margin >= self.mde:
            raise ValueError(f"harm_margin ({self.harm_margin}) must be smaller than mde ({self.mde})")
        if self.relative and self.mde >= 1.0:
            raise ValueError(f"a relative mde must be below 1 (a 100% loss), got {self.mde}")
        if self.budget == "canary" and self.method != "always_valid":
            raise ValueError(
                "budget: canary needs method: always_valid (its evidence is carried as e-values)"
            )
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
        current, adjustments = self._effect(evidence)  # NotEnoughData: INCONCLUSIVE; bad data: ERROR
        # Looks grouped into ramp steps (a step = consecutive looks under the same split); each step's
        # evidence is cumulative within the step.
        steps: list[list[EffectEstimate]] = []
        previous_split: object = _NO_SPLIT
        skipped = 0
        for look in (*evidence.history, evidence):
            split = _split_key(look)
            if split != previous_split:
                steps.append([])
                previous_split = split
            if look is evidence:
                steps[-1].append(current)
                continue
            try:
                steps[-1].append(self._effect(look)[0])
            except NotEnoughData:
                continue  # a look before the data could be trusted adds nothing; it is not an error
            except (EvidenceError, KeyError, ValueError):
                skipped += 1  # a look that could not be measured adds no information; it is not trusted
        steps = [step for step in steps if step]
        looks = steps[-1]  # the current step: the per-step tests see only its looks
        sign = 1.0 if cfg.direction == "increase" else -1.0
        estimates = sign * np.array([e.estimate for e in looks])
        variances = np.array([e.variance for e in looks])
        mde, harm_margin = self._test_scale(cfg.mde), self._test_scale(cfg.harm_margin)
        extra: dict[str, float | str] = {"skipped_looks": skipped, "steps": len(steps), **adjustments}
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
        elif cfg.budget == "step":
            result = always_valid_decision(
                estimates, variances, mde=mde, alpha=cfg.alpha, beta=cfg.beta, harm_margin=harm_margin
            )
        else:
            # One budget for the whole canary (gates.stats.budget): harm evidence carried across the steps,
            # alpha shared by the canary's budget_gates sequential gates; promotion stays per step.
            result = always_valid_decision(
                estimates,
                variances,
                mde=mde,
                alpha=cfg.alpha / cfg.budget_gates,
                beta=cfg.beta,
                harm_margin=harm_margin,
            )
            carried = canary_harm_test(
                [
                    (sign * np.array([e.estimate for e in step]), np.array([e.variance for e in step]))
                    for step in steps
                ],
                mde=mde,
                alpha=cfg.alpha,
                n_metrics=cfg.budget_gates,
                harm_margin=harm_margin,
            )
            if carried.reject:
                decision = Decision.ROLLBACK
            elif result.decision is Decision.ROLLBACK:  # this step alone, not the canary's product: wait
                decision = Decision.CONTINUE
            else:
                decision = result.decision
            result = dataclasses.replace(
                result,
                decision=decision,
                harm_statistic=float(carried.log_e_value),
                harm_boundary=carried.threshold,
                p_value=float(min(1.0, np.exp(-float(carried.max_log_e_value)))),
            )
            extra |= {"budget": "canary", "carried_log_e_value": float(carried.carried)}
        return self._verdict(result, current, extra)

    def _test_scale(self, margin: float) -> float:
        """A margin (a loss, as a positive number) on the scale of the test (relative or absolute)."""
        return float(margin)

    def _report(self, value: float) -> float:
        """A value on the test scale in the policy's unit (a relative change if relative)."""
        return float(value)

    def _effect(self, evidence: Evidence) -> tuple[EffectEstimate, dict[str, float]]:
        """The effect at one look and the adjustments made; NotEnoughData while it cannot be trusted yet."""
        cfg = self.config
        cand, champ = arm_of(evidence, CANDIDATE), arm_of(evidence, CHAMPION)
        metric = str(cfg.metric)
        scale = "relative" if cfg.relative else "difference"
        # rho of the harm hypothesis "candidate = rho x champion" (the pooled variance is taken under it)
        rho = 1.0 - cfg.harm_margin if cfg.direction == "increase" else 1.0 + cfg.harm_margin
        common = {"scale": scale, "null_ratio": rho if cfg.relative else 1.0}
        if metric in RATIO_METRICS and metric not in cand.metrics:
            num, den = RATIO_METRICS[metric]
            values = [
                clean(arm.metric(name, cfg.segment), f"{name} ({label})")
                for arm, label in ((cand, "candidate"), (champ, "champion"))
                for name in (num, den)
            ]
            self._enough_users(values[0].size, values[2].size)
            if values[1].sum() <= 0 or values[3].sum() <= 0:
                raise NotEnoughData(f"{den} sums to zero in an arm: no {den} yet")
            effect = two_sample_ratio(*values, min_events=cfg.min_events, **common)  # type: ignore[arg-type]
            return self._checked(effect), {"ratio_metric": 1.0}
        y_c = clean(cand.metric(metric, cfg.segment), f"{metric} (candidate)")
        y_0 = clean(champ.metric(metric, cfg.segment), f"{metric} (champion)")
        self._enough_users(y_c.size, y_0.size)
        events = expected_events(y_c, y_0)  # on the raw values: CUPED moves zeros off zero
        adjustments: dict[str, float] = {"expected_events": float(events)}
        if cfg.winsorize is not None:
            y_c, y_0, cap = winsorize_pooled(y_c, y_0, cfg.winsorize)
            n_capped = int(np.count_nonzero(y_c == cap) + np.count_nonzero(y_0 == cap))
            adjustments |= {"winsorize_cap": float(cap), "winsorized_users": n_capped}
        if cfg.cuped and metric in cand.pre_period and metric in champ.pre_period and cfg.segment is None:
            # The adjusted arm means estimate the same population means with less variance, so the ratio
            # of adjusted means is the CUPED estimate of the relative change.
            adjusted = cuped(y_c, cand.pre_period[metric], y_0, champ.pre_period[metric])
            y_c, y_0 = adjusted.candidate, adjusted.champion
            adjustments |= {
                "cuped_theta": adjusted.theta,
                "cuped_variance_reduction": adjusted.variance_reduction,
            }
        effect = two_sample_mean(y_c, y_0, min_events=cfg.min_events, events=events, **common)  # type: ignore[arg-type]
        return self._checked(effect), adjustments

    def _enough_users(self, n_c: int, n_0: int) -> None:
        if min(n_c, n_0) < self.config.min_users:
            raise NotEnoughData(
                f"{self.config.metric}: collecting users ({min(n_c, n_0)} of {self.config.min_users} per arm)"
            )

    def _checked(self, effect: TwoSampleEffect) -> EffectEstimate:
        """The effect as a scalar estimate, or the reason it cannot be tested (wait, or ERROR)."""
        cfg, status = self.config, Status(int(effect.status))
        metric = cfg.metric
        if status is Status.ZERO_VARIANCE:
            raise EvidenceError(f"zero variance: every user has the same {metric} in both arms")
        if status is Status.NEGATIVE_BASELINE:
            raise EvidenceError(
                f"{metric}: the champion's mean is negative, so a relative change is undefined"
            )
        if status is Status.NO_EVENTS:
            raise NotEnoughData(f"{metric}: no events yet (every user is at zero in both arms)")
        if status is Status.CHAMPION_MEAN_ZERO:
            raise NotEnoughData(
                f"{metric}: the champion's mean is still zero, a relative change is not defined yet"
            )
        if status is Status.TOO_FEW_EVENTS:
            raise NotEnoughData(
                f"{metric}: the smaller arm expects {float(effect.expected_events):.1f} users with an event, "
                f"{cfg.min_events:g} are needed before the normal approximation is trusted"
            )
        if status is Status.TOO_FEW_USERS:
            raise NotEnoughData(f"{metric}: fewer than 2 users in an arm")
        return EffectEstimate(
            float(effect.estimate),
            float(effect.variance),
            float(effect.candidate_mean),
            float(effect.champion_mean),
            effect.n_candidate,
            effect.n_champion,
            effect.scale,  # type: ignore[arg-type]
        )

    def _verdict(
        self, r: SequentialDecision, current: EffectEstimate, extra: dict[str, float | str]
    ) -> Verdict:
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
        if r.final:
            where = f"final analysis at look {r.looks}, the planned maximum; later looks are not re-tested"
        if r.decision is Decision.ROLLBACK and extra.get("budget") == "canary":
            outcome = Outcome.FAIL
            message = (
                f"{change}: harm proven over the canary's {extra['steps']} steps (log e-value "
                f"{r.harm_statistic:.2f} reached {r.harm_boundary:.2f}; {where})"
            )
        elif r.decision is Decision.ROLLBACK:
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
            "se": r.se,  # on the test scale (the relative change when relative)
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
            details["information"] = r.information
            details["final"] = r.final  # NaN for always-valid, and NaN != NaN in comparisons
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


_NO_SPLIT = object()


def _split_key(look: Evidence) -> tuple[tuple[str, float], ...]:
    """The look's traffic split, normalised: looks under the same split belong to the same ramp step."""
    total = sum(look.allocation.values()) if look.allocation else 0.0
    if not total:
        return ()
    return tuple(sorted((arm, round(share / total, 9)) for arm, share in look.allocation.items()))
