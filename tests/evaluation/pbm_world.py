"""A tiny logging world with known truth for the OPE tests.

Six items, slates of three, two user types (user_segment 0/1). Clicks follow a position-based model,
P(click at k) = θ_k γ_{type, item} m_u, with a per-user multiplier m_u ~ U(0.5, 1.5) (mean 1) so that a
user's requests are correlated; a click converts with probability c_item at price p_item. The logger is a
Plackett–Luce ranking over per-type scores, its exact item-position marginals are logged as pscore. The
value of any deterministic target slate e is known exactly: Σ_k θ_k γ_{type, e_k} (x c p for revenue),
averaged over the two equally likely types.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stagegate.evaluation.plackett_luce import exact_marginals, sample_slates
from stagegate.logs import ServedBatch

from .synth import batch, context

N_ITEMS, K = 6, 3
THETA = np.array([1.0, 0.6, 0.35])
GAMMA = np.array([[0.50, 0.30, 0.22, 0.15, 0.10, 0.06], [0.08, 0.12, 0.20, 0.28, 0.35, 0.45]])
CONVERT = np.array([0.30, 0.10, 0.25, 0.20, 0.15, 0.35])
PRICE = np.array([10.0, 25.0, 8.0, 40.0, 15.0, 5.0])
LOGGER_SCORES = np.array([[1.2, 0.8, 0.4, 0.0, -0.3, -0.6], [-0.5, -0.2, 0.1, 0.5, 0.8, 1.0]])
TARGET = np.array([[1, 3, 0], [2, 5, 3]])  # a deterministic slate per type, far from the logger's favourite
MARGINALS = np.stack([exact_marginals(s, K) for s in LOGGER_SCORES])  # (type, item, position)


def true_value(target: np.ndarray = TARGET, reward: str = "click") -> float:
    """Exact expected reward per request of the per-type slates ``target`` (equal type shares)."""
    gain = GAMMA if reward == "click" else GAMMA * CONVERT * PRICE
    per_type = (THETA[None, :] * np.take_along_axis(gain, target, axis=1)).sum(axis=1)
    return float(per_type.mean())


def simulate(rng: np.random.Generator, n_users: int = 500, requests_per_user: int = 4) -> ServedBatch:
    """One logged data set drawn from the Plackett–Luce logger."""
    n = n_users * requests_per_user
    user_type = rng.integers(0, 2, n_users)
    mult = rng.uniform(0.5, 1.5, n_users)
    user = np.repeat(np.arange(n_users), requests_per_user)
    seg = user_type[user]
    slates = sample_slates(LOGGER_SCORES[seg], K, rng)
    pscore = MARGINALS[seg[:, None], slates, np.arange(K)[None, :]]
    p_click = THETA[None, :] * GAMMA[seg[:, None], slates] * mult[user][:, None]
    clicks = rng.random((n, K)) < p_click
    purchases = clicks & (rng.random((n, K)) < CONVERT[slates])
    revenue = (purchases * PRICE[slates]).sum(axis=1)
    ctx = context(n, N_ITEMS, user_id=user, user_segment=seg)
    served = batch(ctx, slates, clicks=clicks, purchases=purchases, pscore=pscore, revenue=revenue)
    return replace(served, pscore_prefix=prefix_probabilities(LOGGER_SCORES[seg], slates))


def prefix_probabilities(scores: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """(n, K) exact Plackett–Luce probabilities of each logged slate's prefix a(1..k)."""
    w = np.exp(scores)
    chosen = np.take_along_axis(w, slates, axis=1)
    remaining = w.sum(axis=1, keepdims=True) - np.concatenate(
        [np.zeros((len(w), 1)), np.cumsum(chosen, axis=1)[:, :-1]], axis=1
    )
    return np.cumprod(chosen / remaining, axis=1)


def logger_marginals_of(log: ServedBatch) -> np.ndarray:
    """(n, K, K): π_b(logged item at every position), from the exact per-type marginals."""
    seg = np.asarray(log.context.user_segment, dtype=np.int64)
    return MARGINALS[seg[:, None], np.asarray(log.items, dtype=np.int64)]
