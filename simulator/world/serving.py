"""Turning rankers into shown slates: one serving policy for every arm, shadow slates, failures.

Every arm is served the same way: Plackett–Luce over the arm's ranker's top ``explore_pool`` items at the
world's exploration temperature (deterministic top-k when the temperature is None), with the same common
random numbers for the Gumbel keys in both arms. Why one policy, not "stochastic champion, deterministic
candidate":

- the canary must measure the candidate as it will be served once it is champion; a deterministic canary arm
  measured the ranker without its exploration cost and showed a copy of the champion a few per cent off the
  champion itself (a false A/A: −3 % cold-start revenue in truth);
- with the same policy and the same uniforms, an exact copy of the champion in the candidate arm shows
  exactly the slates the champion would have shown: a true A/A, by construction;
- off-policy evaluation stays valid and gets more data: every logged slate, in either arm, carries its
  propensities (``pscore``, ``pscore_prefix``) under the policy that actually showed it, the stochastic
  logging policy the estimators require (reference §2.2, §6.4; IPS needs π_b > 0 wherever the target acts).

A slate that is malformed (wrong shape, unknown or unpublished items, duplicates) or a ranker that raises
counts as an error, and the champion's slate, served the same way with the same uniforms, is shown instead.
The shadow ranker's slate is its deterministic ``recommend`` (never shown, so it needs no propensities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simulator.world import plackett_luce as pl
from stagegate.logs import RequestContext

if TYPE_CHECKING:  # the world must not import the models package at run time (models import the world)
    from stagegate.models.base import Ranker


@dataclass(frozen=True)
class Slates:
    items: np.ndarray  # int32 (n, k)
    pscore: np.ndarray  # float64 (n, k)
    pscore_prefix: np.ndarray  # float64 (n, k)
    valid: np.ndarray  # bool (n,): the ranker's answer (its pool) was well-formed for this request


def valid_rows(items: object, n: int, k: int, published: np.ndarray) -> np.ndarray:
    """Bool (n,) rows that are well-formed slates of k distinct published items. Wrong shape: all False."""
    arr = np.asarray(items)
    if arr.shape != (n, k) or not np.issubdtype(arr.dtype, np.integer):
        return np.zeros(n, dtype=bool)
    in_range = ((arr >= 0) & (arr < len(published))).all(axis=1)
    safe = np.where(in_range[:, None], arr, 0)
    ok = in_range & published[safe].all(axis=1)
    srt = np.sort(safe, axis=1)
    return ok & ~(srt[:, 1:] == srt[:, :-1]).any(axis=1)


def ranked_pool(ranker: Ranker, ctx: RequestContext, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ranker's top-m items after its rules, and their scores (for the PL logits)."""
    with_scores = getattr(ranker, "recommend_with_scores", None)
    if callable(with_scores):
        items, scores = with_scores(ctx, m)
        return np.asarray(items), np.asarray(scores, dtype=float)
    items = np.asarray(ranker.recommend(ctx, m))
    scores = np.asarray(ranker.scores(ctx), dtype=float)
    safe = np.clip(items, 0, scores.shape[1] - 1)  # unknown ids make the row invalid, not the whole batch
    return items, np.take_along_axis(scores, safe, axis=1)


def serve_ranked(
    ranker: Ranker,
    ctx: RequestContext,
    k: int,
    temperature: float | None,
    pool_size: int,
    u_gumbel: np.ndarray | None,
    mc_samples: int,
    mc_rng: np.random.Generator | None,
    published: np.ndarray,
) -> Slates:
    """PL slates over the ranker's pool (deterministic top-k when ``temperature`` is None), for any arm.

    ``u_gumbel`` (n, pool) are the CRN uniforms for the sample; ``mc_rng`` None skips the Monte-Carlo
    marginals (the ground-truth runs do not need them) and logs the prefix-based first-order estimate.
    ``valid`` marks the requests whose pool is ``pool_size`` distinct published items (the caller falls
    back for the others); a ranker that raises propagates.
    """
    n = ctx.n
    if temperature is None:
        items = np.asarray(ranker.recommend(ctx, k))
        ones = np.ones((n, k))
        return Slates(items, ones, ones, valid_rows(items, n, k, published))
    pool, scores = ranked_pool(ranker, ctx, pool_size)
    valid = valid_rows(pool, n, pool_size, published)
    logits = pl.standardised_logits(scores, temperature)
    order = pl.sample(logits, k, u_gumbel[:, : pool.shape[1]])
    items = np.take_along_axis(pool, order, axis=1)
    prefix = pl.prefix_probabilities(logits, order)
    if mc_rng is not None:
        marg = pl.item_position_marginals(logits, order, mc_samples, mc_rng)
    else:
        marg = np.full((n, k), np.nan)
    return Slates(items.astype(np.int32), marg, prefix, valid)


def latency(median_ms: float, sigma: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Lognormal latencies with the given median (heavy right tail, as in real serving)."""
    return median_ms * np.exp(sigma * rng.standard_normal(n))


def median_latency(ranker: object, default: float) -> float:
    value = getattr(ranker, "latency_ms_median", None)
    return float(value) if value is not None else default


def error_rate(ranker: object, base: float) -> float:
    value = getattr(ranker, "error_rate", None)
    return float(min(1.0, base + (float(value) if value is not None else 0.0)))
