"""TwinWorld: a simulator fitted only from logs and the public catalogue (reference §6.5).

The simulation stage must not be circular: it never reads the live world's hidden parameters (quality, bait,
true tastes, satisfaction). :meth:`TwinWorld.fit` takes a public log (:class:`ServedBatch`) and the public
catalogue frame and estimates

- examination per device and position (position-based model, PBM) by alternating maximisation over the
  logger's randomisation: the stochastic champion shows the same item at several positions, which separates
  position from item (Joachims et al. 2017; Wang et al. 2018, "regression EM" without the regression);
- item attractiveness P(click | examined) and conversion P(purchase | click, in stock) by empirical-Bayes
  shrinkage of each item's counts toward its category mean, the prior strength from the method of moments
  (beta-binomial); items the log never showed get their category mean;
- user tastes by implicit-feedback matrix factorisation (ALS) on the logged clicks; the click logit of a
  known user moves with the centred MF score, with a weight fitted by likelihood on the log;
- stock from the public snapshot (``stock`` column), depleted by the twin's own simulated purchases.

What the twin lacks, on purpose (the natural fidelity gaps of §6.5): fatigue, satisfaction and return
dynamics, context (hour) effects, restocks, and anything about users who are not in the log. Bait items are
rarely bought, so their conversion shrinks toward the category mean: the twin over-estimates bait.

:meth:`TwinWorld.ab` runs two rankers over the same replayed traffic (the logged request contexts, re-timed
from ``start_day``) for ``days`` simulated days with common random numbers, and returns per-user expected
revenue, clicks and purchases for each arm (expected values given the simulated state: low noise, paired).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.world.threads import single_threaded_blas
from stagegate.log_rows import concat, take, take_context
from stagegate.logs import RequestContext, ServedBatch

if TYPE_CHECKING:
    import pandas as pd

    from stagegate.models.base import Ranker

N_DEVICES = 2
METRICS = ("revenue_per_user", "clicks_per_user", "purchases_per_user")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _shrink(
    successes: np.ndarray, trials: np.ndarray, group: np.ndarray, n_groups: int
) -> tuple[np.ndarray, float]:
    """Empirical-Bayes (beta-binomial) shrinkage of per-item rates toward their group's pooled rate.

    The prior strength m = μ(1 − μ)/σ² − 1 comes from the between-item variance of the observed rates
    (method of moments, items with at least one trial), clipped to [2, 2000].
    """
    g_succ = np.bincount(group, weights=successes, minlength=n_groups)
    g_trials = np.bincount(group, weights=trials, minlength=n_groups)
    overall = successes.sum() / max(trials.sum(), 1e-12)
    mu = np.where(g_trials > 0, g_succ / np.maximum(g_trials, 1e-12), overall)
    seen = trials >= 1.0
    if seen.sum() >= 3:
        rate = successes[seen] / trials[seen]
        m_bar = mu[group[seen]]
        # excess variance over the binomial noise
        between = np.mean((rate - m_bar) ** 2 - m_bar * (1 - m_bar) / trials[seen])
        pooled = float(np.mean(m_bar * (1 - m_bar)))
        m = pooled / between - 1.0 if between > 0 else 2000.0
    else:
        m = 2000.0
    m = float(np.clip(m, 2.0, 2000.0))
    return (successes + m * mu[group]) / (trials + m), m


def _als(
    rows: np.ndarray,
    cols: np.ndarray,
    counts: np.ndarray,
    n_rows: int,
    n_cols: int,
    factors: int,
    reg: float,
    alpha: float,
    iterations: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Implicit ALS (Hu, Koren, Volinsky 2008), vectorised: per-row normal equations summed by reduceat."""
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.normal(size=(n_rows, factors))
    y = 0.1 * rng.normal(size=(n_cols, factors))

    def half(r: np.ndarray, c: np.ndarray, w: np.ndarray, n: int, fixed: np.ndarray) -> np.ndarray:
        order = np.argsort(r, kind="stable")
        r, c, w = r[order], c[order], w[order]
        f = fixed.shape[1]
        gram = fixed.T @ fixed + reg * np.eye(f)
        a = np.broadcast_to(gram, (n, f, f)).copy()
        b = np.zeros((n, f))
        if r.size:
            starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
            owners = r[starts]
            v = fixed[c]
            conf = alpha * w
            a[owners] += np.add.reduceat(conf[:, None, None] * v[:, :, None] * v[:, None, :], starts, axis=0)
            b[owners] += np.add.reduceat((1.0 + conf)[:, None] * v, starts, axis=0)
        return np.linalg.solve(a, b[:, :, None])[:, :, 0]

    for _ in range(iterations):
        x = half(rows, cols, counts, n_rows, y)
        y = half(cols, rows, counts, n_cols, x)
    return x, y


WEIGHTS = np.linspace(0.0, 3.0, 13)  # taste weights tried, in units of the centred score's spread


@dataclass
class _Affinity:
    """Implicit-ALS factors of one log and the centring of their scores (see :meth:`TwinWorld.fit`)."""

    user_ids: np.ndarray
    uf: np.ndarray
    itf: np.ndarray
    item_mean: np.ndarray  # mean score of each item over the log's impressions
    sd: float  # spread of the centred scores over the log's impressions

    def centred(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Centred score / sd of every (request, slot); 0 for users without factors."""
        where = np.minimum(np.searchsorted(self.user_ids, users), max(self.user_ids.size - 1, 0))
        known = self.user_ids.size > 0
        known = (self.user_ids[where] == users) if known else np.zeros(users.size, bool)
        s = np.einsum("nf,nkf->nk", self.uf[where], self.itf[items]) - self.item_mean[items]
        return np.where(known[:, None], s / self.sd, 0.0)


def _affinity_model(
    logs: ServedBatch, n_items: int, *, factors: int, iterations: int, seed: int
) -> _Affinity:
    items = np.asarray(logs.items, dtype=np.int64)
    clicks = np.asarray(logs.clicks, dtype=float)
    users = np.asarray(logs.context.user_id, dtype=np.int64)
    user_ids, u_idx = np.unique(users, return_inverse=True)
    r, c = np.nonzero(clicks > 0)
    pair = u_idx[r] * n_items + items[r, c]
    pairs, pc = np.unique(pair, return_counts=True)
    uf, itf = _als(
        pairs // n_items,
        pairs % n_items,
        pc.astype(float),
        user_ids.size,
        n_items,
        factors,
        reg=5.0,
        alpha=10.0,
        iterations=iterations,
        seed=seed,
    )
    flat = items.ravel()
    score = np.einsum("nkf,nkf->nk", uf[u_idx][:, None, :], itf[items])
    item_mean = np.bincount(flat, weights=score.ravel(), minlength=n_items) / np.maximum(
        np.bincount(flat, minlength=n_items), 1
    )
    sd = float((score - item_mean[items]).std()) or 1.0
    return _Affinity(user_ids, uf, itf, item_mean, sd)


def _best_weight(clicks: np.ndarray, exam: np.ndarray, base: np.ndarray, centred: np.ndarray) -> float:
    """The weight (in score-sd units, from :data:`WEIGHTS`) of maximum Bernoulli likelihood of ``clicks``."""
    best, best_ll = 0.0, -np.inf
    for w in WEIGHTS:
        p = np.clip(exam * _sigmoid(base + w * centred), 1e-9, 1 - 1e-9)
        ll = float((clicks * np.log(p) + (1 - clicks) * np.log1p(-p)).sum())
        if ll > best_ll:
            best, best_ll = float(w), ll
    return best


@dataclass
class TwinRun:
    """One arm's simulated horizon: per-user expected outcomes and the stock path."""

    user_ids: np.ndarray
    metrics: dict[str, np.ndarray]  # per user, summed over the horizon
    totals: dict[str, float]
    stock_end: np.ndarray
    oos_slot_share: float  # shown slots whose item was out of stock in the twin


@dataclass
class TwinWorld:
    """A log-fitted simulator (see the module docstring). Build it with :meth:`fit`."""

    k: int
    examination: np.ndarray  # (N_DEVICES, k)
    attractiveness: np.ndarray  # (n_items,) P(click | examined), shrunk
    conversion: np.ndarray  # (n_items,) P(purchase | click, in stock), shrunk
    user_ids: np.ndarray  # sorted ids of users with MF factors
    user_factors: np.ndarray
    item_factors: np.ndarray
    item_score_mean: np.ndarray  # (n_items,) mean MF score of an item over the logged impressions
    taste_weight: float
    price: np.ndarray
    publish_day: np.ndarray
    stock: np.ndarray  # public snapshot
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.price)

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        train_logs: ServedBatch,
        catalog_public: pd.DataFrame,
        *,
        factors: int = 8,
        als_iterations: int = 6,
        em_iterations: int = 15,
        seed: int = 0,
        taste_holdout: float = 0.3,
    ) -> TwinWorld:
        """Fit the twin from a public log and the public catalogue only (see the module docstring).

        ``taste_holdout``: the share of the log's time span (its end) on which the taste weight is chosen
        out of sample; 0 chooses it in sample (the earlier behaviour)."""
        if not isinstance(train_logs, ServedBatch):  # a list of batches (one per serving snapshot)
            train_logs = concat(list(train_logs))
        if not 0.0 <= taste_holdout < 1.0:
            raise ValueError(f"taste_holdout must be in [0, 1), got {taste_holdout}")
        with single_threaded_blas():
            return cls._fit(
                train_logs, catalog_public, factors, als_iterations, em_iterations, seed, taste_holdout
            )

    @classmethod
    def _fit(
        cls,
        logs: ServedBatch,
        catalog: pd.DataFrame,
        factors: int,
        als_iterations: int,
        em_iterations: int,
        seed: int,
        taste_holdout: float,
    ) -> TwinWorld:
        frame = catalog.sort_values("item_id")
        n_items = len(frame)
        category = frame["category"].to_numpy(dtype=np.int64)
        n_cat = int(category.max()) + 1
        price = frame["price"].to_numpy(dtype=float)
        if logs.n == 0:
            raise ValueError("TwinWorld.fit needs a non-empty log")
        items = np.asarray(logs.items, dtype=np.int64)
        n, k = items.shape
        clicks = np.asarray(logs.clicks, dtype=float)
        purchases = np.asarray(logs.purchases, dtype=float)
        device = np.clip(np.asarray(logs.context.device, dtype=np.int64), 0, N_DEVICES - 1)
        flat = items.ravel()
        dev_pos = (device[:, None] * k + np.arange(k)[None, :]).ravel()

        # --- PBM: alternate item attractiveness and examination per (device, position)
        click_flat = clicks.ravel()
        ctr_pos = np.bincount(dev_pos, weights=click_flat, minlength=N_DEVICES * k) / np.maximum(
            np.bincount(dev_pos, minlength=N_DEVICES * k), 1
        )
        theta = np.maximum(ctr_pos / max(ctr_pos.max(), 1e-12), 1e-3)
        item_clicks = np.bincount(flat, weights=click_flat, minlength=n_items)
        for _ in range(em_iterations):
            exam = np.bincount(flat, weights=theta[dev_pos], minlength=n_items)
            gamma = (item_clicks + 0.5) / (exam + 5.0)
            num = np.bincount(dev_pos, weights=click_flat, minlength=N_DEVICES * k)
            den = np.bincount(dev_pos, weights=gamma[flat], minlength=N_DEVICES * k)
            theta = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
            theta = np.maximum(theta / max(theta.max(), 1e-12), 1e-4)
        exam = np.bincount(flat, weights=theta[dev_pos], minlength=n_items)
        attractiveness, m_click = _shrink(item_clicks, exam, category, n_cat)

        # --- conversion after a click, counted only where the item was in stock when served
        in_stock = (
            np.asarray(logs.stock_at_serve) > 0 if logs.stock_at_serve is not None else np.ones((n, k), bool)
        )
        clicked_in_stock = (clicks > 0) & in_stock
        c_trials = np.bincount(flat, weights=clicked_in_stock.ravel().astype(float), minlength=n_items)
        c_succ = np.bincount(flat, weights=(purchases.ravel() * in_stock.ravel()), minlength=n_items)
        conversion, m_buy = _shrink(c_succ, c_trials, category, n_cat)

        # --- user tastes: implicit ALS on (user, item) click counts. The weight of the centred MF score
        # in the click logit is chosen by likelihood on a temporal hold-out (the last ``taste_holdout`` of
        # the log's span, factors fitted on the rest), then applied, in units of the score's spread, to
        # factors refitted on the whole log. In-sample, the factors have memorised the very clicks the weight
        # is judged on, and the likelihood asks for a far larger weight (demo world, seed 7: 0.75 score sd
        # in sample, 0 on the hold-out); that makes every (user, item) pair the log did not show look
        # unattractive and favours rankers that agree with the logger's personalisation over
        # non-personalised ones (the popularity-only case of docs/benchmarks.md, "Twin calibration").
        als = {"factors": factors, "iterations": als_iterations, "seed": seed}
        full = _affinity_model(logs, n_items, **als)
        users = np.asarray(logs.context.user_id, dtype=np.int64)
        e = theta[dev_pos].reshape(n, k)
        base = _logit(attractiveness[items])
        in_sample = _best_weight(clicks, e, base, full.centred(users, items))
        weight, source = in_sample, "in-sample"
        t = np.asarray(logs.context.t, dtype=float)
        cut = float(t.max() - taste_holdout * (t.max() - t.min())) if taste_holdout > 0 else -np.inf
        early, late = t < cut, t >= cut
        if taste_holdout > 0 and early.sum() >= 100 and late.sum() >= 100 and clicks[late].sum() > 0:
            part = _affinity_model(take(logs, early), n_items, **als)
            weight = _best_weight(clicks[late], e[late], base[late], part.centred(users[late], items[late]))
            source = f"hold-out (last {taste_holdout:.0%} of the log)"
        user_ids, uf, itf, item_score_mean, sd = full.user_ids, full.uf, full.itf, full.item_mean, full.sd
        best = weight
        stock = frame["stock"].to_numpy(dtype=np.int64) if "stock" in frame else np.full(n_items, 1 << 40)
        info = {
            "n_requests": int(n),
            "prior_strength_click": m_click,
            "prior_strength_purchase": m_buy,
            "taste_weight": best,
            "taste_weight_in_sample": in_sample,
            "taste_weight_source": source,
            "examination": theta.reshape(N_DEVICES, k).round(4).tolist(),
        }
        return cls(
            k=k,
            examination=theta.reshape(N_DEVICES, k),
            attractiveness=attractiveness,
            conversion=conversion,
            user_ids=user_ids,
            user_factors=uf,
            item_factors=itf,
            item_score_mean=item_score_mean,
            taste_weight=best / sd,
            price=price,
            publish_day=frame["publish_day"].to_numpy(dtype=float),
            stock=stock,
            info=info,
        )

    # ------------------------------------------------------------------ response

    def click_probability(self, ctx: RequestContext, slates: np.ndarray) -> np.ndarray:
        """P(click) of every slot: examination(device, position) × σ(logit attractiveness + taste term)."""
        pos = np.broadcast_to(np.arange(slates.shape[1]), slates.shape)
        dev = np.clip(np.asarray(ctx.device, dtype=np.int64), 0, N_DEVICES - 1)
        e = self.examination[dev[:, None], np.minimum(pos, self.k - 1)]
        logit = _logit(self.attractiveness[slates])
        where = np.searchsorted(self.user_ids, ctx.user_id)
        where = np.minimum(where, max(self.user_ids.size - 1, 0))
        known = self.user_ids.size > 0
        known = known & (self.user_ids[where] == ctx.user_id) if known else np.zeros(ctx.n, bool)
        if self.taste_weight and known.any():
            s = np.einsum("nf,nkf->nk", self.user_factors[where], self.item_factors[slates])
            s = s - self.item_score_mean[slates]
            logit = logit + np.where(known[:, None], self.taste_weight * s, 0.0)
        return e * _sigmoid(logit)

    # ------------------------------------------------------------------ simulation

    def simulate(
        self,
        ranker: Ranker,
        traffic: RequestContext,
        days: float,
        *,
        seed: int = 0,
        start_day: float | None = None,
        block_hours: float = 4.0,
    ) -> TwinRun:
        """Serve ``ranker`` on ``traffic`` replayed over ``days`` days, stock depleting; see :meth:`ab`."""
        with single_threaded_blas():
            return self._simulate(ranker, traffic, days, seed, start_day, block_hours)

    def _schedule(self, traffic: RequestContext, days: float, start_day: float | None) -> tuple:
        """Replay the logged requests, tiled in time, over ``days`` days from ``start_day``."""
        t = np.asarray(traffic.t, dtype=float)
        t0 = float(t.min())
        span = max(float(np.ceil(t.max() - t0 + 1e-9)), 1.0)
        start = float(np.ceil(t.max())) if start_day is None else float(start_day)
        reps = int(np.ceil(days / span))
        rel = t - t0
        idx = np.concatenate([np.flatnonzero(rel < min(span, days - r * span)) for r in range(reps)])
        shift = np.concatenate(
            [np.full(int((rel < min(span, days - r * span)).sum()), r * span) for r in range(reps)]
        )
        when = start + rel[idx] + shift
        order = np.argsort(when, kind="stable")
        return idx[order], when[order], start

    def _simulate(
        self,
        ranker: Ranker,
        traffic: RequestContext,
        days: float,
        seed: int,
        start_day: float | None,
        block_hours: float,
    ) -> TwinRun:
        if days <= 0:
            raise ValueError(f"days must be positive, got {days}")
        idx, when, start = self._schedule(traffic, days, start_day)
        n, k = idx.size, self.k
        rng = np.random.default_rng(
            [seed, 20_251]
        )  # CRN: same draws per (replayed request, slot) in each arm
        u_click, u_buy = rng.random((n, k)), rng.random((n, k))
        stock = self.stock.astype(np.int64).copy()
        block = np.floor((when - start) * 24.0 / block_hours).astype(np.int64)
        bounds = np.flatnonzero(np.r_[True, block[1:] != block[:-1], True])
        exp_click = np.zeros(n)
        exp_buy = np.zeros(n)
        exp_rev = np.zeros(n)
        oos_slots = 0
        for a, b in itertools.pairwise(bounds):  # time blocks, not requests
            rows = idx[a:b]
            t_now = float(when[a])
            published = self.publish_day <= t_now
            base = take_context(traffic, rows)
            ctx = RequestContext(
                **{
                    **base.__dict__,
                    "t": when[a:b],
                    "in_stock": (stock > 0) & published,
                    "item_age_days": np.where(published, t_now - self.publish_day, np.inf),
                }
            )
            slates = np.asarray(ranker.recommend(ctx, k), dtype=np.int64)
            p_click = self.click_probability(ctx, slates)
            available = stock[slates] > 0
            oos_slots += int((~available).sum())
            p_buy = self.conversion[slates] * available
            exp_click[a:b] = p_click.sum(axis=1)
            exp_buy[a:b] = (p_click * p_buy).sum(axis=1)
            exp_rev[a:b] = (p_click * p_buy * self.price[slates]).sum(axis=1)
            bought = (u_click[a:b] < p_click) & (u_buy[a:b] < p_buy)
            sold = np.bincount(slates[bought], minlength=self.n_items)
            stock = np.maximum(stock - sold, 0)
        user_ids, inv = np.unique(np.asarray(traffic.user_id, dtype=np.int64), return_inverse=True)
        owner = inv[idx]
        per_user = {
            "revenue_per_user": np.bincount(owner, weights=exp_rev, minlength=user_ids.size),
            "clicks_per_user": np.bincount(owner, weights=exp_click, minlength=user_ids.size),
            "purchases_per_user": np.bincount(owner, weights=exp_buy, minlength=user_ids.size),
        }
        totals = {m: float(v.mean()) for m, v in per_user.items()}
        return TwinRun(user_ids, per_user, totals, stock, oos_slots / max(n * k, 1))

    def ab(
        self,
        champion: Ranker,
        candidate: Ranker,
        traffic: RequestContext,
        days: float = 7.0,
        *,
        seeds: int = 1,
        start_day: float | None = None,
    ) -> dict[str, TwinRun]:
        """Both rankers at 100 % on the same replayed traffic with common random numbers, averaged over
        ``seeds`` (the stock path is the only random part).

        Returns ``{"champion": run, "candidate": run}``.
        """
        out: dict[str, TwinRun] = {}
        for arm, ranker in (("champion", champion), ("candidate", candidate)):
            runs = [self.simulate(ranker, traffic, days, seed=s, start_day=start_day) for s in range(seeds)]
            first = runs[0]
            metrics = {m: np.mean([r.metrics[m] for r in runs], axis=0) for m in first.metrics}
            out[arm] = TwinRun(
                first.user_ids,
                metrics,
                {m: float(v.mean()) for m, v in metrics.items()},
                first.stock_end,
                float(np.mean([r.oos_slot_share for r in runs])),
            )
        return out
