"""The offline stage: re-rank held-out logged requests and score them per user.

Protocol (shared/reference/recsys_simulation.md §6.4): for every held-out request the ranker ranks again
from the request's own :class:`~stagegate.logs.RequestContext`; the relevant items are the logged
slate's items with a positive label (click or purchase) in that request. Users are the unit: a user's value
is the mean over their requests. Accuracy metrics (NDCG@k, recall@k, MAP@k) average over the user's
requests that have at least one relevant item; beyond-accuracy metrics (ILD, novelty, calibration KL,
freshness, out-of-stock share; formulas in §4 and :mod:`stagegate.evaluation.metrics`) average over all
the user's requests. Evaluated users are those with at least ``min_positive_requests`` such requests (the
common "users with test positives" filter), so every reported value is finite.

Champion and candidate scored on the same log are paired user by user by :func:`paired_offline_evidence`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from stagegate.evaluation import metrics as m
from stagegate.evaluation.catalog import CatalogView
from stagegate.evaluation.logs import (
    LogLike,
    UserIndex,
    as_batches,
    concat,
    n_items_of,
    rerank,
    serving_state,
)
from stagegate.evaluation.segments import user_segments
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.logs import ServedBatch
from stagegate.models.base import Ranker

if TYPE_CHECKING:
    import pandas as pd

LABELS = ("click", "purchase")


@dataclass(frozen=True)
class OfflineResult:
    """Per-user offline metrics of one ranker on one held-out log.

    ``metrics[name][i]`` is user ``user_ids[i]``'s value; ``segments[name]`` is a bool mask over users;
    ``scalars`` hold catalogue-level values (coverage@k, exposure_gini@k) and counts.
    """

    ranker: str
    k: int
    label: str
    user_ids: np.ndarray
    metrics: Mapping[str, np.ndarray]
    segments: Mapping[str, np.ndarray]
    scalars: Mapping[str, float]
    requests_per_user: np.ndarray  # held-out requests per evaluated user
    positive_requests_per_user: np.ndarray  # of which with at least one relevant item
    notes: tuple[str, ...] = field(default=())

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def summary(self) -> dict[str, float]:
        """Mean over users of every metric, plus the scalars (for logging)."""
        out = {name: float(np.mean(v)) if len(v) else float("nan") for name, v in self.metrics.items()}
        out.update(self.scalars)
        return out

    def to_arm_sample(self) -> ArmSample:
        """The per-user metrics and segment masks as gate evidence for one arm."""
        return ArmSample(user_ids=self.user_ids, metrics=dict(self.metrics), segments=dict(self.segments))


def evaluate_offline(
    ranker: Ranker,
    test_log: LogLike,
    catalog: pd.DataFrame,
    k: int = 10,
    label: str = "click",
    train_log: LogLike | None = None,
    *,
    emb_prefix: str = "emb_",
    category_col: str = "category",
    freshness_tau_days: float = 14.0,
    calibration_alpha: float = 0.01,
    min_positive_requests: int = 1,
    source: Literal["recommend", "scores"] = "recommend",
    chunk_rows: int | None = None,
) -> OfflineResult:
    """Score ``ranker`` on every request of ``test_log``, per user (see the module docstring).

    - Relevance: rel = logged label (``"click"`` or ``"purchase"``) of the logged slate's items.
    - Novelty: self-information from ``train_log`` popularity (share of train users who clicked or bought
      the item); without a train log, from the test log's own interactions (noted in ``notes``).
    - Calibration KL (Steck 2018, α = ``calibration_alpha``, log2): p(g|u) from the user's clicked or bought
      items in ``train_log``; for users with none there, from the ``recent_items`` of their test requests;
      else the population's distribution. q(g|u) from the slate with uniform slot weights.
    - Freshness: exposure-weighted exp(−age/τ) with τ = ``freshness_tau_days`` and ages at serving time.
    - Out-of-stock share: slots whose item was out of stock in the request's serving-time snapshot.
    - ``source``: rank with ``recommend`` (the model's slate, its rules included) or top-k of ``scores``.
    """
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    batches = as_batches(test_log)
    n_items = n_items_of(batches)
    cat = CatalogView.from_frame(catalog, n_items, emb_prefix=emb_prefix, category_col=category_col)
    notes: list[str] = []

    rec = rerank(ranker, batches, k, source=source, chunk_rows=chunk_rows)
    user_id = concat(batches, lambda b: b.context.user_id)
    logged = concat(batches, lambda b: b.items).astype(np.int64)
    labels = concat(batches, lambda b: b.clicks if label == "click" else b.purchases).astype(bool)

    # accuracy, on requests with at least one relevant item
    h = m.hits(rec, logged, labels)
    n_rel = m.n_relevant(logged, labels)
    positive = n_rel > 0

    # popularity and histories
    train = as_batches(train_log) if train_log is not None else None
    if train is None:
        notes.append("no train log: novelty popularity and calibration history come from the test log")
    pop_src = train if train is not None else batches
    pop_users, pop_items = _interactions(pop_src)
    n_pop_users = np.unique(concat(pop_src, lambda b: b.context.user_id)).size
    pairs = np.unique(pop_users.astype(np.int64) * n_items + pop_items)
    self_info = m.self_information(np.bincount(pairs % n_items, minlength=n_items), n_pop_users)

    users = UserIndex.of(user_id)
    p_user = _history_distributions(users, batches, train, cat, pop_items)

    per_request = {
        f"ndcg@{k}": (m.ndcg(h, n_rel), positive),
        f"recall@{k}": (m.recall(h, n_rel), positive),
        f"map@{k}": (m.average_precision(h, n_rel), positive),
        f"ild@{k}": (m.intra_list_diversity(rec, cat.embeddings), None),
        f"novelty@{k}": (m.novelty(rec, self_info), None),
        f"calibration_kl@{k}": (
            m.calibration_kl(cat.category[rec], users.inverse, p_user, calibration_alpha),
            None,
        ),
        f"freshness@{k}": (
            m.freshness(serving_state(batches, rec, "item_age_days"), freshness_tau_days),
            None,
        ),
        "out_of_stock_share": (m.out_of_stock_share(serving_state(batches, rec, "in_stock")), None),
    }

    n_pos = users.count(positive)
    keep = n_pos >= max(1, min_positive_requests)
    per_user = {name: users.mean(v, mask)[keep] for name, (v, mask) in per_request.items()}
    segs = user_segments(
        users,
        concat(batches, lambda b: b.context.user_segment),
        concat(batches, lambda b: b.context.device),
        concat(batches, lambda b: b.context.hour),
    )
    scalars = {
        f"coverage@{k}": m.catalog_coverage(rec, n_items),
        f"exposure_gini@{k}": m.exposure_gini(rec, n_items),
        "n_requests": float(len(rec)),
        "n_users_total": float(users.n_users),
        "n_users_evaluated": float(keep.sum()),
    }
    return OfflineResult(
        ranker=str(getattr(ranker, "name", type(ranker).__name__)),
        k=k,
        label=label,
        user_ids=users.user_ids[keep],
        metrics=per_user,
        segments={name: mask[keep] for name, mask in segs.items()},
        scalars=scalars,
        requests_per_user=users.n_requests[keep],
        positive_requests_per_user=n_pos[keep].astype(np.int64),
        notes=tuple(notes),
    )


def paired_offline_evidence(champion: OfflineResult, candidate: OfflineResult) -> Evidence:
    """Offline evidence with the two arms aligned user by user (stage "offline", paired=True).

    Users evaluated for only one arm are dropped (both results come from the same log, so normally none
    are). ValueError if the results differ in k or label, or share no user.
    """
    if (champion.k, champion.label) != (candidate.k, candidate.label):
        raise ValueError(
            f"cannot pair offline results with different protocols: champion k={champion.k} "
            f"label={champion.label!r}, candidate k={candidate.k} label={candidate.label!r}"
        )
    common, ci, ki = np.intersect1d(champion.user_ids, candidate.user_ids, return_indices=True)
    if common.size == 0 and (champion.n_users or candidate.n_users):
        raise ValueError("champion and candidate offline results share no user")

    def take(r: OfflineResult, idx: np.ndarray) -> ArmSample:
        return ArmSample(
            user_ids=common,
            metrics={name: v[idx] for name, v in r.metrics.items()},
            segments={name: s[idx] for name, s in r.segments.items()},
        )

    return Evidence(
        stage="offline",
        arms={CHAMPION: take(champion, ci), CANDIDATE: take(candidate, ki)},
        paired=True,
        scalars={CHAMPION: dict(champion.scalars), CANDIDATE: dict(candidate.scalars)},
    )


def _interactions(batches: Sequence[ServedBatch]) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of every logged slot that was clicked or purchased."""
    items = concat(batches, lambda b: b.items).astype(np.int64)
    pos = concat(batches, lambda b: np.asarray(b.clicks, bool) | np.asarray(b.purchases, bool))
    users = np.broadcast_to(concat(batches, lambda b: b.context.user_id)[:, None], items.shape)
    return users[pos].astype(np.int64), items[pos]


def _history_distributions(
    users: UserIndex,
    test: Sequence[ServedBatch],
    train: Sequence[ServedBatch] | None,
    cat: CatalogView,
    population_items: np.ndarray,
) -> np.ndarray:
    """(n_users, C) category distributions p(g|u) of the test users' histories (see evaluate_offline)."""
    n_c = cat.n_categories
    counts = np.zeros((users.n_users, n_c))
    if train is not None:
        tu, ti = _interactions(train)
        pos = np.searchsorted(users.user_ids, tu)
        pos = np.minimum(pos, users.n_users - 1)
        known = users.user_ids[pos] == tu
        np.add.at(counts, (pos[known], cat.category[ti[known]]), 1.0)
    empty = counts.sum(axis=1) == 0
    if empty.any():
        recent = concat(test, lambda b: b.context.recent_items).astype(np.int64)
        ok = (recent >= 0) & (recent < cat.n_items) & empty[users.inverse][:, None]
        rows = np.broadcast_to(users.inverse[:, None], recent.shape)[ok]
        np.add.at(counts, (rows, cat.category[recent[ok]]), 1.0)
        empty = counts.sum(axis=1) == 0
    if empty.any():
        prior = np.bincount(cat.category[population_items], minlength=n_c).astype(float)
        counts[empty] = prior if prior.sum() > 0 else 1.0
    return counts / counts.sum(axis=1, keepdims=True)
