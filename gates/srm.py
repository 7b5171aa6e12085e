"""SRM gate: are users split across arms as the traffic controller was told to split them?

A sample-ratio mismatch (a canary that loses users to a crash, a redirect or a logging bug) biases every
metric comparison, so this gate runs before the metric gates are trusted. Counts are the users per arm in
the evidence; the expected split is ``evidence.allocation`` (e.g. 5/95, never an assumed 50/50).

- ``method: sequential`` (default): the Dirichlet-multinomial test over all looks, valid however often the
  canary is looked at (:func:`gates.stats.srm.srm_sequential`).
- ``method: chi_square``: Pearson's chi-square on the latest counts; exact for one look, but repeated after
  every batch it raises more false alarms than ``p_value``.

When the split changed between looks (a canary step), only users counted since the change are tested
against the new split. FAIL when p < ``p_value``; PASS otherwise; INCONCLUSIVE below ``min_users`` (and with
no user at all yet). A configured arm absent from the evidence has no user yet and counts as 0.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field
from scipy import stats

from gates.base import EvidenceError, Gate, GateConfig, NotEnoughData
from gates.stats.srm import srm_chi_square, srm_sequential
from stagegate.evidence import CANDIDATE, Evidence
from stagegate.verdict import Outcome, Verdict


class SrmConfig(GateConfig):
    p_value: float = Field(default=0.001, gt=0, lt=0.5, description="alarm when the p-value is below this")
    method: Literal["sequential", "chi_square"] = "sequential"
    concentration: float = Field(default=10_000.0, gt=0, description="Dirichlet prior pseudo-count")
    min_users: int = Field(default=100, ge=1, description="users (all arms) before the split is judged")


class SrmGate(Gate):
    type: ClassVar[str] = "srm"
    Config: ClassVar[type[GateConfig]] = SrmConfig
    config: SrmConfig

    def _evaluate(self, evidence: Evidence) -> Verdict:
        cfg = self.config
        arms, weights = _split(evidence)
        looks = [*evidence.history, evidence]
        # Only the trailing run of looks with the current split is comparable with it; users counted before
        # the split changed are subtracted.
        same = [_same_split(look, arms, weights) for look in looks]
        # An arm the split sends traffic to but with no user yet is absent from the evidence: it has 0 users
        # (a candidate with none while the champion has thousands is exactly what this gate must catch).
        counts = np.array(
            [[look.arms[a].n_users if a in look.arms else 0 for a in arms] for look in looks], dtype=float
        )
        # Cumulative counts that fall from one look to the next mark a new ramp step whose evidence restarts
        # (a history carried across the canary's steps): the run of comparable looks starts there too.
        restarted = np.r_[False, np.any(np.diff(counts, axis=0) < 0, axis=1)]
        first = len(looks) - 1
        while first > 0 and same[first - 1] and not restarted[first]:
            first -= 1
        if first > 0 and restarted[first]:
            counts, first = counts[first:], 0
        base = counts[first - 1] if first > 0 else np.zeros(len(arms))
        counts = counts[first:] - base
        if np.any(counts < 0):
            raise EvidenceError("user counts went down between looks; cannot test the split")
        total = int(counts[-1].sum())
        if total == 0:
            raise NotEnoughData("no users in any arm since the split was set")
        if total < cfg.min_users:
            return Verdict(
                self.name,
                Outcome.INCONCLUSIVE,
                f"sample ratio: {total} users so far, judged from {cfg.min_users}",
                statistic=None,
                threshold=cfg.p_value,
                n=total,
            )
        if cfg.method == "sequential":
            res = srm_sequential(counts, weights, concentration=cfg.concentration)
        else:
            res = srm_chi_square(counts[-1], weights)
        i = arms.index(CANDIDATE) if CANDIDATE in arms else 0
        share, expected = res.observed_shares[i], res.weights[i]
        # Exact interval of the shown arm's share at the alarm level, on the same scale as the decision.
        k = int(res.observed[i])
        low = float(stats.beta.ppf(cfg.p_value / 2, k, total - k + 1)) if k > 0 else 0.0
        high = float(stats.beta.ppf(1 - cfg.p_value / 2, k + 1, total - k)) if k < total else 1.0
        shown = f"{arms[i]} has {share:.2%} of {total:,} users, configured {expected:.2%}"
        if res.p_value < cfg.p_value:
            outcome, message = Outcome.FAIL, f"sample ratio mismatch: {shown} (p = {res.p_value:.2g})"
        else:
            outcome, message = Outcome.PASS, f"sample ratio as configured: {shown} (p = {res.p_value:.2g})"
        details = {
            "method": res.method,
            "arms": arms,
            "observed": res.observed.tolist(),
            "expected": res.expected.tolist(),
            "test_statistic": res.statistic,
            "chi_square_p_value": srm_chi_square(counts[-1], weights).p_value,
            "looks": len(counts),
        }
        return Verdict(
            self.name,
            outcome,
            message,
            statistic=res.p_value,
            threshold=cfg.p_value,
            n=total,
            ci_low=low,
            ci_high=high,
            details=details,
        )


def _split(evidence: Evidence) -> tuple[list[str], np.ndarray]:
    if not evidence.allocation:
        raise EvidenceError("no configured allocation in the evidence to test the split against")
    arms = sorted(evidence.allocation)
    weights = np.array([evidence.allocation[a] for a in arms], dtype=float)
    if len(arms) < 2 or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise EvidenceError(
            f"allocation must give a positive share to two or more arms, got {dict(evidence.allocation)}"
        )
    unknown = sorted(set(evidence.arms) - set(arms))
    if unknown:
        raise EvidenceError(
            f"evidence has arms {unknown} that the allocation {dict(evidence.allocation)} omits"
        )
    return arms, weights / weights.sum()


def _same_split(look: Evidence, arms: list[str], weights: np.ndarray) -> bool:
    if not look.allocation:
        return True  # an earlier look that did not record its split is taken to share the current one
    if sorted(look.allocation) != arms:
        return False
    w = np.array([look.allocation[a] for a in arms], dtype=float)
    return bool(np.allclose(w / w.sum(), weights))
