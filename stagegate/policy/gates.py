"""A stage's gates as the policy configures them: roles, margins, error limits, levels; one look judged.

A gate entry in the policy holds the gate type's own fields (validated by the type's schema) and three
fields of the pipeline, taken out before the gate is built:

- ``role``: ``success`` | ``guardrail`` | ``quality`` (stagegate.decision.Role), required by the
  risk_aware rule;
- ``margin``: a guardrail's non-inferiority margin (a loss, as a positive number, in the gate's unit);
  it becomes the gate's own margin field (``mde`` for a sequential gate: PASS = non-inferiority within it);
- ``consecutive_error_limit``: ERROR looks in a row tolerated before ERROR acts (default
  :data:`DEFAULT_ERROR_LIMIT`).

Under ``risk_aware`` the flow runs each gate at the rule's levels
(:func:`stagegate.decision.risk_aware_levels`), written into the gate's config, so the policy must not set
``alpha``/``beta`` on those gates itself. The
sequential gate's two error rates are those of its two tests: ``alpha`` for harm (FAIL), ``beta`` for
non-inferiority within ``mde`` (PASS). A guardrail therefore runs with ``beta`` = the guardrail alpha (a
candidate whose true harm is the margin passes at most that often) and ``alpha`` = the deterioration
level; a success metric runs its harm test at the deterioration level, and a second, mirrored copy of the
gate (direction reversed, ``harm_margin: 0``) whose harm test at ``alpha / S`` is the superiority test:
its FAIL proves the metric moved the right way (``<gate> better`` PASS).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stagegate.decision import (
    GateLook,
    LookDecision,
    RiskAwareLevels,
    Role,
    decide,
    decide_risk_aware,
    risk_aware_levels,
    update_error_streaks,
)
from stagegate.plugins import build_gate
from stagegate.verdict import Outcome, Verdict

#: Argo Rollouts tolerates 4 consecutive errors, at measurement intervals of minutes. A canary look here
#: is hours apart (12 h in policies/default.yaml) and the metric query is already retried within a look,
#: so 2 tolerates a day without a measurement and acts on the third failed look in a row.
DEFAULT_ERROR_LIMIT = 2
PIPELINE_FIELDS = ("role", "margin", "consecutive_error_limit")
#: gate type -> the config field that holds its non-inferiority margin
MARGIN_FIELD: dict[str, str] = {"sequential": "mde"}
#: gate types whose mirrored copy is a valid (sequential) superiority test
SUPERIORITY_TYPES = frozenset({"sequential"})
LEVEL_FIELDS = ("alpha", "beta")


class GateSettings(BaseModel):
    """The pipeline's fields of one gate entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role | None = None
    margin: float | None = Field(default=None, gt=0, description="guardrail non-inferiority margin")
    consecutive_error_limit: int = Field(default=DEFAULT_ERROR_LIMIT, ge=0, le=100)


def split_spec(spec: Mapping[str, Any]) -> tuple[GateSettings, dict[str, Any]]:
    """(the pipeline's settings, the gate type's own spec); raises pydantic's ValidationError."""
    settings = GateSettings.model_validate({k: spec[k] for k in PIPELINE_FIELDS if k in spec})
    return settings, {k: v for k, v in spec.items() if k not in PIPELINE_FIELDS}


@dataclass(frozen=True)
class ConfiguredGate:
    """A built gate with its role, error limit and (success metrics) its superiority twin."""

    key: str  # position in the stage: error streaks are counted per key
    gate: Any
    settings: GateSettings
    superiority: Any | None = None

    @property
    def name(self) -> str:
        return str(self.gate.name)

    @property
    def role(self) -> Role | None:
        return self.settings.role

    @property
    def needs_baseline(self) -> bool:
        return bool(getattr(self.gate, "needs_baseline", False))


@dataclass(frozen=True)
class StageGates:
    """A stage's gates and its decision rule (iterable over the gates)."""

    rule: str
    gates: tuple[ConfiguredGate, ...]
    between_steps: str = "ramp"
    levels: RiskAwareLevels | None = None

    def __iter__(self) -> Iterator[ConfiguredGate]:
        return iter(self.gates)

    def __len__(self) -> int:
        return len(self.gates)

    def without_baseline(self) -> StageGates:
        """The gates that can run with no incumbent (absolute_only)."""
        kept = tuple(g for g in self.gates if not g.needs_baseline)
        return StageGates(self.rule, kept, self.between_steps, self.levels)


def _levels(stage: Any, settings: Sequence[GateSettings]) -> RiskAwareLevels | None:
    rule = stage.decision
    if rule.rule != "risk_aware":
        return None
    n_success = sum(s.role is Role.SUCCESS for s in settings)
    n_guardrails = sum(s.role is Role.GUARDRAIL for s in settings)
    return risk_aware_levels(n_success, max(n_guardrails, 1), rule.alpha, rule.power)


def effective_specs(stage: Any) -> list[tuple[GateSettings, dict[str, Any], dict[str, Any] | None]]:
    """(settings, the gate's spec as the flow runs it, the superiority twin's spec or None) per entry."""
    split = [split_spec(spec) for spec in stage.gates]
    levels = _levels(stage, [s for s, _ in split])
    out = []
    for settings, spec in split:
        spec = dict(spec)
        if settings.margin is not None and spec.get("type") in MARGIN_FIELD:
            spec[MARGIN_FIELD[spec["type"]]] = settings.margin
        twin = None
        if levels is not None and settings.role is Role.GUARDRAIL:
            spec |= {"alpha": levels.deterioration_alpha, "beta": levels.guardrail_alpha}
        elif levels is not None and settings.role is Role.SUCCESS:
            spec |= {"alpha": levels.deterioration_alpha}
            twin = {
                **spec,
                "direction": "decrease" if spec.get("direction", "increase") == "increase" else "increase",
                "harm_margin": 0.0,
                "alpha": levels.success_alpha,
                "beta": levels.success_beta,
            }
        out.append((settings, spec, twin))
    return out


def configure_stage(stage: Any) -> StageGates:
    """Build a (validated) stage's gates at the levels of its decision rule."""
    gates = []
    for i, (settings, spec, twin) in enumerate(effective_specs(stage)):
        gate = build_gate(spec)
        superiority = None
        if twin is not None:
            twin["name"] = f"{gate.name} better"
            superiority = build_gate(twin)
        gates.append(ConfiguredGate(f"{i}:{gate.name}", gate, settings, superiority))
    levels = _levels(stage, [g.settings for g in gates])
    return StageGates(stage.decision.rule, tuple(gates), stage.decision.between_steps, levels)


def stage_problems(stage: Any) -> list[tuple[str, str]]:
    """(field relative to the stage, reason) for every role/margin problem of a parsed stage's gates."""
    problems: list[tuple[str, str]] = []
    risk_aware = stage.decision.rule == "risk_aware"
    guardrails = 0
    for i, spec in enumerate(stage.gates):
        where = f"gates[{i}]"
        try:
            settings, own = split_spec(spec)
        except ValidationError:  # reported by the loader with pydantic's field paths
            continue
        kind = own.get("type")
        role = settings.role
        guardrails += role is Role.GUARDRAIL
        if settings.margin is not None:
            if role is not Role.GUARDRAIL:
                problems.append((f"{where}.margin", "only a guardrail (role: guardrail) has a margin"))
            elif kind not in MARGIN_FIELD:
                problems.append(
                    (
                        f"{where}.margin",
                        f"gate type {kind!r} has no non-inferiority margin; "
                        f"guardrails with a margin: {', '.join(sorted(MARGIN_FIELD))}",
                    )
                )
            elif MARGIN_FIELD[kind] in own:
                problems.append(
                    (
                        f"{where}.{MARGIN_FIELD[kind]}",
                        f"give the guardrail's margin once, as margin (it sets {MARGIN_FIELD[kind]})",
                    )
                )
        if not risk_aware:
            continue
        if role is None:
            problems.append(
                (
                    f"{where}.role",
                    "decision rule risk_aware needs a role on every gate: success, guardrail or quality",
                )
            )
            continue
        if role is Role.QUALITY:
            continue
        if role is Role.GUARDRAIL and settings.margin is None:
            problems.append((f"{where}.margin", "a guardrail of a risk_aware stage needs a margin"))
        if role is Role.SUCCESS and kind not in SUPERIORITY_TYPES:
            problems.append(
                (
                    f"{where}.type",
                    f"a success metric needs a gate that can prove an improvement "
                    f"({', '.join(sorted(SUPERIORITY_TYPES))}), got {kind!r}",
                )
            )
        for level in LEVEL_FIELDS:
            if level in own:
                problems.append(
                    (f"{where}.{level}", "set by the risk_aware rule from decision.alpha and decision.power")
                )
        for field in ("on_fail", "on_inconclusive"):
            if own.get(field) == "record":
                problems.append(
                    (
                        f"{where}.{field}",
                        f"a {role.value} in record mode cannot decide; use role: quality for a dry-run gate",
                    )
                )
    if risk_aware and guardrails == 0:
        problems.append(("gates", "decision rule risk_aware needs at least one guardrail (role: guardrail)"))
    return problems


def _superiority_verdict(twin: Any, verdict: Verdict) -> Verdict:
    """The mirrored gate's verdict read as a superiority test of the success metric."""
    name = str(twin.name)
    if verdict.outcome is Outcome.ERROR:
        return Verdict.error(name, verdict.message, metric=verdict.metric, n=verdict.n)
    relative = bool(getattr(twin.config, "relative", True))
    upper = verdict.ci_high  # upper bound of the reversed change
    lower = None
    if upper is not None and np.isfinite(upper):
        # The reversed relative change is m0 / m1 - 1; the change itself is its reciprocal minus one.
        lower = (1.0 / (1.0 + upper) - 1.0) if relative else -upper
    fmt = (lambda x: f"{x:+.2%}") if relative else (lambda x: f"{x:+.4g}")
    alpha = getattr(twin.config, "alpha", float("nan"))
    if verdict.outcome is Outcome.FAIL and lower is not None:
        return Verdict(
            name,
            Outcome.PASS,
            f"{verdict.metric} improvement proven at level {alpha:.3g}: lower bound {fmt(lower)} is above 0",
            metric=verdict.metric,
            statistic=lower,
            threshold=0.0,
            n=verdict.n,
            ci_low=lower,
            details=dict(verdict.details),
        )
    ruled_out = " (an improvement of the MDE is ruled out)" if verdict.outcome is Outcome.PASS else ""
    bound = f": lower bound {fmt(lower)}" if lower is not None else ""
    return Verdict(
        name,
        Outcome.INCONCLUSIVE,
        f"{verdict.metric} improvement not proven at level {alpha:.3g}{bound}{ruled_out}",
        metric=verdict.metric,
        statistic=lower,
        threshold=0.0,
        n=verdict.n,
        ci_low=lower,
        details=dict(verdict.details),
    )


def _evaluated(gate: Any, name: str, evidence: Any) -> Verdict:
    """``gate.evaluate(evidence)``, or an ERROR verdict naming what it raised: a gate plugin (a third
    party's, registered through the ``stagegate.gates`` entry points) that raises on a look makes that look
    ERROR for the gate, counted against its ``consecutive_error_limit`` like a failed query, instead of
    failing the stage (fail closed, and one bad look never acts)."""
    try:
        return gate.evaluate(evidence)
    except Exception as exc:
        metric = getattr(getattr(gate, "config", None), "metric", None)
        return Verdict.error(name, f"the gate raised {type(exc).__name__}: {exc}", metric=metric)


def judge_look(
    gates: StageGates,
    evidence: Any,
    *,
    at_deadline: bool,
    enough_samples: bool = True,
    last_step: bool = True,
    error_streaks: Mapping[str, int] | None = None,
    measurement_error: str | None = None,
) -> LookDecision:
    """Evaluate every gate on ``evidence`` (or, when the metric query failed, ERROR for every gate) and
    decide by the stage's rule. ``error_streaks`` is the state from the previous look
    (``LookDecision.error_streaks``); None means the caller keeps no state, and every ERROR acts at once."""
    verdicts: list[tuple[ConfiguredGate, Verdict, Verdict | None]] = []
    for g in gates:
        if measurement_error is not None:
            msg = f"could not measure: metric query failed: {measurement_error}"
            verdicts.append((g, Verdict.error(g.name, msg, metric=g.gate.config.metric), None))
            continue
        verdict = _evaluated(g.gate, g.name, evidence)
        sup = None
        if g.superiority is not None and verdict.outcome is not Outcome.ERROR:
            sup = _superiority_verdict(g.superiority, _evaluated(g.superiority, g.name, evidence))
        verdicts.append((g, verdict, sup))
    outcomes = {g.key: v.outcome for g, v, _ in verdicts}
    if error_streaks is None:
        streaks, tolerated = update_error_streaks({}, outcomes, {})
    else:
        limits = {g.key: g.settings.consecutive_error_limit for g in gates}
        streaks, tolerated = update_error_streaks(error_streaks, outcomes, limits)
    looks = [
        GateLook(
            verdict=v,
            actions={o: g.gate.action_for(o) for o in Outcome if o is not Outcome.PASS},
            role=g.role,
            superiority=sup,
            error_tolerated=tolerated[g.key],
        )
        for g, v, sup in verdicts
    ]
    if gates.rule == "risk_aware":
        result = decide_risk_aware(
            looks,
            at_deadline=at_deadline,
            enough_samples=enough_samples,
            last_step=last_step,
            between_steps=gates.between_steps,  # type: ignore[arg-type]
        )
    else:
        result = decide(looks, at_deadline=at_deadline, enough_samples=enough_samples)
    return LookDecision(result.decision, result.reason, result.judged, streaks)
