"""Off-policy estimates of a deterministic ranker's business metrics from logged propensities.

Notation (shared/reference/recsys_simulation.md §2, after OBP ``obp/ope/estimators_slate.py``): request i
was served the logged slate a_i = (a_i(1..K)) by a stochastic logger π_b with item-position marginals
``pscore[i, k] = π_b(a_i(k) at k | x_i)``; r_i(k) is the reward at slot k (click, purchase, or the
request's revenue split over its purchased slots). The target policy π_e is a ranker's deterministic slate
e_i = recommend(x_i, K), so π_e(a at k | x_i) = 1[e_i(k) = a].

- IPS (item-position IPS, IIPS; Li et al. KDD 2018): V̂_i = Σ_k w_ik r_ik,
  w_ik = 1[e_ik = a_ik] / π_b(a_ik at k).
  Unbiased when a slot's reward depends only on its item and position and π_b > 0 wherever π_e > 0.
- RIPS (reward-interaction IPS, McInerney et al. KDD 2020):
  V̂_i = Σ_k r_ik 1[e_i(1..k) = a_i(1..k)] / π_b(a_i(1..k)), with the logged prefix probabilities
  ``pscore_prefix``; unbiased also when a slot's reward depends on the items above it (cascade), at a
  higher variance than IIPS.
- SNIPS (Swaminathan & Joachims 2015), self-normalised per position: V̂ = Σ_k Σ_i w_ik r_ik / Σ_i w_ik.
- DR (Dudík et al. 2014), slot-wise: V̂_i = Σ_k [q̂(e_ik, k) + w_ik (r_ik − q̂(a_ik, k))], with a PBM-shaped
  reward model q̂(a, k) = ρ_k γ_a (position mean × item lift shrunk towards 1), cross-fitted over user folds.
- PBM-IPS (Joachims et al. 2017; §2.2), examination θ_k pooled over positions:
  V̂_i = Σ_k r_ik [Σ_k' θ_k' π_e(a_ik at k')] / [Σ_k' θ_k' π_b(a_ik at k')]; needs the logger's marginals of
  each logged item at every position (``logger_marginals``, e.g. from
  :func:`stagegate.evaluation.plackett_luce.mc_marginals`), which ServedBatch does not carry.

Users are the unit: S_u = Σ_{i ∈ u} V̂_i. ``per="request"``: V̂ = Σ_u S_u / Σ_u n_u with the cluster-robust
(delta-method) standard error sqrt(U/(U−1) Σ_u (S_u − V̂ n_u)²) / Σ_u n_u; ``per="user"``: V̂ = mean_u S_u,
SE = sd(S_u)/√U. CIs are normal approximations. SNIPS contributions are linearised (influence function),
so that Σ_u S_u / Σ_u n_u equals the estimate and a paired bootstrap over users can reuse them.

Fail closed: when the smallest per-position effective sample size (Σ_i w_ik)² / Σ_i w_ik² is below
``min_ess``, the estimate, its CI and the per-user values are NaN (``raw_estimate`` and ``diagnostic`` say
why), so that a gate reports ERROR instead of trusting an estimate the logs cannot support.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from stagegate.evaluation.logs import LogLike, UserIndex, as_batches, check_slates, concat, n_items_of, rerank
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.models.base import Ranker
from stagegate.world.schema import ServedBatch

Reward = Literal["click", "purchase", "revenue"]
Per = Literal["request", "user"]
REWARD_NAMES = {"click": "clicks", "purchase": "purchases", "revenue": "revenue"}
ESTIMATORS = ("ips", "snips", "dr", "pbm_ips", "rips")
#: Smallest per-position effective sample size (Σw)²/Σw² at which an estimate is reported (else NaN).
MIN_ESS = 10.0


@dataclass(frozen=True)
class OPEResult:
    """One off-policy estimate with its uncertainty and the per-user contributions behind it."""

    estimator: str  # ips | snips | dr | pbm_ips | rips | logged
    reward: str  # click | purchase | revenue
    per: str  # request | user
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    n_requests: int
    n_users: int
    user_ids: np.ndarray
    user_value: np.ndarray  # S_u: the user's summed (linearised) contributions over their logged requests
    user_requests: np.ndarray  # n_u: the user's logged requests
    ess: float  # Kish effective sample size (Σw)²/Σw², the smallest over positions
    ess_per_position: np.ndarray
    match_rate: float  # share of target slots whose item the logger showed at that position
    clip: float | None
    n_clipped: int
    raw_estimate: float = float("nan")  # the estimate before the min_ess check
    diagnostic: str = ""  # why the estimate was withheld ("" if it was not)

    @property
    def reliable(self) -> bool:
        """False when the estimate was withheld (too little support) or is not finite."""
        return not self.diagnostic and bool(np.isfinite(self.estimate))

    def confidence_interval(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high

    @property
    def metric_name(self) -> str:
        return ope_metric_name(self.reward, self.estimator)

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The scalar fields (for MLflow metrics / JSON)."""
        return {
            "estimator": self.estimator,
            "reward": self.reward,
            "per": self.per,
            "estimate": self.estimate,
            "se": self.se,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "n_requests": self.n_requests,
            "n_users": self.n_users,
            "ess": self.ess,
            "match_rate": self.match_rate,
            "clip": self.clip,
            "n_clipped": self.n_clipped,
            "raw_estimate": self.raw_estimate,
            "reliable": self.reliable,
            "diagnostic": self.diagnostic,
        }


@dataclass(frozen=True)
class _Prepared:
    items: np.ndarray  # (n, K) logged slates
    pscore: np.ndarray  # (n, K)
    rewards: np.ndarray  # (n, K)
    target: np.ndarray  # (n, K)
    users: UserIndex
    n_items: int
    pscore_prefix: np.ndarray | None = None  # (n, K) P(logged prefix 1..k), when the log has it


def ope_metric_name(reward: str, estimator: str) -> str:
    """Evidence metric name of a per-user OPE value, e.g. ``revenue_per_user:dr``."""
    return f"{REWARD_NAMES.get(reward, reward)}_per_user:{estimator}"


def slot_rewards(log: LogLike, reward: Reward, price: np.ndarray | None = None) -> np.ndarray:
    """``(n, K)`` slot rewards: clicks, purchases, or each request's revenue split over its purchased slots.

    Revenue is split in proportion to ``price[item]`` when prices are given, else evenly, so that the
    row sums equal the logged revenue. ValueError if revenue was logged on a request with no purchase.
    """
    batches = as_batches(log)
    if reward == "click":
        return concat(batches, lambda b: b.clicks).astype(float)
    purchases = concat(batches, lambda b: b.purchases).astype(float)
    if reward == "purchase":
        return purchases
    if reward != "revenue":
        raise ValueError(f"reward must be one of {tuple(REWARD_NAMES)}, got {reward!r}")
    revenue = concat(batches, lambda b: b.revenue).astype(float)
    weight = purchases
    if price is not None:
        weight = purchases * np.asarray(price, float)[concat(batches, lambda b: b.items).astype(np.int64)]
    total = weight.sum(axis=1)
    orphan = (revenue != 0) & (total <= 0)
    if orphan.any():
        raise ValueError(
            f"{int(orphan.sum())} requests logged revenue without a purchased slot to assign it to"
        )
    share = np.divide(weight, total[:, None], out=np.zeros_like(weight), where=total[:, None] > 0)
    return share * revenue[:, None]


def target_slates(target: Ranker | np.ndarray, log: LogLike) -> np.ndarray:
    """The target policy's ``(n, K)`` slates for the logged requests (K = logged slate length)."""
    batches = as_batches(log)
    k = batches[0].items.shape[1]
    if isinstance(target, np.ndarray):
        slates = np.asarray(target, dtype=np.int64)
        n = sum(b.n for b in batches)
        if slates.shape != (n, k):
            raise ValueError(f"target slates have shape {slates.shape}, expected {(n, k)}")
        check_slates(slates, n_items_of(batches), who="target slates")
        return slates
    return rerank(target, batches, k, source="recommend")


def ips(
    log: LogLike,
    target: Ranker | np.ndarray,
    reward: Reward = "click",
    *,
    per: Per = "request",
    clip: float | None = None,
    confidence: float = 0.95,
    min_ess: float = MIN_ESS,
    price: np.ndarray | None = None,
) -> OPEResult:
    """Item-position IPS (IIPS): V̂ = mean_i Σ_k w_ik r_ik, w_ik = min(clip, 1[e_ik = a_ik] / π_b(a_ik at k)).

    Li et al., KDD 2018; shared/reference/recsys_simulation.md §2.2.
    """
    d = _prepare(log, target, reward, price)
    w, n_clipped = _iips_weights(d, clip)
    return _result(
        "ips", reward, per, (w * d.rewards).sum(axis=1), d, w, clip, n_clipped, confidence, min_ess
    )


def snips(
    log: LogLike,
    target: Ranker | np.ndarray,
    reward: Reward = "click",
    *,
    per: Per = "request",
    clip: float | None = None,
    confidence: float = 0.95,
    min_ess: float = MIN_ESS,
    price: np.ndarray | None = None,
) -> OPEResult:
    """Self-normalised IIPS, per position: V̂ = Σ_k (Σ_i w_ik r_ik) / (Σ_i w_ik) (Swaminathan & Joachims 2015).

    NaN if a position has no support (no logged slot matches the target there).

    Request contributions are linearised: c_i = Σ_k [w_ik (r_ik − V̂_k) / w̄_k + V̂_k].
    """
    d = _prepare(log, target, reward, price)
    w, n_clipped = _iips_weights(d, clip)
    return _result(
        "snips", reward, per, _snips_contrib(w, d.rewards), d, w, clip, n_clipped, confidence, min_ess
    )


def dr(
    log: LogLike,
    target: Ranker | np.ndarray,
    reward: Reward = "click",
    *,
    per: Per = "request",
    clip: float | None = None,
    confidence: float = 0.95,
    min_ess: float = MIN_ESS,
    price: np.ndarray | None = None,
    reward_model_log: LogLike | None = None,
    prior_impressions: float = 20.0,
    n_folds: int = 2,
    seed: int = 0,
) -> OPEResult:
    """Slot-wise doubly robust: V̂_i = Σ_k [q̂(e_ik, k) + w_ik (r_ik − q̂(a_ik, k))].

    q̂(a, k) = ρ_k γ_a: ρ_k the mean reward at position k, γ_a = (R_a + n0 ρ̄) / (E_a + n0 ρ̄) the item's
    observed over position-expected reward, shrunk to 1 with ``prior_impressions`` n0 pseudo-impressions.
    It is fitted on ``reward_model_log`` if given, else cross-fitted on ``n_folds`` random user folds of
    the log itself (each fold scored by a model fitted on the others), which keeps DR unbiased.
    """
    d = _prepare(log, target, reward, price)
    w, n_clipped = _iips_weights(d, clip)
    k = d.items.shape[1]
    pos = np.broadcast_to(np.arange(k), d.items.shape)
    if reward_model_log is not None:
        fit = as_batches(reward_model_log)
        fit_items = concat(fit, lambda b: b.items).astype(np.int64)
        n_items = max(d.n_items, n_items_of(fit))
        q = _fit_reward_model(
            fit_items,
            slot_rewards(fit, reward, price),
            np.zeros(len(fit_items), np.int64),
            1,
            n_items,
            prior_impressions,
        )[0]
        q_target, q_logged = q[d.target, pos], q[d.items, pos]
    else:
        if n_folds < 2:
            raise ValueError("n_folds must be >= 2 when the reward model is cross-fitted on the log itself")
        user_fold = np.random.default_rng(seed).permutation(d.users.n_users) % n_folds
        fold = user_fold[d.users.inverse]
        q = _fit_reward_model(d.items, d.rewards, fold, n_folds, d.n_items, prior_impressions)
        q_target, q_logged = q[fold[:, None], d.target, pos], q[fold[:, None], d.items, pos]
    contrib = (q_target + w * (d.rewards - q_logged)).sum(axis=1)
    return _result("dr", reward, per, contrib, d, w, clip, n_clipped, confidence, min_ess)


def rips(
    log: LogLike,
    target: Ranker | np.ndarray,
    reward: Reward = "click",
    *,
    per: Per = "request",
    clip: float | None = None,
    confidence: float = 0.95,
    min_ess: float = MIN_ESS,
    price: np.ndarray | None = None,
) -> OPEResult:
    """Reward-interaction IPS (McInerney et al. KDD 2020): V̂_i = Σ_k w_ik r_ik with prefix weights
    w_ik = 1[e_i(1..k) = a_i(1..k)] / π_b(a_i(1..k)) from ``ServedBatch.pscore_prefix``.

    ValueError if the log has no prefix propensities.
    """
    d = _prepare(log, target, reward, price)
    if d.pscore_prefix is None:
        raise ValueError("RIPS needs pscore_prefix (prefix probabilities) in every batch of the log")
    match = np.cumprod(d.target == d.items, axis=1).astype(bool)
    w, n_clipped = _clip(np.where(match, 1.0 / d.pscore_prefix, 0.0), clip)
    return _result(
        "rips", reward, per, (w * d.rewards).sum(axis=1), d, w, clip, n_clipped, confidence, min_ess
    )


def pbm_ips(
    log: LogLike,
    target: Ranker | np.ndarray,
    reward: Reward = "click",
    *,
    examination: np.ndarray,
    logger_marginals: np.ndarray,
    per: Per = "request",
    clip: float | None = None,
    confidence: float = 0.95,
    min_ess: float = MIN_ESS,
    price: np.ndarray | None = None,
) -> OPEResult:
    """PBM-IPS: V̂_i = Σ_k r_ik · θ_{pos_e(a_ik)} / Σ_k' θ_k' π_b(a_ik at k').

    ``examination`` θ is ``(K,)`` or per request ``(n, K)``; ``logger_marginals[i, k, k']`` is
    π_b(a_ik at k' | x_i), shape ``(n, K, K)``. Unbiased under the position-based click model when every
    item the target shows has positive examination-weighted logging probability.
    """
    d = _prepare(log, target, reward, price)
    n, k = d.items.shape
    theta = np.broadcast_to(np.asarray(examination, dtype=float), (n, k))
    marg = np.asarray(logger_marginals, dtype=float)
    if marg.shape != (n, k, k):
        raise ValueError(f"logger_marginals has shape {marg.shape}, expected {(n, k, k)}")
    in_target = d.items[:, :, None] == d.target[:, None, :]  # (n, k logged, k' target position)
    num = (in_target * theta[:, None, :]).sum(axis=2)
    den = (marg * theta[:, None, :]).sum(axis=2)
    if ((num > 0) & ~(den > 0)).any():
        raise ValueError(
            "logger_marginals give zero examination-weighted probability to a logged target item"
        )
    w = np.divide(num, den, out=np.zeros_like(num), where=num > 0)
    w, n_clipped = _clip(w, clip)
    return _result(
        "pbm_ips", reward, per, (w * d.rewards).sum(axis=1), d, w, clip, n_clipped, confidence, min_ess
    )


def logged_value(
    log: LogLike,
    reward: Reward = "click",
    *,
    per: Per = "request",
    confidence: float = 0.95,
    price: np.ndarray | None = None,
) -> OPEResult:
    """The logging policy's own (on-policy) value: V̂_i = Σ_k r_ik, same per-user inference."""
    batches = as_batches(log)
    items = concat(batches, lambda b: b.items).astype(np.int64)
    d = _Prepared(
        items=items,
        pscore=np.ones(items.shape),
        rewards=slot_rewards(batches, reward, price),
        target=items,
        users=UserIndex.of(concat(batches, lambda b: b.context.user_id)),
        n_items=n_items_of(batches),
    )
    w = np.ones(items.shape)
    return _result("logged", reward, per, d.rewards.sum(axis=1), d, w, None, 0, confidence, 0.0)


def estimate_all(
    target: Ranker | np.ndarray,
    log: LogLike,
    reward: Reward = "click",
    *,
    estimators: Sequence[str] = ("ips", "snips", "dr"),
    per: Per = "request",
    clip: float | None = None,
    confidence: float = 0.95,
    price: np.ndarray | None = None,
    min_ess: float = MIN_ESS,
    **dr_or_pbm: object,
) -> dict[str, OPEResult]:
    """Run several estimators on one log, ranking the target once. Extra keywords go to DR / PBM-IPS."""
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(f"unknown estimators {sorted(unknown)}; known: {ESTIMATORS}")
    dr_keys = {"reward_model_log", "prior_impressions", "n_folds", "seed"}
    pbm_keys = {"examination", "logger_marginals"}
    stray = set(dr_or_pbm) - dr_keys - pbm_keys
    if stray:
        raise TypeError(f"estimate_all got unexpected keywords {sorted(stray)}")
    slates = target_slates(target, log)
    common = {"per": per, "clip": clip, "confidence": confidence, "price": price, "min_ess": min_ess}
    out: dict[str, OPEResult] = {}
    for name in estimators:
        if name == "dr":
            extra = {key: v for key, v in dr_or_pbm.items() if key in dr_keys}
            out[name] = dr(log, slates, reward, **common, **extra)  # type: ignore[arg-type]
        elif name == "pbm_ips":
            extra = {key: v for key, v in dr_or_pbm.items() if key in pbm_keys}
            out[name] = pbm_ips(log, slates, reward, **common, **extra)  # type: ignore[arg-type]
        else:
            out[name] = {"ips": ips, "snips": snips, "rips": rips}[name](log, slates, reward, **common)  # type: ignore[arg-type]
    return out


def ope_arm_sample(results: Iterable[OPEResult]) -> ArmSample:
    """Per-user OPE values of one arm as evidence: metric ``<reward>_per_user:<estimator>`` = S_u.

    Also ``n_requests`` (n_u), so a gate can rebuild per-request ratios Σ S_u / Σ n_u in a bootstrap.
    All results must come from the same log (same users).
    """
    results = list(results)
    if not results:
        raise ValueError("no OPE results given")
    users = results[0].user_ids
    metrics: dict[str, np.ndarray] = {"n_requests": results[0].user_requests.astype(float)}
    for r in results:
        if not np.array_equal(r.user_ids, users):
            raise ValueError(
                f"OPE result {r.metric_name} was computed on other users than {results[0].metric_name}"
            )
        metrics[r.metric_name] = r.user_value
    return ArmSample(user_ids=users, metrics=metrics)


def paired_ope_evidence(
    champion: Iterable[OPEResult], candidate: Iterable[OPEResult], stage: str = "simulation"
) -> Evidence:
    """Champion and candidate estimated on the same log: paired evidence aligned user by user."""
    champ, cand = ope_arm_sample(champion), ope_arm_sample(candidate)
    if not np.array_equal(champ.user_ids, cand.user_ids):
        raise ValueError("champion and candidate OPE results come from different logs (users differ)")
    return Evidence(stage=stage, arms={CHAMPION: champ, CANDIDATE: cand}, paired=True)


# --------------------------------------------------------------------------------------------------------


def _prepare(
    log: LogLike, target: Ranker | np.ndarray, reward: Reward, price: np.ndarray | None
) -> _Prepared:
    batches: list[ServedBatch] = as_batches(log)
    items = concat(batches, lambda b: b.items).astype(np.int64)
    pscore = concat(batches, lambda b: b.pscore).astype(float)
    _check_probabilities(pscore, "pscore")
    prefix = None
    if all(b.pscore_prefix is not None for b in batches):
        prefix = concat(batches, lambda b: b.pscore_prefix).astype(float)
        _check_probabilities(prefix, "pscore_prefix")
    return _Prepared(
        items=items,
        pscore=pscore,
        rewards=slot_rewards(batches, reward, price),
        target=target_slates(target, batches),
        users=UserIndex.of(concat(batches, lambda b: b.context.user_id)),
        n_items=n_items_of(batches),
        pscore_prefix=prefix,
    )


def _check_probabilities(p: np.ndarray, name: str) -> None:
    bad = ~((p > 0) & (p <= 1.0 + 1e-9))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} must be in (0, 1]: {int(bad.sum())} bad values (first {p[i, j]!r} at row {i}, slot {j})"
        )


def _clip(w: np.ndarray, clip: float | None) -> tuple[np.ndarray, int]:
    if clip is None:
        return w, 0
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    return np.minimum(w, clip), int((w > clip).sum())


def _iips_weights(d: _Prepared, clip: float | None) -> tuple[np.ndarray, int]:
    w = np.where(d.target == d.items, 1.0 / d.pscore, 0.0)
    return _clip(w, clip)


def _snips_contrib(w: np.ndarray, r: np.ndarray) -> np.ndarray:
    wbar = w.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (w * r).sum(axis=0) / w.sum(axis=0)  # V̂_k, NaN without support
        return (w * (r - v) / wbar + v).sum(axis=1)


def _fit_reward_model(
    items: np.ndarray, rewards: np.ndarray, fold: np.ndarray, n_folds: int, n_items: int, n0: float
) -> np.ndarray:
    """``(n_folds, n_items, K)`` q̂ per fold, each fitted on all the other folds (all data if n_folds = 1)."""
    k = items.shape[1]
    f = np.broadcast_to(fold[:, None], items.shape).ravel()
    pos = np.broadcast_to(np.arange(k), items.shape).ravel()
    r = rewards.ravel()
    pos_sum = np.bincount(f * k + pos, weights=r, minlength=n_folds * k).reshape(n_folds, k)
    pos_cnt = np.bincount(f * k + pos, minlength=n_folds * k).reshape(n_folds, k).astype(float)
    cell = (f * n_items + items.ravel()) * k + pos
    item_pos_cnt = (
        np.bincount(cell, minlength=n_folds * n_items * k).reshape(n_folds, n_items, k).astype(float)
    )
    item_sum = np.bincount(f * n_items + items.ravel(), weights=r, minlength=n_folds * n_items)
    item_sum = item_sum.reshape(n_folds, n_items)
    if n_folds > 1:  # complement statistics: everything but the fold itself
        pos_sum, pos_cnt = pos_sum.sum(0) - pos_sum, pos_cnt.sum(0) - pos_cnt
        item_pos_cnt, item_sum = item_pos_cnt.sum(0) - item_pos_cnt, item_sum.sum(0) - item_sum
    rho = np.divide(pos_sum, pos_cnt, out=np.zeros_like(pos_sum), where=pos_cnt > 0)  # (F, K)
    rho_bar = np.divide(pos_sum.sum(1), pos_cnt.sum(1), out=np.zeros(n_folds), where=pos_cnt.sum(1) > 0)[
        :, None
    ]
    expected = np.einsum("fak,fk->fa", item_pos_cnt, rho)
    prior = n0 * rho_bar
    gamma = np.divide(
        item_sum + prior, expected + prior, out=np.ones_like(item_sum), where=expected + prior > 0
    )
    return rho[:, None, :] * gamma[:, :, None]


def _result(
    name: str,
    reward: str,
    per: Per,
    contrib: np.ndarray,
    d: _Prepared,
    w: np.ndarray,
    clip: float | None,
    n_clipped: int,
    confidence: float,
    min_ess: float,
) -> OPEResult:
    if per not in ("request", "user"):
        raise ValueError(f"per must be 'request' or 'user', got {per!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    s = d.users.sum(contrib)
    n_u = d.users.n_requests.astype(float)
    n_users = d.users.n_users
    if per == "request":
        est = s.sum() / n_u.sum()
        var = np.square(s - est * n_u).sum() * n_users / max(n_users - 1, 1) / n_u.sum() ** 2
    else:
        est = s.mean()
        var = s.var(ddof=1) / n_users if n_users > 1 else np.nan
    se = float(np.sqrt(var))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    sw, sw2 = w.sum(axis=0), np.square(w).sum(axis=0)
    ess_pos = np.divide(sw**2, sw2, out=np.zeros_like(sw), where=sw2 > 0)
    raw = float(est)
    diagnostic = ""
    if ess_pos.size and ess_pos.min() < min_ess:
        # fail closed: an estimate resting on (almost) no matching logged slots is withheld, not reported
        # as a confident number (IPS would say 0 ± 0)
        pos = int(ess_pos.argmin())
        diagnostic = (
            f"{name}: effective sample size {ess_pos[pos]:.1f} at position {pos + 1} is below min_ess "
            f"{min_ess:g}: the logs barely support the target's slates there; estimate withheld "
            f"(raw {raw:.4g})"
        )
        est, se, s = np.nan, np.nan, np.full_like(s, np.nan)
    return OPEResult(
        estimator=name,
        reward=reward,
        per=per,
        estimate=float(est),
        se=se,
        ci_low=float(est - z * se),
        ci_high=float(est + z * se),
        confidence=confidence,
        n_requests=len(contrib),
        n_users=n_users,
        user_ids=d.users.user_ids,
        user_value=s,
        user_requests=d.users.n_requests,
        ess=float(ess_pos.min()) if ess_pos.size else 0.0,
        ess_per_position=ess_pos,
        match_rate=float((d.target == d.items).mean()),
        clip=clip,
        n_clipped=n_clipped,
        raw_estimate=raw,
        diagnostic=diagnostic,
    )
