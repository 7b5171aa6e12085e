"""Metric queries: from event rows to per-user evidence (users, not requests, are the unit)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.logs import DAYPARTS, DEVICES, SEGMENTS

ARM_NAMES = {0: CHAMPION, 1: CANDIDATE}


def _segment_masks(per_user: pd.DataFrame) -> dict[str, np.ndarray]:
    masks: dict[str, np.ndarray] = {}
    for code, name in enumerate(SEGMENTS):
        masks[name] = (per_user["user_segment"] == code).to_numpy()
    for code, name in enumerate(DEVICES):
        masks[name] = (per_user["device"] == code).to_numpy()
    for code, name in enumerate(DAYPARTS):
        masks[name] = (per_user["daypart"] == code).to_numpy()
    return masks


#: Outcome columns of the events table and the per-user sums built from them.
OUTCOMES: dict[str, str] = {
    "error": "errors",
    "n_clicks": "clicks",
    "n_purchases": "purchases",
    "revenue": "revenue",
    "n_out_of_stock": "out_of_stock",
}


def arm_samples(frame: pd.DataFrame, slate_k: int = 10) -> tuple[dict[str, ArmSample], int]:
    """Per-user aggregates of each arm present in ``frame``.

    A user seen in both arms (possible only if a split moved them) is dropped from both and counted in the
    second return value, so that nobody's behaviour is credited to two models.
    """
    if frame.empty:
        return {}, 0
    arms_per_user = frame.groupby("user_id")["arm"].nunique()
    mixed = arms_per_user.index[arms_per_user > 1]
    frame = frame[~frame["user_id"].isin(mixed)].assign(daypart=frame["hour"] // 6)
    samples: dict[str, ArmSample] = {}
    # Missing is never zero: a user with any NULL outcome gets NaN for that sum (pandas' sum would skip it,
    # counting the missing outcome as 0), and the gate counts such users against its max_missing_share.
    gaps = {col: name for col, name in OUTCOMES.items() if frame[col].isna().any()}  # usually none: no cost
    frame = frame.assign(**{f"{col}_missing": frame[col].isna() for col in gaps})
    for code, rows in frame.groupby("arm"):
        per_user = rows.groupby("user_id").agg(
            requests=("request_id", "size"),
            errors=("error", "sum"),
            clicks=("n_clicks", "sum"),
            purchases=("n_purchases", "sum"),
            revenue=("revenue", "sum"),
            out_of_stock=("n_out_of_stock", "sum"),
            user_segment=("user_segment", "min"),  # segment at first sight: cold-start users stay cold-start
            device=("device", "first"),  # a user's segment is fixed at first sight: cheap and stable
            daypart=("daypart", "first"),
            **{f"{col}_missing": (f"{col}_missing", "any") for col in gaps},
        )
        for col, name in gaps.items():
            per_user[name] = per_user[name].astype(float).mask(per_user[f"{col}_missing"])
        requests = per_user["requests"].to_numpy(float)
        metrics = {
            "requests": requests,
            "errors": per_user["errors"].to_numpy(float),
            "clicks": per_user["clicks"].to_numpy(float),
            "purchases": per_user["purchases"].to_numpy(float),
            "revenue": per_user["revenue"].to_numpy(float),
            "impressions": requests * slate_k,
            "revenue_per_user": per_user["revenue"].to_numpy(float),
            "clicks_per_user": per_user["clicks"].to_numpy(float),
            "purchases_per_user": per_user["purchases"].to_numpy(float),
            "out_of_stock_share": per_user["out_of_stock"].to_numpy(float) / (requests * slate_k),
        }
        samples[ARM_NAMES[int(code)]] = ArmSample(
            user_ids=per_user.index.to_numpy(),
            metrics=metrics,
            segments=_segment_masks(per_user),
            requests={
                "latency_ms": rows["latency_ms"].to_numpy(float),
                "error": rows["error"].to_numpy(float),
            },
        )
    return samples, len(mixed)


def split_evidence(
    frame: pd.DataFrame, stage: str, weight: float, look: int, history: tuple[Evidence, ...] = ()
) -> tuple[Evidence, int, int]:
    """Evidence of live traffic split at ``weight`` on the candidate (canary steps, rollout bake).

    Returns the evidence, the number of candidate users and the number of users dropped for having been
    served by both arms.
    """
    arms, mixed = arm_samples(frame)
    evidence = Evidence(
        stage=stage,
        arms=arms,
        allocation={CHAMPION: 1 - weight, CANDIDATE: weight},
        look=look,
        history=history,
    )
    return evidence, (arms[CANDIDATE].n_users if CANDIDATE in arms else 0), mixed


def _overlap(a: pd.Series, b: pd.Series) -> np.ndarray:
    """|A ∩ B| / k per request, for slates stored as JSON lists."""
    import json

    left = np.array([json.loads(x) for x in a])
    right = np.array([json.loads(x) for x in b])
    return (left[:, :, None] == right[:, None, :]).any(axis=2).sum(axis=1) / left.shape[1]


def shadow_samples(frame: pd.DataFrame, slate_k: int = 10) -> dict[str, ArmSample]:
    """Paired per-user evidence from mirrored traffic: what was served (champion) and what the candidate
    would have shown (candidate), on the same requests and users."""
    if frame.empty:
        return {}
    rows = frame[frame["shadow_items"].notna()].copy()
    rows["overlap"] = _overlap(rows["items"], rows["shadow_items"])
    rows["daypart"] = rows["hour"] // 6
    grouped = rows.groupby("user_id")
    per_user = grouped.agg(
        requests=("request_id", "size"),
        champion_oos=("n_out_of_stock", "sum"),
        candidate_oos=("shadow_n_out_of_stock", "sum"),
        overlap=("overlap", "mean"),
        user_segment=("user_segment", "min"),
        device=("device", "first"),
        daypart=("daypart", "first"),
    )
    slots = per_user["requests"].to_numpy(float) * slate_k
    masks = _segment_masks(per_user)
    users = per_user.index.to_numpy()
    common = {
        "requests": per_user["requests"].to_numpy(float),
        "overlap@k": per_user["overlap"].to_numpy(float),
    }
    champion = ArmSample(
        user_ids=users,
        metrics={**common, "out_of_stock_share": per_user["champion_oos"].to_numpy(float) / slots},
        segments=masks,
        requests={"latency_ms": rows["latency_ms"].to_numpy(float)},
    )
    cand_latency = rows["shadow_latency_ms"].to_numpy(float) if "shadow_latency_ms" in rows else np.array([])
    candidate = ArmSample(
        user_ids=users,
        metrics={**common, "out_of_stock_share": per_user["candidate_oos"].to_numpy(float) / slots},
        segments=masks,
        requests={"latency_ms": cand_latency},
    )
    return {CHAMPION: champion, CANDIDATE: candidate}
