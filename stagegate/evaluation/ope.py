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

Users are the unit: S_u = Σ_{i ∈ u} V̂_i. ``per="user"``: V̂ = mean_u S_u; ``per="request"``:
V̂ = Σ_u S_u / Σ_u n_u, linearised to ψ_u = V̂ + (S_u − V̂ n_u) / n̄ (delta method, cluster-robust). SNIPS
contributions are linearised too (influence function), so that Σ_u S_u / Σ_u n_u equals the estimate and a
paired bootstrap over users can reuse them. SE = sd(ψ) / √U.

Interval: revenue per user is right-skewed and importance weights make it more so; the normal interval
covers 74–87 % at the stage's sizes. The interval is Hall's (1992) skewness-corrected Studentized interval
over the U per-user values (Hall, "On the removal of skewness by transformation", JRSS-B 54: 221–228):
with Δ = (x̄ − μ)/σ̂ and γ̂ the sample skewness, T = √U [Δ + γ̂Δ²/3 + γ̂²Δ³/27 + γ̂/(6U)] is N(0, 1) to
O(1/U); the transformation is monotone and inverts in closed form,
Δ = (3/γ̂)[(1 + γ̂(y − γ̂/(6U)))^{1/3} − 1] at y = ∓t_{U−1}/√U. The coverage at the stage's sizes (400 and
2,000 requests) is measured in tests/evaluation/test_ope_coverage.py against a world with known truth:
0.94–0.98 pooled over both sizes for every reliable estimator and reward (0.925–0.985 per size). Limits:
with extreme skewness (γ̂/√U ≳ 0.5) the upper end is wider than a studentized bootstrap's; and no interval
can see weight-times-reward events the sample lacks: with a sharper logger (scores × 1.6, another target)
revenue intervals covered 0.81–0.86 (PBM-IPS, 400 requests) and 0.915–0.945 (IPS, SNIPS, DR, 2,000).

Diagnostics (:class:`OPEDiagnostics`) and fail-closed rules: an estimate is *withheld* — estimate, CI and
per-user values are NaN, so a gate on them reports ERROR — and ``raw_estimate``/``diagnostics.reasons``
say why, when any of these holds:

- support: E_b[w_ik] = P(π_b(e_ik at k) > 0) is the share of the target's slots the logger could show, 1
  under full support (the importance weights' control variate; Owen 2013, ch. 9; Sachdeva et al. KDD 2020).
  ``support_share`` = min_k mean_i w_ik (unclipped). The gap is tested one-sided with the lower-tail bound
  for sums of independent non-negative variables (Maurer 2003): with X_u = Σ_{i∈u} w_ik,
  P(Σ_u X_u ≤ N − t) ≤ exp(−t² / (2 Σ_u E X_u²)), so the log covers at most
  ``support_upper`` = [Σ X_u + √(2 Σ X_u² log(P/α))] / N of the target (P positions, α =
  ``SUPPORT_ALPHA``); withheld when that is below 1. PBM-IPS uses the θ-weighted control Σ_k θ_k w_ik / Σ θ
  and RIPS its prefix weights.
- clipping: clipping biases the estimate down by about the weight mass it removes; withheld when more than
  ``MAX_CLIPPED_SHARE`` of a position's weight mass is clipped.
- effective sample size: Kish's (Σ_i w_ik)² / Σ_i w_ik² at some position below ``min_ess``
  (``MIN_ESS``): too few effective observations for the interval to hold.
- too few users: fewer than ``MIN_USERS`` (the unit of the interval).
- no variation: every slot reward is the same (a log without clicks), or the per-user values do not vary
  (a zero-width interval is not a measurement).
- missing data: a NaN reward (revenue, or a price needed to split it) or weight: counted, never zero.
- no logged requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stagegate.evaluation.logs import LogLike, UserIndex, as_batches, check_slates, concat, n_items_of, rerank
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.logs import ServedBatch
from stagegate.models.base import Ranker

Reward = Literal["click", "purchase", "revenue"]
Per = Literal["request", "user"]
REWARD_NAMES = {"click": "clicks", "purchase": "purchases", "revenue": "revenue"}
ESTIMATORS = ("ips", "snips", "dr", "pbm_ips", "rips")
#: Smallest per-position Kish effective sample size (Σw)²/Σw² at which an estimate is reported.
MIN_ESS = 30.0
#: Fewest users (the unit of the interval) at which an estimate is reported.
MIN_USERS = 50
#: Largest share of a position's importance-weight mass that clipping may remove.
MAX_CLIPPED_SHARE = 0.05
#: Level of the one-sided support-gap test (Bonferroni over positions).
SUPPORT_ALPHA = 0.01
#: Rewards on which RIPS intervals are reported. On revenue its prefix weights (products of K ratios) have a
#: tail heavier than any sample of the stage's size shows: the interval covered 0.80-0.93 at 2,000-16,000
#: requests however the ESS threshold was set (tests/evaluation/test_ope_coverage.py), so it is withheld.
RIPS_REWARDS = ("click",)


@dataclass(frozen=True)
class OPEDiagnostics:
    """Whether the log can support an off-policy estimate, and why not (module docstring for the rules)."""

    n_requests: int
    n_users: int
    support_share: float  # min over positions of the mean unclipped weight: ≈ 1 under full support
    support_upper: float  # upper confidence bound of that share (Maurer); < 1: the log misses the target
    clipped_share: float  # largest share of a position's weight mass removed by clipping
    ess: float  # smallest per-position Kish effective sample size (clipped weights, as used)
    max_weight: float  # largest unclipped importance weight
    skewness: float  # sample skewness of the per-user values behind the interval
    n_missing: int  # requests with a NaN reward or weight (never counted as zero)
    reasons: tuple[str, ...] = ()  # why the estimate is withheld; empty when it is reliable
    min_ess: float = MIN_ESS
    min_users: int = MIN_USERS
    max_clipped_share: float = MAX_CLIPPED_SHARE
    support_alpha: float = SUPPORT_ALPHA

    @property
    def reliable(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, float | int | str | bool]:
        return {
            "n_requests": self.n_requests,
            "n_users": self.n_users,
            "support_share": self.support_share,
            "support_upper": self.support_upper,
            "clipped_share": self.clipped_share,
            "ess": self.ess,
            "max_weight": self.max_weight,
            "skewness": self.skewness,
            "n_missing": self.n_missing,
            "reliable": self.reliable,
            "reasons": "; ".join(self.reasons),
            "min_ess": self.min_ess,
            "min_users": self.min_users,
            "max_clipped_share": self.max_clipped_share,
            "support_alpha": self.support_alpha,
        }


@dataclass(frozen=True)
class OPEResult:
    """One off-policy estimate with its uncertainty and the per-user contributions behind it.

    When ``diagnostics.reasons`` is not empty the estimate is withheld: ``estimate``, ``se``, the CI and
    ``user_value`` are NaN (``raw_estimate`` keeps the number for the record), so gates report ERROR.
    """

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
    raw_estimate: float = float("nan")  # the estimate before the reliability checks
    diagnostic: str = ""  # why the estimate was withheld ("" if it was not)
    diagnostics: OPEDiagnostics | None = None

    @property
    def reliable(self) -> bool:
        """False when the estimate was withheld (see ``diagnostics``) or is not finite."""
        return not self.diagnostic and bool(np.isfinite(self.estimate))

    def confidence_interval(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high

    @property
    def metric_name(self) -> str:
        return ope_metric_name(self.reward, self.estimator)

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The scalar fields (for MLflow metrics / JSON), diagnostics prefixed ``diag_``."""
        out: dict[str, float | int | str | None] = {
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
        if self.diagnostics is not None:
            out.update({f"diag_{k}": v for k, v in self.diagnostics.to_dict().items()})
        return out


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
    row sums equal the logged revenue; a single purchased slot takes it all (no price needed). Missing data
    stay missing: a request whose logged revenue is NaN, or whose split needs a NaN price, has NaN slot
    rewards (the estimators count them and withhold the estimate), never zeros. ValueError if revenue was
    logged on a request with no purchase.
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
    bought = purchases > 0
    n_bought = bought.sum(axis=1)
    weight = purchases
    if price is not None:
        item_price = np.asarray(price, float)[concat(batches, lambda b: b.items).astype(np.int64)]
        weight = np.where(bought, item_price, 0.0)  # 0 × NaN would be NaN: only purchased slots need a price
    known = np.isfinite(weight).all(axis=1) | (n_bought == 1)
    total = np.where(np.isfinite(weight), weight, 0.0).sum(axis=1)
    orphan = (
        np.isfinite(revenue) & (revenue != 0) & ((n_bought == 0) | (known & (n_bought > 1) & (total <= 0)))
    )
    if orphan.any():
        raise ValueError(
            f"{int(orphan.sum())} requests logged revenue without a purchased slot to assign it to"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where((n_bought == 1)[:, None], purchases, weight / total[:, None])
    out = np.where(bought, np.nan_to_num(share), 0.0) * np.nan_to_num(revenue)[:, None]
    out[~np.isfinite(revenue) | ~known] = np.nan
    return out


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
    raw = _iips_raw(d)
    w, _ = _clip(raw, clip)
    return _result("ips", reward, per, (w * d.rewards).sum(axis=1), d, w, raw, raw, clip, confidence, min_ess)


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
    raw = _iips_raw(d)
    w, _ = _clip(raw, clip)
    return _result(
        "snips", reward, per, _snips_contrib(w, d.rewards), d, w, raw, raw, clip, confidence, min_ess
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
    raw = _iips_raw(d)
    w, _ = _clip(raw, clip)
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
    return _result("dr", reward, per, contrib, d, w, raw, raw, clip, confidence, min_ess)


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
    raw = np.where(match, 1.0 / d.pscore_prefix, 0.0)
    w, _ = _clip(raw, clip)
    contrib = (w * d.rewards).sum(axis=1)
    extra = ()
    if reward not in RIPS_REWARDS:
        extra = (
            f"RIPS intervals on {reward} do not hold at these sizes (prefix weights, products of K ratios, "
            "have a tail heavier than the sample shows; measured in tests/evaluation/test_ope_coverage.py)",
        )
    return _result("rips", reward, per, contrib, d, w, raw, raw, clip, confidence, min_ess, extra)


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
    if ((num > 0) & np.isfinite(den) & ~(den > 0)).any():  # NaN marginals: missing weights, counted later
        raise ValueError(
            "logger_marginals give zero examination-weighted probability to a logged target item"
        )
    w = np.divide(num, den, out=np.zeros_like(num), where=num > 0)
    raw = w
    w, _ = _clip(raw, clip)
    # E_b[Σ_k θ_k w_ik] = Σ_k' θ_k' 1[e_ik' has logging support]: the θ-weighted support share
    with np.errstate(invalid="ignore", divide="ignore"):
        control = ((theta * raw).sum(axis=1) / theta.sum(axis=1))[:, None]
    contrib = (w * d.rewards).sum(axis=1)
    return _result("pbm_ips", reward, per, contrib, d, w, raw, control, clip, confidence, min_ess)


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
    return _result("logged", reward, per, d.rewards.sum(axis=1), d, w, w, None, None, confidence, 0.0)


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


def _iips_raw(d: _Prepared) -> np.ndarray:
    """Unclipped item-position weights 1[e_ik = a_ik] / π_b(a_ik at k)."""
    return np.where(d.target == d.items, 1.0 / d.pscore, 0.0)


def _snips_contrib(w: np.ndarray, r: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        wbar = w.sum(axis=0) / max(len(w), 1)
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
    # float: bincount of an empty log returns int zeros
    pos_sum = np.bincount(f * k + pos, weights=r, minlength=n_folds * k).reshape(n_folds, k).astype(float)
    pos_cnt = np.bincount(f * k + pos, minlength=n_folds * k).reshape(n_folds, k).astype(float)
    cell = (f * n_items + items.ravel()) * k + pos
    item_pos_cnt = (
        np.bincount(cell, minlength=n_folds * n_items * k).reshape(n_folds, n_items, k).astype(float)
    )
    item_sum = np.bincount(f * n_items + items.ravel(), weights=r, minlength=n_folds * n_items)
    item_sum = item_sum.reshape(n_folds, n_items).astype(float)
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
    w_raw: np.ndarray,
    control: np.ndarray | None,
    clip: float | None,
    confidence: float,
    min_ess: float,
    extra_reasons: Sequence[str] = (),
) -> OPEResult:
    """Per-user inference and the reliability checks (module docstring); withholds what fails them.

    ``w``/``w_raw`` are the (clipped/unclipped) ``(n, K)`` weights, ``control`` the ``(n, P)`` unclipped
    weights whose mean is the target's supported share (None: no support check, on-policy).
    """
    if per not in ("request", "user"):
        raise ValueError(f"per must be 'request' or 'user', got {per!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, n_users = len(contrib), d.users.n_users
    reasons: list[str] = list(extra_reasons)
    # inputs, not contributions: one NaN reward makes every SNIPS/DR contribution NaN
    missing = (
        ~np.isfinite(d.rewards).all(axis=1) | ~np.isfinite(w_raw).all(axis=1) if n else np.zeros(0, bool)
    )
    n_missing = int(missing.sum())
    if n == 0:
        reasons.append("no logged requests")
    if n_missing:
        reasons.append(f"{n_missing} of {n} requests have a missing (NaN) reward or weight")
    if n_users < MIN_USERS and n:
        reasons.append(f"{n_users} users, fewer than {MIN_USERS}: too few units for an interval")
    finite_r = d.rewards[np.isfinite(d.rewards)]
    if finite_r.size and finite_r.min() == finite_r.max():
        reasons.append(f"the logged {reward} reward has no variation (every slot {finite_r[0]:g})")

    s = d.users.sum(contrib)
    n_u = d.users.n_requests.astype(float)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if per == "request":
            est = s.sum() / n_u.sum() if n else np.nan
            unit = est + (s - est * n_u) / n_u.mean() if n else s  # ψ_u, mean est (delta method)
        else:
            est = s.mean() if n_users else np.nan
            unit = s
        se, ci_low, ci_high, skew = _hall_interval(unit, est, confidence)
        ess_pos, clipped_pos = _position_stats(w, w_raw)
        support_share, support_upper, support_pos = _support(control, d.users)
    raw = float(est)
    if n and not reasons and not np.isfinite(raw):
        reasons.append("the estimate is not finite")
    if n and not n_missing and n_users >= 2 and not se > 0:
        reasons.append("the per-user values do not vary: a zero-width interval is no measurement")
    if ess_pos.size and n and ess_pos.min() < min_ess:
        pos = int(ess_pos.argmin())
        reasons.append(
            f"effective sample size {ess_pos[pos]:.1f} at position {pos + 1} is below min_ess {min_ess:g}: "
            "the logs barely support the target's slates there"
        )
    if n and support_upper < 1.0:
        reasons.append(
            f"partial support: the log covers at most {support_upper:.0%} of the target's slots at position "
            f"{support_pos + 1} (mean weight {support_share:.2f}, 1 under full support): the target shows "
            "items where the logger never did"
        )
    clipped_share = float(clipped_pos.max()) if clipped_pos.size else 0.0
    if clipped_share > MAX_CLIPPED_SHARE:
        reasons.append(
            f"clipping at {clip:g} removes {clipped_share:.0%} of the weight mass at position "
            f"{int(clipped_pos.argmax()) + 1} (more than {MAX_CLIPPED_SHARE:.0%}): biased down"
        )
    diagnostics = OPEDiagnostics(
        n_requests=n,
        n_users=n_users,
        support_share=support_share,
        support_upper=support_upper,
        clipped_share=clipped_share,
        ess=float(ess_pos.min()) if ess_pos.size and n else 0.0,
        max_weight=float(np.nanmax(w_raw)) if w_raw.size and not np.isnan(w_raw).all() else float("nan"),
        skewness=skew,
        n_missing=n_missing,
        reasons=tuple(reasons),
        min_ess=min_ess,
    )
    diagnostic = ""
    if reasons:
        # fail closed: the estimate the logs cannot support is withheld (NaN -> a gate says ERROR), never
        # reported as a confident number; the raw value stays in the record
        diagnostic = f"{name}: " + "; ".join(reasons) + f"; estimate withheld (raw {raw:.4g})"
        est, se, ci_low, ci_high = np.nan, np.nan, np.nan, np.nan
        s = np.full_like(s, np.nan)
    return OPEResult(
        estimator=name,
        reward=reward,
        per=per,
        estimate=float(est),
        se=float(se),
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        confidence=confidence,
        n_requests=n,
        n_users=n_users,
        user_ids=d.users.user_ids,
        user_value=s,
        user_requests=d.users.n_requests,
        ess=diagnostics.ess,
        ess_per_position=ess_pos,
        match_rate=float((d.target == d.items).mean()) if n else float("nan"),
        clip=clip,
        n_clipped=int((w_raw > clip).sum()) if clip is not None else 0,
        raw_estimate=raw,
        diagnostic=diagnostic,
        diagnostics=diagnostics,
    )


def _hall_inverse(y: float, gamma: float, n: int) -> float:
    """Δ with √n·g(Δ) = √n·y for Hall's g(Δ) = Δ + γΔ²/3 + γ²Δ³/27 + γ/(6n) = [(1 + γΔ/3)³ − 1]/γ + γ/(6n)."""
    shifted = y - gamma / (6 * n)
    if abs(gamma) < 1e-10:
        return shifted
    return float(3.0 / gamma * (np.cbrt(1.0 + gamma * shifted) - 1.0))


def _hall_interval(unit: np.ndarray, est: float, confidence: float) -> tuple[float, float, float, float]:
    """(se, low, high, skewness) of the mean of the per-user values ``unit`` (Hall 1992, t quantile)."""
    n = unit.size
    if n < 2 or not np.isfinite(unit).all():
        return np.nan, np.nan, np.nan, np.nan
    from scipy.special import stdtrit  # Student t quantile; scipy.special imports in ms, scipy.stats in s

    c = unit - unit.mean()
    m2 = float(np.mean(c * c))
    sd = float(np.sqrt(m2 * n / (n - 1)))
    skew = float(np.mean(c**3) / m2**1.5) if m2 > 0 else 0.0
    q = float(stdtrit(n - 1, 0.5 + confidence / 2)) / np.sqrt(n)
    low = est - sd * _hall_inverse(q, skew, n)
    high = est - sd * _hall_inverse(-q, skew, n)
    return sd / np.sqrt(n), float(low), float(high), skew


def _position_stats(w: np.ndarray, w_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position Kish ESS (Σw)²/Σw² of the weights used, and the share of weight mass clipping removed."""
    w, w_raw = np.nan_to_num(w), np.nan_to_num(w_raw)
    sw, sw2, sraw = w.sum(axis=0), np.square(w).sum(axis=0), w_raw.sum(axis=0)
    ess = np.divide(sw**2, sw2, out=np.zeros_like(sw), where=sw2 > 0)
    clipped = np.divide(sraw - sw, sraw, out=np.zeros_like(sw), where=sraw > 0)
    return ess, clipped


def _support(control: np.ndarray | None, users: UserIndex) -> tuple[float, float, int]:
    """(share, upper bound, position) at the least supported position (module docstring).

    Two upper confidence bounds of the mean control weight, each at one-sided level α/(2P) (union bound):
    Maurer's (2003) for non-negative sums, valid however heavy the weights' tail but loose when their
    variance is small, and Hall's skewness-corrected t bound over users, sharp when it is; the smaller wins.
    """
    if control is None or control.shape[0] == 0:
        return 1.0, 1.0, 0
    x = np.stack([users.sum(np.nan_to_num(c)) for c in control.T], axis=1)  # (U, P) per-user sums
    n_u = users.n_requests.astype(float)
    total, n_pos = control.shape[0], control.shape[1]
    alpha = SUPPORT_ALPHA / (2 * n_pos)
    share = x.sum(axis=0) / total
    upper = (x.sum(axis=0) + np.sqrt(2.0 * np.square(x).sum(axis=0) * np.log(1 / alpha))) / total
    if users.n_users >= 2:
        for j in range(n_pos):  # per-user linearised share ψ_u = s + (X_u − s n_u) / n̄, as for estimates
            unit = share[j] + (x[:, j] - share[j] * n_u) / n_u.mean()
            hall_upper = _hall_interval(unit, float(share[j]), 1 - 2 * alpha)[2]
            if np.isfinite(hall_upper):
                upper[j] = min(upper[j], hall_upper)
    pos = int(upper.argmin())
    return float(share.min()), float(upper[pos]), pos
