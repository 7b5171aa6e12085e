"""Ground truth for candidate recipes: `stagegate world oracle RECIPE` (reference §6.8, issue 12 item 5).

For a recipe (or every recipe in a folder), build the zoo world (bootstrap, incumbent history, champion
retrained on the training log), train the candidate on the same training log, and run the candidate at 100 %
against the champion at 100 % in forks of the live world, from the same state, with common random numbers
(:func:`simulator.world.oracle.adaptive_ground_truth`), for ``days`` simulated days.

**What is protected** comes from the promotion policy's canary gates (:func:`protection`), so that the
oracle judges a candidate by the guardrails the policy itself protects, not by revenue alone:

- a gate with ``role: success`` (or, in a policy without roles, the gate on ``revenue_per_user``) names the
  primary metric; a gain must clear ``primary_margin`` (+0.5 %, §6.8), and a loss proven beyond
  ``primary_harm_margin`` (the resolution, 2 %) is a harm too;
- a gate with ``role: guardrail`` and its ``margin`` (without roles: every other per-user metric gate, its
  margin the ``mde``, or ``-min_change`` for a relative gate) is a guardrail;
- quality gates (SRM, error rate, latency) and metrics the world cannot measure at 100 % are listed as
  ``unmeasured``;
- the world's standing guardrails, which no live gate can see at this size but the project protects, are
  added unless the policy names the metric: cold-start revenue (−5 %), mean satisfaction (−0.1) and the
  realised out-of-stock click share (+2 points).

**Labels** (:func:`label_truth`), on each metric's 95 % t interval over seeds:

- ``harmful``: a protected metric (a guardrail, or the primary) is proven beyond its harm margin (the
  whole interval lies past ``-margin``);
- ``good``: the primary metric is proven better (lower bound > ``primary_margin``) and every guardrail is
  proven within its margin (lower bound above ``-margin``);
- ``unresolved``: neither, and some labelled metric's interval is wider than the resolution (half-width
  2 % on relative metrics) after the seed cap: the oracle cannot tell a ±2 % effect from 0 there;
- ``neutral``: neither, everything resolved (either decision is acceptable).

Seeds are added until every labelled metric is resolved or the cap is reached (``stopped``: ``resolved`` |
``cap``). :func:`label` keeps the earlier interface (``promote | reject | neutral``, reasons) for
benchmarks/decisions.py. Labels come from the world, never from the recipe files. This module reads the
world's hidden truth: nothing in the pipeline may import it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESOLUTION = 0.02  # half-width target of a relative effect's 95 % interval (issue 12: a ±2 % effect)
PRIMARY = "revenue_per_user"
PRIMARY_MARGIN = 0.005  # §6.8: a gain must clear +0.5 % to count
# A loss of the primary metric is a harm when proven beyond the oracle's resolution: a smaller loss is one the
# oracle does not claim to resolve (issue 12: a ±2 % effect), and the guardrails carry the rest of the harm.
PRIMARY_HARM_MARGIN = RESOLUTION
REVENUE_MARGIN = PRIMARY_MARGIN  # the earlier name
COLD_START_MARGIN = -0.05
SATISFACTION_MARGIN = -0.1
OOS_SHARE_MARGIN = 0.02
REPORTED = (
    "revenue_per_user",
    "clicks_per_user",
    "purchases_per_user",
    "ctr",
    "conversion",
    "cold_start_revenue_per_user",
    "sessions_per_user",
    "mean_satisfaction",
    "oos_click_share_realised",
)
LABELS = ("harmful", "good", "neutral", "unresolved")
#: the earlier vocabulary of :func:`label` (benchmarks/decisions.py): an unresolved candidate is one where
#: the truth cannot say, so either decision is scored as acceptable, as for neutral
LEGACY = {"harmful": "reject", "good": "promote", "neutral": "neutral", "unresolved": "neutral"}


@dataclass(frozen=True)
class Guardrail:
    """A protected metric of the ground truth: harm is an effect beyond ``margin`` in the wrong direction.

    ``scale`` is ``relative`` (candidate / champion − 1) or ``difference``; ``direction`` ``increase`` when
    higher is better; ``resolution`` the interval half-width the oracle needs to label on this metric.
    """

    metric: str
    margin: float
    scale: str = "relative"
    direction: str = "increase"
    resolution: float = RESOLUTION
    source: str = "standing"

    def harm_bound(self, lo: float, hi: float) -> float:
        """The interval bound that proves harm: the upper bound (lower is worse) or the lower bound."""
        return hi if self.direction == "increase" else -lo

    def safe_bound(self, lo: float, hi: float) -> float:
        return lo if self.direction == "increase" else -hi


#: guardrails of the world that the project protects although no canary of this size can measure them
STANDING = (
    Guardrail("cold_start_revenue_per_user", -COLD_START_MARGIN),
    Guardrail("mean_satisfaction", -SATISFACTION_MARGIN, scale="difference", resolution=0.05),
    Guardrail(
        "oos_click_share_realised",
        OOS_SHARE_MARGIN,
        scale="difference",
        direction="decrease",
        resolution=0.01,
    ),
)


@dataclass(frozen=True)
class Protection:
    """What the oracle labels on: the primary metric and the guardrails (see the module docstring)."""

    primary: str = PRIMARY
    primary_margin: float = PRIMARY_MARGIN
    primary_harm_margin: float = PRIMARY_HARM_MARGIN
    guardrails: tuple[Guardrail, ...] = STANDING
    resolution: float = RESOLUTION
    unmeasured: tuple[str, ...] = ()
    source: str = "standing guardrails (no policy)"

    @property
    def primary_guardrail(self) -> Guardrail:
        return Guardrail(self.primary, self.primary_harm_margin, resolution=self.resolution, source="primary")

    def labelled(self) -> dict[str, tuple[str, float]]:
        """metric -> (scale, resolution) of every labelled metric (for adaptive seeding)."""
        out = {self.primary: ("relative", self.resolution)}
        for g in self.guardrails:
            out[g.metric] = (g.scale, g.resolution)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "primary": self.primary,
            "primary_margin": self.primary_margin,
            "primary_harm_margin": self.primary_harm_margin,
            "resolution": self.resolution,
            "guardrails": [g.__dict__ for g in self.guardrails],
            "unmeasured": list(self.unmeasured),
        }


def _truth_metric(metric: str | None, segment: str | None) -> str | None:
    from simulator.world.oracle import METRICS

    if not metric:
        return None
    name = metric if segment is None else f"{segment}_{metric}"
    return name if name in METRICS else None


def _gate_specs(policy: Any) -> tuple[list[dict[str, Any]], str]:
    """The canary gate entries of a Policy, a policy mapping, a policy file, or a list of gate entries."""
    if isinstance(policy, (str, Path)):
        from stagegate.policy.load import load_policy

        return _gate_specs(load_policy(Path(policy)))[0], f"policy {policy}"
    if isinstance(policy, Sequence):
        return [dict(g) for g in policy], "gate list"
    stages = policy.get("stages", {}) if isinstance(policy, Mapping) else policy.stages
    canary = stages.get("canary") if isinstance(stages, Mapping) else getattr(stages, "canary", None)
    if canary is None:
        raise ValueError("the policy has no canary stage: the oracle takes its guardrails from there")
    gates = canary.get("gates", []) if isinstance(canary, Mapping) else canary.gates
    return [dict(g) for g in gates], "policy canary gates"


def _margin(spec: Mapping[str, Any]) -> float | None:
    if spec.get("margin") is not None:
        return float(spec["margin"])
    if spec.get("mde") is not None:  # a sequential gate: PASS = non-inferior within the mde
        return float(spec["mde"])
    if spec.get("min_change") is not None and float(spec["min_change"]) < 0:  # relative gate
        return -float(spec["min_change"])
    return None


def protection(
    policy: Any = None,
    *,
    standing: Sequence[Guardrail] = STANDING,
    resolution: float = RESOLUTION,
    primary_margin: float = PRIMARY_MARGIN,
) -> Protection:
    """The primary metric and guardrails the oracle labels on, from the policy's canary gates.

    ``policy``: a :class:`stagegate.policy.schema.Policy`, its mapping, a policy file, a list of gate entries
    (each with ``metric``, optional ``segment``, ``role``, ``margin``/``mde``/``min_change``, ``direction``,
    ``relative``), or None for the standing guardrails alone. Accepts gates with roles (``role: success |
    guardrail | quality`` and ``margin``) and without (every per-user metric gate but the revenue one is a
    guardrail). A guardrail without a margin is refused (ValueError naming the gate).
    """
    if policy is None:
        return Protection(guardrails=tuple(standing), resolution=resolution, primary_margin=primary_margin)
    specs, source = _gate_specs(policy)
    with_roles = any("role" in s for s in specs)
    primary: str | None = None
    guardrails: dict[str, Guardrail] = {}
    unmeasured: list[str] = []
    for i, spec in enumerate(specs):
        role = spec.get("role")
        where = f"{source}[{i}] ({spec.get('type')}:{spec.get('metric')})"
        if role == "quality" or spec.get("type") == "srm":
            continue
        metric = _truth_metric(spec.get("metric"), spec.get("segment"))
        if metric is None:
            unmeasured.append(where)
            continue
        is_primary = role == "success" if with_roles else (metric == PRIMARY and primary is None)
        if is_primary:
            primary = primary or metric
            continue
        if with_roles and role != "guardrail":
            unmeasured.append(where)
            continue
        margin = _margin(spec)
        if margin is None:
            raise ValueError(
                f"{where}: a guardrail needs a harm margin (margin, mde or a negative min_change)"
            )
        scale = "relative" if spec.get("relative", True) else "difference"
        guardrails[metric] = Guardrail(
            metric,
            margin,
            scale=scale,
            direction=spec.get("direction", "increase"),
            resolution=resolution,
            source=where,
        )
    for g in standing:
        guardrails.setdefault(g.metric, g)
    return Protection(
        primary=primary or PRIMARY,
        primary_margin=primary_margin,
        guardrails=tuple(guardrails.values()),
        resolution=resolution,
        unmeasured=tuple(unmeasured),
        source=source,
    )


@dataclass(frozen=True)
class TruthLabel:
    """An oracle label: ``label`` in :data:`LABELS`, the reasons, and how well the truth was resolved."""

    label: str
    reasons: list[str]
    intervals: dict[str, list[float]]  # metric -> [lo, hi] on the metric's scale
    half_width: dict[str, float]
    unresolved: list[str] = field(default_factory=list)  # labelled metrics wider than their resolution
    not_applicable: list[str] = field(default_factory=list)  # guardrails the world cannot measure

    @property
    def legacy(self) -> str:
        return LEGACY[self.label]


def _intervals(truth: Mapping[str, Any], rails: Sequence[Guardrail]) -> dict[str, list[float]]:
    """95 % t intervals of every rail's effect on its own scale, vectorised over metrics and seeds.

    From the per-seed arm values when the truth has them, else from the truth's ``ci95`` (earlier results,
    whose scales are :data:`simulator.world.oracle.SCALES`)."""
    from scipy.stats import t as student_t

    from simulator.world.oracle import SCALES, effects

    per_seed = truth.get("per_seed")
    out: dict[str, list[float]] = {}
    if per_seed is None:
        for g in rails:
            ci = truth.get("ci95", {}).get(g.metric)
            ok = ci is not None and SCALES.get(g.metric) == g.scale
            out[g.metric] = [float(ci[0]), float(ci[1])] if ok else [float("nan")] * 2
        return out
    e = np.vstack(
        [effects(per_seed["champion"][g.metric], per_seed["candidate"][g.metric], g.scale) for g in rails]
    )
    n = e.shape[1]
    if n < 2:
        return {g.metric: [float("nan")] * 2 for g in rails}
    mean, sd = e.mean(axis=1), e.std(axis=1, ddof=1)
    half = student_t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    bad = ~np.all(np.isfinite(e), axis=1)
    lo, hi = np.where(bad, np.nan, mean - half), np.where(bad, np.nan, mean + half)
    return {g.metric: [float(a), float(b)] for g, a, b in zip(rails, lo, hi, strict=True)}


def _fmt(g: Guardrail, x: float) -> str:
    return f"{x:+.1%}" if g.scale == "relative" else f"{x:+.3f}"


def label_truth(truth: Mapping[str, Any], protect: Protection | None = None) -> TruthLabel:
    """Label a ground-truth result (:func:`simulator.world.oracle.ground_truth`) by what ``protect``
    protects; the rules are in the module docstring. NaN intervals never prove anything."""
    protect = protect or Protection()
    primary = protect.primary_guardrail
    # a guardrail the world cannot measure at all (e.g. out-of-stock clicks in a world without stock) is
    # not applicable: the champion's own value is NaN; it is reported, never labelled on
    champ = truth.get("champion", {})
    na = [g.metric for g in protect.guardrails if not np.isfinite(champ.get(g.metric, 0.0))]
    rails = [primary, *(g for g in protect.guardrails if g.metric not in na)]
    ci = _intervals(truth, rails)
    widths = {m: (hi - lo) / 2.0 for m, (lo, hi) in ci.items()}
    unresolved = [g.metric for g in rails if not widths[g.metric] <= g.resolution]
    harms = []
    for g in rails:
        lo, hi = ci[g.metric]
        if g.harm_bound(lo, hi) < -g.margin:  # False for NaN
            side = "upper" if g.direction == "increase" else "lower"
            bound = hi if g.direction == "increase" else lo
            harms.append(
                f"{g.metric} harmed beyond its margin {g.margin:g} "
                f"({side} bound {_fmt(g, bound)}; {g.source})"
            )
    if harms:
        return TruthLabel("harmful", harms, ci, widths, unresolved, na)
    p_lo, p_hi = ci[primary.metric]
    primary_better = p_lo > protect.primary_margin
    unsafe = [g.metric for g in rails[1:] if not g.safe_bound(*ci[g.metric]) > -g.margin]
    if primary_better and not unsafe:
        return TruthLabel(
            "good",
            [f"{primary.metric} up (lower bound {p_lo:+.1%}), every guardrail within its margin"],
            ci,
            widths,
            unresolved,
            na,
        )
    why = [f"{primary.metric} CI [{p_lo:+.1%}, {p_hi:+.1%}]"]
    if primary_better:
        why.append(f"guardrails not proven within their margins: {', '.join(unsafe)}")
    if unresolved:
        detail = ", ".join(f"{m} ±{widths[m]:.3g}" for m in unresolved)
        return TruthLabel("unresolved", [*why, f"too wide to tell: {detail}"], ci, widths, unresolved, na)
    return TruthLabel("neutral", why, ci, widths, unresolved, na)


def label(truth: Mapping[str, Any], protect: Protection | None = None) -> tuple[str, list[str]]:
    """(promote | reject | neutral, reasons): :func:`label_truth` in the earlier vocabulary (:data:`LEGACY`;
    unresolved counts as neutral, its reasons say so)."""
    res = label_truth(truth, protect)
    reasons = res.reasons if res.label != "unresolved" else ["unresolved", *res.reasons]
    return res.legacy, reasons


def recipe_paths(recipe: str | Path) -> list[Path]:
    """A recipe file, or every ``*.yaml`` in a folder (sorted), without ``bootstrap`` and ``champion``."""
    p = Path(recipe)
    if p.is_dir():
        return [f for f in sorted(p.glob("*.yaml")) if f.stem not in {"bootstrap", "champion"}]
    if not p.exists():
        raise FileNotFoundError(f"no recipe at {p}")
    return [p]


def world_config(size: str, seed: int = 7) -> Any:
    from simulator.setup import world_config as _world_config

    return _world_config(size, seed)


def oracle(
    recipes: Sequence[str | Path],
    *,
    seeds: int = 4,
    max_seeds: int | None = 16,
    step: int = 4,
    days: float = 7.0,
    size: str = "small",
    world_seed: int = 7,
    policy: Any = None,
    zoo: Any = None,
) -> dict[str, Any]:
    """Ground truth of every recipe; ``zoo`` (from :func:`simulator.models.zoo.build_zoo`) is reused if given.

    Seeds: ``seeds`` first, then ``step`` more at a time until every labelled metric of ``policy``'s
    :func:`protection` is resolved, at most ``max_seeds`` (None: exactly ``seeds``). Returns ``{"config":
    {...}, "protection": {...}, "recipes": {name: {"label", "legacy_label", "reasons", "stopped", "seeds",
    "half_width", "effect", "ci95", "intervals", "seconds"}}}``; ``seconds`` is the recipe's wall time.
    """
    from simulator.models.recipe import load_recipe
    from simulator.models.train import train
    from simulator.models.zoo import build_zoo
    from simulator.world.oracle import adaptive_ground_truth

    protect = protection(policy)
    cap = seeds if max_seeds is None else max(max_seeds, seeds)
    t0 = time.perf_counter()
    if zoo is None:
        zoo = build_zoo(world_config(size, world_seed), candidates=())
    out: dict[str, Any] = {
        "config": {
            "size": size,
            "world_seed": world_seed,
            "seeds": seeds,
            "max_seeds": cap,
            "days": days,
            "world_config_hash": _config_hash(zoo.world.config),
            "zoo_seconds": round(time.perf_counter() - t0, 2),
        },
        "protection": protect.to_dict(),
        "recipes": {},
    }
    for path in recipes:
        t1 = time.perf_counter()
        recipe = load_recipe(path)
        candidate = train(recipe, zoo.train_logs, zoo.catalog)
        truth = adaptive_ground_truth(
            zoo.world,
            zoo.champion,
            candidate,
            protect.labelled(),
            days=days,
            min_seeds=seeds,
            max_seeds=cap,
            step=step,
        )
        res = label_truth(truth, protect)
        out["recipes"][recipe.name] = {
            "path": str(path),
            "label": res.label,
            "legacy_label": res.legacy,
            "reasons": res.reasons,
            "stopped": truth["stopped"],
            "seeds": len(truth["seeds"]),
            "half_width": res.half_width,
            "unresolved": res.unresolved,
            "not_applicable": res.not_applicable,
            "intervals": res.intervals,
            "effect": {m: truth["effect"][m] for m in REPORTED},
            "ci95": {m: truth["ci95"][m] for m in REPORTED},
            "champion": {m: truth["champion"][m] for m in REPORTED},
            "n_users": truth["n_users"],
            "seconds": round(time.perf_counter() - t1, 2),
        }
    return out


def _config_hash(config: Any) -> str:
    import hashlib

    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def oracle_command(
    recipe: Path, seeds: int, days: float, size: str, policy: Path | None = None, min_seeds: int = 4
) -> None:
    """`stagegate world oracle RECIPE`: print the ground truth of RECIPE (a file or a folder) as JSON;
    ``seeds`` is the cap, ``min_seeds`` the first batch."""
    result = oracle(
        recipe_paths(recipe),
        seeds=min(min_seeds, seeds),
        max_seeds=seeds,
        days=days,
        size=size,
        policy=policy,
    )
    print(json.dumps(result, indent=2, default=float))
