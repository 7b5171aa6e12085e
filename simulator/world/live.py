"""LiveWorld: the simulated e-commerce world that serves rankers to users (reference §6.2–6.4).

One call to :meth:`LiveWorld.serve` advances the clock hour by hour. In each hour users arrive (a Poisson
rate that depends on their activity, the time of day and their satisfaction), and each session is a loop of
slates: the ranker of the user's arm produces a slate, the user examines, clicks and maybe buys, the world's
state moves (stock, recent sales, fatigue, satisfaction, tastes, history), and the user continues with a
probability that depends on what happened. Everything random is drawn from counter-based streams keyed by
(user, hour, session, slate, position) so that two copies of the world serving different rankers share their
dice (common random numbers), which is what :func:`simulator.world.oracle.ground_truth` relies on.

The hidden truth (quality, bait, tastes, satisfaction) never leaves this object except through
:meth:`LiveWorld.oracle`, which is meant for tests and benchmarks only.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.world import serving
from simulator.world.assignment import assign
from simulator.world.catalog import Catalog, make_catalog, public_frame
from simulator.world.config import WorldConfig
from simulator.world.oracle import WorldOracle, ground_truth
from simulator.world.response import respond, sigmoid
from simulator.world.rng import stream_key, uniform
from simulator.world.stock import allocate, initial_stock, restock_target
from simulator.world.threads import single_threaded_blas
from simulator.world.users import Users, make_users
from stagegate.log_rows import concat, take_context
from stagegate.logs import RequestContext, ServedBatch
from stagegate.ranking import top_k

if TYPE_CHECKING:
    import pandas as pd

    from stagegate.models.base import Ranker

# stream ids of the counter-based random numbers (one per kind of draw)
_ARRIVE, _START, _DEVICE, _GUMBEL, _CLICK, _BUY, _CONTINUE, _RESTOCK = range(8)
_SLATE_GAP_HOURS = 2.0 / 60.0  # time between two slates of one session
_NOMINAL_SLATES_PER_SESSION = 2.5  # converts requests_per_hour into a session rate
_PRIMARY_DEVICE_PROB = 0.85
_PURCHASES_PER_SLATE_GUESS = 0.03  # only sizes the initial stock; the realised rate comes from the model
EXPECTED_KEYS = ("clicks", "purchases", "revenue", "cold_start_revenue")


def _poisson_from_uniform(u: np.ndarray, lam: np.ndarray, kmax: int = 8) -> np.ndarray:
    """Inverse-CDF Poisson draws for small rates: monotone in ``lam`` for a fixed ``u`` (keeps CRN tight)."""
    p = np.exp(-lam)
    cdf = p.copy()
    count = np.zeros(u.shape, dtype=np.int64)
    for k in range(1, kmax + 1):
        count += u > cdf
        p = p * lam / k
        cdf = cdf + p
    return count


def _diurnal(hour: int) -> float:
    """Relative traffic by hour of day: a trough at 8 in the morning, a peak at 8 in the evening, mean 1."""
    return 1.0 + 0.6 * math.sin(2.0 * math.pi * (hour - 14) / 24.0)


class LiveWorld:
    """The live world. Deterministic: the same config and the same sequence of calls give identical logs."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config if config is not None else WorldConfig()
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        self._catalog: Catalog = make_catalog(cfg, rng)
        self._users: Users = make_users(cfg, self._catalog, rng)
        self._noise = stream_key(cfg.seed, "noise")
        self._aux = np.random.default_rng([cfg.seed, 1])  # latency, errors, Monte-Carlo propensities
        self._compute_pscore = cfg.compute_pscore
        n_u, n_i = cfg.n_users, cfg.n_items
        self._t_hours = 0.0
        self._day = 0
        self._next_request_id = 0
        self._next_session_id = 0
        self._taste = self._users.taste.copy()
        self._fatigue = np.zeros((n_u, cfg.n_categories))
        self._satisfaction = np.zeros(n_u)
        self._recent = np.full((n_u, cfg.history_len), -1, dtype=np.int32)
        self._n_hist = np.zeros(n_u, dtype=np.int64)
        self._sales = np.zeros((7, n_i), dtype=np.int64)  # ring buffer of daily sales, for social proof
        self._cover = rng.uniform(cfg.cover_days[0], cfg.cover_days[1], size=n_i)
        self._stock_level = initial_stock(self._expected_daily_sales(rng), self._cover, rng)
        self._stock = self._stock_level.copy() if cfg.mechanisms.stock else np.full(n_i, 1 << 40)
        self._restock_offset = rng.integers(0, 7, size=n_i)
        self._activity_rate = self._users.activity / self._users.activity.sum()
        # expected (Rao–Blackwellised) outcomes of everything served, hidden: the oracle's low-noise truth
        self._expected = dict.fromkeys(EXPECTED_KEYS, 0.0)
        self._seed_history(rng)

    # ------------------------------------------------------------------ construction helpers

    def _expected_daily_sales(self, rng: np.random.Generator) -> np.ndarray:
        """A rough per-item demand forecast from the hidden appeal, used only to size the initial stock."""
        cat, usr, p = self._catalog, self._users, self.config.response
        sample = rng.choice(usr.n_users, size=min(400, usr.n_users), replace=False)
        aff = usr.taste[sample] @ cat.embedding.T
        click = sigmoid(p.alpha0 + p.alpha_affinity * aff + p.alpha_bait * cat.bait[None, :])
        buy = sigmoid(
            p.gamma0
            + p.gamma_affinity * aff
            + p.gamma_quality * cat.quality
            - p.gamma_price * cat.log_price_rel
        )
        appeal = (click * buy).mean(axis=0)
        total = self.config.requests_per_hour * 24.0 * _PURCHASES_PER_SLATE_GUESS
        return total * appeal / appeal.sum()

    def _seed_history(self, rng: np.random.Generator) -> None:
        """Users active at day 0 come with a past: a history length and recent items that follow taste."""
        cfg, cat, usr, p = self.config, self._catalog, self._users, self.config.response
        existing = np.flatnonzero(usr.join_day <= 0.0)
        if existing.size == 0:
            return
        n_past = rng.poisson(10.0 * usr.activity[existing] / usr.activity.mean())
        published = cat.publish_day <= 0.0
        logits = p.alpha_affinity * (self._taste[existing] @ cat.embedding.T)
        logits = logits + p.alpha_bait * usr.bait_sens[existing, None] * cat.bait[None, :]
        logits = np.where(published[None, :], logits + rng.gumbel(size=logits.shape), -np.inf)
        h = min(cfg.history_len, int(published.sum()))
        top = top_k(logits, h).astype(np.int32)
        keep = np.arange(h)[None, :] < n_past[:, None]
        self._recent[existing, :h] = np.where(keep, top, -1)
        self._n_hist[existing] = n_past

    # ------------------------------------------------------------------ public API

    @property
    def now(self) -> float:
        """Simulated time in days since the world began."""
        return self._t_hours / 24.0

    @property
    def n_items(self) -> int:
        return self.config.n_items

    def catalog_public(self) -> pd.DataFrame:
        """The public catalogue at the current time (item_id, category, price, margin, publish_day, saliency,
        stock, emb_0..emb_{d-1}). Items with a future publish_day are announced but cannot be served yet."""
        return public_frame(self._catalog, self._stock)

    def public_stock(self) -> np.ndarray:
        """Current units on hand per item (public)."""
        return self._stock.copy()

    def published(self, t_days: float | None = None) -> np.ndarray:
        """Bool (n_items,): items published at ``t_days`` (default: now)."""
        t = self.now if t_days is None else t_days
        return self._catalog.publish_day <= t

    def oracle(self) -> WorldOracle:
        """The hidden truth, for tests and benchmarks only: never pass it to a model or a pipeline stage."""
        cat, usr = self._catalog, self._users
        return WorldOracle(
            item_quality=cat.quality.copy(),
            item_bait=cat.bait.copy(),
            item_is_bait=cat.is_bait.copy(),
            item_embedding=cat.embedding.copy(),
            stock_level=self._stock_level.copy(),
            user_taste=self._taste.copy(),
            user_satisfaction=self._satisfaction.copy(),
            user_activity=usr.activity.copy(),
            user_join_day=usr.join_day.copy(),
            user_history_length=self._n_hist.copy(),
        )

    def serve(
        self,
        champion: Ranker,
        candidate: Ranker | None = None,
        candidate_share: float = 0.0,
        hours: float = 1.0,
        shadow: Ranker | None = None,
        explore_temperature: float | None = 0.3,
    ) -> ServedBatch:
        """Serve ``hours`` of traffic and advance the clock; returns the public log of that window.

        Each user is in the candidate arm (arm 1) when the salted hash of their id falls below
        ``candidate_share`` (sticky across calls). Both arms are served alike, by Plackett–Luce over their
        ranker's scores at ``explore_temperature`` (deterministic top-k if None) with shared uniforms, so a
        copy of the champion in the candidate arm is a true A/A; with ``shadow`` the shadow ranker's slate
        (its ``recommend``) is computed for every request and logged, never shown.
        """
        if not 0.0 <= candidate_share <= 1.0:
            raise ValueError(f"candidate_share must be in [0, 1], got {candidate_share}")
        if candidate_share > 0.0 and candidate is None:
            raise ValueError("candidate_share > 0 needs a candidate ranker")
        if hours <= 0.0:
            raise ValueError(f"hours must be positive, got {hours}")
        if explore_temperature is not None and explore_temperature <= 0.0:
            raise ValueError(f"explore_temperature must be positive or None, got {explore_temperature}")
        with single_threaded_blas():
            return self._serve(champion, candidate, candidate_share, hours, shadow, explore_temperature)

    def _serve(
        self,
        champion: Ranker,
        candidate: Ranker | None,
        candidate_share: float,
        hours: float,
        shadow: Ranker | None,
        explore_temperature: float | None,
    ) -> ServedBatch:
        parts: list[ServedBatch] = []
        remaining = float(hours)
        block = float(self.config.block_hours)
        while remaining > 1e-9:
            self._advance_days()
            boundary = (math.floor(self._t_hours / block + 1e-9) + 1.0) * block
            boundary = min(
                boundary, (math.floor(self._t_hours / 24.0 + 1e-9) + 1.0) * 24.0
            )  # never cross a day
            dt = min(remaining, boundary - self._t_hours)
            part = self._tick(dt, champion, candidate, candidate_share, shadow, explore_temperature)
            if part is not None:
                parts.append(part)
            self._t_hours += dt
            remaining -= dt
        self._advance_days()
        # slates of a session that started near a block's end spill past it: order the window by time
        batch = self._sorted_by_time(concat(parts)) if parts else self._empty_batch(shadow is not None)
        ctx = batch.context
        ctx = RequestContext(**{**ctx.__dict__, **self._snapshot(self.now)})
        return ServedBatch(**{**batch.__dict__, "context": ctx})

    def log_history(
        self, champion: Ranker, days: float, explore_temperature: float | None = 0.3
    ) -> ServedBatch:
        """Serve ``days`` of champion-only traffic (the logs the offline stage and training read)."""
        return self.serve(champion, hours=days * 24.0, explore_temperature=explore_temperature)

    def ground_truth(
        self,
        champion: Ranker,
        candidate: Ranker,
        days: float = 7.0,
        seeds: tuple[int, ...] | list[int] = (0, 1, 2),
        explore_temperature: float | None = 0.3,
    ) -> dict[str, Any]:
        """True relative effects of ``candidate`` at 100 % versus ``champion`` at 100 % (current state).

        See :func:`simulator.world.oracle.ground_truth`. The world itself is not advanced.
        """
        return ground_truth(
            self, champion, candidate, days=days, seeds=seeds, explore_temperature=explore_temperature
        )

    def fork(self, truth_seed: int | None = None) -> LiveWorld:
        """An independent copy of the world in its current state.

        With ``truth_seed`` the copy's future randomness is re-keyed by that seed and Monte-Carlo propensities
        are skipped: two forks with the same truth_seed share their random numbers (CRN).
        """
        twin = copy.deepcopy(self)
        if truth_seed is not None:
            twin._noise = stream_key(self.config.seed, f"truth:{truth_seed}")
            twin._aux = np.random.default_rng([self.config.seed, 2, truth_seed])
            twin._compute_pscore = False
            twin._expected = dict.fromkeys(EXPECTED_KEYS, 0.0)  # the oracle counts from the fork point
        return twin

    # ------------------------------------------------------------------ internals: time

    def _snapshot(self, t_days: float) -> dict[str, np.ndarray]:
        published = self._catalog.publish_day <= t_days
        age = np.where(published, t_days - self._catalog.publish_day, np.inf)
        return {"in_stock": (self._stock > 0) & published, "item_age_days": age}

    def _advance_days(self) -> None:
        """Daily updates at each day boundary: restock, sales window, satisfaction and fatigue decay."""
        today = math.floor(self._t_hours / 24.0 + 1e-12)
        p = self.config.response
        while self._day < today:
            self._day += 1
            sales_last_week = self._sales.sum(axis=0)
            self._sales[self._day % 7] = 0
            self._satisfaction *= p.sat_decay_day
            self._fatigue *= p.fatigue_day
            if self.config.mechanisms.stock:
                due = (self._day - self._restock_offset) % 7 == 0
                lucky = (
                    uniform(self._noise, _RESTOCK, np.arange(self.n_items), self._day)
                    < self.config.restock_prob
                )
                refill = due & lucky
                target = restock_target(
                    self._stock_level[refill], sales_last_week[refill], self._cover[refill]
                )
                self._stock[refill] = np.maximum(self._stock[refill], target)

    # ------------------------------------------------------------------ internals: one hour

    def _arrivals(self, t0: float, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sessions starting in [t0, t0 + dt) hours: (user, CRN key of the session, start time in hours).

        Counts are drawn hour by hour (the diurnal rate changes by hour) from inverse-CDF Poisson draws keyed
        by (user, minute of the segment start), so forks that serve the same windows share their arrivals.
        """
        cfg, p = self.config, self.config.response
        users = np.arange(cfg.n_users)
        base = self._activity_rate * (cfg.requests_per_hour / _NOMINAL_SLATES_PER_SESSION)
        if cfg.mechanisms.satisfaction:
            base = base * np.exp(p.visit_sat * self._satisfaction)
        out_u, out_key, out_t = [], [], []
        t, end = t0, t0 + dt
        while t < end - 1e-9:
            seg_end = min(end, math.floor(t + 1e-9) + 1.0)
            length = seg_end - t
            hour = math.floor(t + 1e-9) % 24
            seg_key = round(t * 60.0)
            rate = base * (_diurnal(hour) * length) * (self._users.join_day <= t / 24.0)
            counts = _poisson_from_uniform(uniform(self._noise, _ARRIVE, users, seg_key), rate)
            if counts.any():
                s_user = np.repeat(users, counts)
                s_j = np.arange(s_user.size) - np.repeat(np.cumsum(counts) - counts, counts)
                key = seg_key * 16 + np.minimum(s_j, 15)  # session key: segment start minute and index in it
                out_u.append(s_user)
                out_key.append(key)
                out_t.append(t + length * uniform(self._noise, _START, s_user, key))
            t = seg_end
        if not out_u:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0)
        return np.concatenate(out_u), np.concatenate(out_key), np.concatenate(out_t)

    def _tick(
        self,
        dt: float,
        champion: Ranker,
        candidate: Ranker | None,
        share: float,
        shadow: Ranker | None,
        temperature: float | None,
    ) -> ServedBatch | None:
        cfg = self.config
        t0 = self._t_hours
        s_user, s_key, s_start = self._arrivals(t0, dt)
        if s_user.size == 0:
            return None
        order = np.argsort(s_start, kind="stable")  # serve sessions in time order (stock: first come)
        s_user, s_key, s_start = s_user[order], s_key[order], s_start[order]
        primary = self._users.mobile_primary[s_user].astype(np.int8)
        s_device = np.where(
            uniform(self._noise, _DEVICE, s_user, s_key) < _PRIMARY_DEVICE_PROB, primary, 1 - primary
        )
        s_id = self._next_session_id + np.arange(s_user.size, dtype=np.int64)
        self._next_session_id += s_user.size

        published = self._catalog.publish_day <= t0 / 24.0
        steps: list[ServedBatch] = []
        active = np.arange(s_user.size)
        for step in range(cfg.max_slates_per_session):
            if active.size == 0:
                break
            batch, cont = self._step(
                step, s_user[active], s_key[active], s_start[active], s_device[active], s_id[active],
                t0, published, champion, candidate, share, shadow, temperature,
            )  # fmt: skip
            steps.append(batch)
            active = active[cont]
        return concat(steps)

    @staticmethod
    def _sorted_by_time(batch: ServedBatch) -> ServedBatch:
        from stagegate.log_rows import take

        order = np.lexsort((batch.context.request_id, batch.context.t))
        return take(batch, order)

    def _step(
        self,
        step: int,
        u: np.ndarray,
        key: np.ndarray,
        start: np.ndarray,
        device: np.ndarray,
        session_id: np.ndarray,
        t0: float,
        published: np.ndarray,
        champion: Ranker,
        candidate: Ranker | None,
        share: float,
        shadow: Ranker | None,
        temperature: float | None,
    ) -> tuple[ServedBatch, np.ndarray]:
        """Serve slate number ``step`` of every still-active session; returns its log and who continues."""
        cfg, p, mech, cat = self.config, self.config.response, self.config.mechanisms, self._catalog
        k = cfg.slate_k
        n = u.size
        t_hours = start + step * _SLATE_GAP_HOURS
        t_req = t_hours / 24.0
        t_days = t0 / 24.0
        lo, hi = cfg.segment_thresholds
        segment = np.where(self._n_hist[u] < lo, 0, np.where(self._n_hist[u] < hi, 1, 2)).astype(np.int8)
        ctx = RequestContext(
            request_id=self._next_request_id + np.arange(n, dtype=np.int64),
            t=t_req,
            user_id=u.astype(np.int64),
            hour=(np.floor(start).astype(np.int64) % 24).astype(np.int8),  # the hour the session started
            device=device.astype(np.int8),
            user_segment=segment,
            recent_items=self._recent[u].copy(),
            in_stock=(self._stock > 0) & published,
            item_age_days=np.where(published, t_days - cat.publish_day, np.inf),
        )
        self._next_request_id += n

        # --- who is served by whom
        arm = assign(u, share, cfg.assignment_salt) if candidate is not None else np.zeros(n, dtype=np.int8)
        items = np.zeros((n, k), dtype=np.int32)
        pscore = np.ones((n, k))
        prefix = np.ones((n, k))
        error = np.zeros(n, dtype=bool)
        latency = np.zeros(n)
        i0, i1 = np.flatnonzero(arm == 0), np.flatnonzero(arm == 1)
        # one serving policy for both arms, with the same Gumbel uniforms (see simulator.world.serving)
        m = max(min(cfg.explore_pool, int(published.sum())), k)
        ug = uniform(self._noise, _GUMBEL, u[:, None], key[:, None], step, np.arange(m)[None, :])
        mc_rng = self._aux if self._compute_pscore else None

        def serve(ranker: Ranker, rows: np.ndarray) -> serving.Slates:
            return serving.serve_ranked(
                ranker, take_context(ctx, rows), k, temperature, m, ug[rows], cfg.pscore_samples, mc_rng,
                published,
            )  # fmt: skip

        if i0.size:
            sl = serve(champion, i0)
            items[i0], pscore[i0], prefix[i0] = sl.items, sl.pscore, sl.pscore_prefix
            error[i0] = self._aux.random(i0.size) < serving.error_rate(champion, cfg.base_error_rate)
            latency[i0] = serving.latency(
                serving.median_latency(champion, cfg.base_latency_ms), cfg.latency_sigma, i0.size, self._aux
            )
        if i1.size:
            assert candidate is not None
            try:
                proposed: serving.Slates | None = serve(candidate, i1)
            except Exception:  # a failing candidate must not take the world down: log it and fall back
                proposed = None
            ok = np.zeros(i1.size, dtype=bool)
            if proposed is not None:
                ok = proposed.valid & serving.valid_rows(proposed.items, i1.size, k, published)
            failed = ~ok | (self._aux.random(i1.size) < serving.error_rate(candidate, cfg.base_error_rate))
            if proposed is not None and ok.any():
                rows = i1[ok]
                items[rows], pscore[rows], prefix[rows] = (
                    proposed.items[ok],
                    proposed.pscore[ok],
                    proposed.pscore_prefix[ok],
                )
            if failed.any():
                rows = i1[failed]
                sl = serve(champion, rows)
                items[rows], pscore[rows], prefix[rows] = sl.items, sl.pscore, sl.pscore_prefix
            error[i1] = failed
            latency[i1] = serving.latency(
                serving.median_latency(candidate, cfg.base_latency_ms), cfg.latency_sigma, i1.size, self._aux
            )
        shadow_items = shadow_latency = shadow_error = None
        if shadow is not None:
            try:
                proposed = shadow.recommend(ctx, k)
            except Exception:
                proposed = None
            ok = serving.valid_rows(proposed, n, k, published)
            shadow_items = np.full((n, k), -1, dtype=np.int32)
            if ok.any():
                shadow_items[ok] = np.asarray(proposed)[ok]
            shadow_error = ~ok | (self._aux.random(n) < serving.error_rate(shadow, cfg.base_error_rate))
            shadow_latency = serving.latency(
                serving.median_latency(shadow, cfg.base_latency_ms), cfg.latency_sigma, n, self._aux
            )

        # --- the users respond
        pos = np.arange(k)[None, :]
        u_click = uniform(self._noise, _CLICK, u[:, None], key[:, None], step, pos)
        u_buy = uniform(self._noise, _BUY, u[:, None], key[:, None], step, pos)
        stock_at_serve = self._stock[items].astype(np.int64)
        resp = respond(
            u, items, ctx.device, ctx.hour, t_req[:, None] - cat.publish_day[items],
            catalog=cat, users=self._users, taste=self._taste, fatigue=self._fatigue,
            sales7d=self._sales.sum(axis=0), stock=self._stock, u_click=u_click, u_buy=u_buy,
            params=p, mech=mech,
        )  # fmt: skip
        exp_buy = resp.p_click * resp.p_buy
        exp_rev = (exp_buy * cat.price[items]).sum(axis=1)
        self._expected["clicks"] += float(resp.p_click.sum())
        self._expected["purchases"] += float(exp_buy.sum())
        self._expected["revenue"] += float(exp_rev.sum())
        self._expected["cold_start_revenue"] += float(exp_rev[segment == 0].sum())
        purchases = allocate(resp.purchases, items, self._stock, t_req)
        oos = resp.oos_clicks | (resp.purchases & ~purchases)  # someone else bought the last unit
        revenue = (purchases * cat.price[items]).sum(axis=1)
        self._update_state(u, items, resp.clicks, purchases, oos, resp.redundancy)

        any_click = resp.clicks.any(axis=1)
        logit = p.cont0 + p.cont_click * any_click
        if mech.satisfaction:
            logit = logit + p.cont_sat * self._satisfaction[u]
        u_cont = uniform(self._noise, _CONTINUE, u, key, step)
        cont = (u_cont < sigmoid(logit)) & (step + 1 < cfg.max_slates_per_session)

        batch = ServedBatch(
            context=ctx,
            arm=arm,
            items=items,
            pscore=pscore,
            clicks=resp.clicks,
            purchases=purchases,
            revenue=revenue,
            latency_ms=latency,
            error=error,
            shadow_items=shadow_items,
            pscore_prefix=prefix,
            session_id=session_id,
            slate_index=np.full(n, step, dtype=np.int16),
            stock_at_serve=stock_at_serve,
            shadow_latency_ms=shadow_latency,
            shadow_error=shadow_error,
            in_stock_at_serve=np.tile(np.packbits(ctx.in_stock, bitorder="little"), (n, 1)),
        )
        return batch, cont

    def _update_state(
        self,
        u: np.ndarray,
        items: np.ndarray,
        clicks: np.ndarray,
        purchases: np.ndarray,
        oos: np.ndarray,
        red: np.ndarray,
    ) -> None:
        cfg, p, mech, cat = self.config, self.config.response, self.config.mechanisms, self._catalog
        k = items.shape[1]
        sold = np.bincount(items[purchases], minlength=cfg.n_items)
        if mech.stock:
            self._stock -= sold
        self._sales[self._day % 7] += sold
        if mech.fatigue:
            self._fatigue[u] *= p.fatigue_slate
            np.add.at(self._fatigue, (np.repeat(u, k), cat.category[items].ravel()), 1.0 / k)
        if mech.satisfaction:
            disappointed = clicks & ~purchases & ~oos
            delta = (
                p.sat_purchase * purchases.sum(axis=1)
                - p.sat_bait_click
                * (disappointed * np.maximum(cat.bait[items] - p.sat_bait_floor, 0.0)).sum(axis=1)
                - p.sat_oos_click * oos.sum(axis=1)
                - p.sat_redundancy * red.mean(axis=1)
            )
            self._satisfaction[u] = p.sat_decay_slate * self._satisfaction[u] + delta
        # history: clicked items go to the front of the user's recent list, most recent first
        n_click = clicks.sum(axis=1)
        rows = np.flatnonzero(n_click)
        if rows.size:
            h = cfg.history_len
            clicked = np.where(clicks[rows], items[rows], -1)[:, ::-1]  # lower slots clicked later
            merged = np.concatenate([clicked, self._recent[u[rows]]], axis=1)
            keep = np.argsort(merged < 0, axis=1, kind="stable")[:, :h]
            self._recent[u[rows]] = np.take_along_axis(merged, keep, axis=1)
            np.add.at(self._n_hist, u[rows], n_click[rows])
        if mech.interest_drift and purchases.any():
            r, c = np.nonzero(purchases)
            w = p.drift_rate
            target = np.zeros_like(self._taste)
            np.add.at(target, u[r], cat.embedding[items[r, c]])
            touched = np.unique(u[r])
            moved = (1 - w) * self._taste[touched] + w * target[touched]
            self._taste[touched] = moved / np.linalg.norm(moved, axis=1, keepdims=True)

    def _empty_batch(self, with_shadow: bool) -> ServedBatch:
        k, h = self.config.slate_k, self.config.history_len
        ctx = RequestContext(
            request_id=np.zeros(0, dtype=np.int64),
            t=np.zeros(0),
            user_id=np.zeros(0, dtype=np.int64),
            hour=np.zeros(0, dtype=np.int8),
            device=np.zeros(0, dtype=np.int8),
            user_segment=np.zeros(0, dtype=np.int8),
            recent_items=np.zeros((0, h), dtype=np.int32),
            **self._snapshot(self.now),
        )
        z2 = np.zeros((0, k))
        return ServedBatch(
            context=ctx,
            arm=np.zeros(0, dtype=np.int8),
            items=np.zeros((0, k), dtype=np.int32),
            pscore=z2,
            clicks=z2.astype(bool),
            purchases=z2.astype(bool),
            revenue=np.zeros(0),
            latency_ms=np.zeros(0),
            error=np.zeros(0, dtype=bool),
            shadow_items=np.zeros((0, k), dtype=np.int32) if with_shadow else None,
            pscore_prefix=z2,
            session_id=np.zeros(0, dtype=np.int64),
            slate_index=np.zeros(0, dtype=np.int16),
            stock_at_serve=np.zeros((0, k), dtype=np.int64),
            shadow_latency_ms=np.zeros(0) if with_shadow else None,
            shadow_error=np.zeros(0, dtype=bool) if with_shadow else None,
            in_stock_at_serve=np.zeros((0, (self.n_items + 7) // 8), dtype=np.uint8),
        )
