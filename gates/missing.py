"""Missing values are never zero: users whose metric is missing are counted, reported, and left out only
while they stay under the gate's ``max_missing_share``; above it the gate says ERROR.

A metric source hands a user's value as NaN when any of that user's events has the outcome missing (a NULL
revenue, a click count that was never written): summing such rows with pandas' or SQL's defaults would
silently count the missing outcome as zero, and a candidate that loses half its revenue records would look
harmless (issue 11: promoted, "every stage passed"). Leaving the users out is a complete-case analysis: it
is unbiased only when values are missing for reasons unrelated to the arm, which is why the default limit
is 0 (any missing value is ERROR) and a policy that tolerates some says so per gate.

Pure: numpy only. Infinite values are not "missing" but malformed, and stay ERROR in :func:`gates.base.clean`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from stagegate.evidence import RATIO_METRICS, ArmSample, Evidence


class TooMuchMissing(ValueError):
    """More users with a missing value than the gate tolerates (an ERROR naming counts and limit)."""


@dataclass(frozen=True)
class MissingReport:
    """Users left out of one look, per arm, because ``metrics`` had no value for them."""

    metrics: tuple[str, ...]
    missing: dict[str, int]  # arm -> users left out
    users: dict[str, int]  # arm -> users before

    @property
    def total(self) -> int:
        return sum(self.missing.values())

    def describe(self) -> str:
        parts = [f"{self.missing[a]} of {self.users[a]} {a}" for a in sorted(self.missing) if self.missing[a]]
        return f"users with missing {'/'.join(self.metrics)} left out: {', '.join(parts)}"


def metric_names(metric: str | None, arm: ArmSample) -> tuple[str, ...]:
    """The per-user arrays a gate on ``metric`` reads from ``arm`` (both parts of a ratio metric)."""
    if metric is None:
        return ()
    if metric in arm.metrics:
        return (metric,)
    return tuple(name for name in RATIO_METRICS.get(metric, ()) if name in arm.metrics)


def _missing_mask(arm: ArmSample, names: tuple[str, ...]) -> np.ndarray:
    mask = np.zeros(arm.n_users, dtype=bool)
    for name in names:
        values = np.asarray(arm.metrics[name], dtype=float)
        if values.shape == mask.shape:
            mask |= np.isnan(values)
    return mask


def _keep(arm: ArmSample, keep: np.ndarray) -> ArmSample:
    """``arm`` with only the users where ``keep`` is true (every per-user array filtered alike)."""

    def per_user(arrays: dict) -> dict:
        return {k: (np.asarray(v)[keep] if np.shape(v) == keep.shape else v) for k, v in arrays.items()}

    return dataclasses.replace(
        arm,
        user_ids=np.asarray(arm.user_ids)[keep],
        metrics=per_user(dict(arm.metrics)),
        segments=per_user(dict(arm.segments)),
        pre_period=per_user(dict(arm.pre_period)),
    )


def _masks(evidence: Evidence, metric: str | None) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    masks: dict[str, np.ndarray] = {}
    names: tuple[str, ...] = ()
    for label, arm in evidence.arms.items():
        arm_names = metric_names(metric, arm)
        names = names or arm_names
        masks[label] = _missing_mask(arm, arm_names)
    if evidence.paired and masks:  # arms aligned user by user: a user missing in one arm leaves both
        sizes = {m.shape for m in masks.values()}
        if len(sizes) == 1:
            union = np.logical_or.reduce(list(masks.values()))
            masks = {label: union for label in masks}
    return names, masks


def _without(evidence: Evidence, masks: dict[str, np.ndarray]) -> Evidence:
    arms = {
        label: _keep(arm, ~masks[label]) if masks[label].any() else arm
        for label, arm in evidence.arms.items()
    }
    return dataclasses.replace(evidence, arms=arms)


def drop_missing(
    evidence: Evidence, metric: str | None, limit: float
) -> tuple[Evidence, MissingReport | None]:
    """The evidence without the users whose ``metric`` is missing, and what was left out.

    Raises :class:`TooMuchMissing` when, in any arm of the current look, the share of such users exceeds
    ``limit``. Earlier looks (``history``, read by sequential gates) lose the same kind of users, so that a
    statistic over all looks never meets a NaN; their shares were judged at their own look.
    """
    names, masks = _masks(evidence, metric)
    earlier = [_masks(h, metric)[1] for h in evidence.history]
    if not any(m.any() for look in (masks, *earlier) for m in look.values()):
        return evidence, None
    users = {label: int(m.size) for label, m in masks.items()}
    missing = {label: int(m.sum()) for label, m in masks.items()}
    for label, count in missing.items():
        if count and count > limit * users[label]:
            raise TooMuchMissing(
                f"{count} of {users[label]} {label} users have no value for {'/'.join(names)} "
                f"(NaN: missing in the source, or an estimate withheld): {count / users[label]:.1%} is "
                f"above the gate's max_missing_share of {limit:.1%}"
            )
    history = tuple(_without(h, m) for h, m in zip(evidence.history, earlier, strict=True))
    cleaned = dataclasses.replace(_without(evidence, masks), history=history)
    return cleaned, MissingReport(names, missing, users) if any(missing.values()) else None
