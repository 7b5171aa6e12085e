"""Stochastic serving by Plackett–Luce over a ranker's scores, with the propensities OPE needs.

Sampling uses the Gumbel-top-k trick (a PL sample without replacement is the top-k of logits + Gumbel noise;
Kool, van Hoof & Welling, ICML 2019). Logged per request (reference §2.2, §6.4):
- prefix probabilities P(a(1..j)) = Π_t exp(l_{a_t}) / Σ_{not yet chosen} exp(l): exact, for RIPS/SIPS;
- item-position marginals P(item a_j at position j): Monte-Carlo over fresh samples, with the realised slate
  counted as one of them, which keeps the estimate unbiased and never zero (for IIPS / PBM-IPS).
"""

from __future__ import annotations

import numpy as np

_CHUNK_ELEMS = 2_000_000  # bound the (n, S, M) Monte-Carlo tensor to keep memory and cache use small


def standardised_logits(pool_scores: np.ndarray, temperature: float) -> np.ndarray:
    """Scores of the pool standardised per request and divided by the temperature.

    Standardising makes the temperature mean the same thing for every ranker, whatever its score scale.
    """
    s = np.where(np.isfinite(pool_scores), pool_scores, np.nan)
    mu = np.nanmean(s, axis=1, keepdims=True)
    sd = np.nanstd(s, axis=1, keepdims=True)
    z = (s - mu) / np.where(sd > 1e-9, sd, 1.0)
    return np.where(np.isnan(z), -np.inf, z / temperature)


def gumbel_from_uniform(u: np.ndarray) -> np.ndarray:
    return -np.log(-np.log(np.clip(u, 1e-300, 1.0 - 1e-16)))


def topk_order(keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of the last axis, largest first."""
    part = np.argpartition(-keys, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(keys, part, axis=-1)
    return np.take_along_axis(part, np.argsort(-vals, axis=-1, kind="stable"), axis=-1)


def sample(logits: np.ndarray, k: int, u: np.ndarray) -> np.ndarray:
    """One PL slate per request: (n, k) indices into the pool, from uniforms ``u`` (n, M)."""
    return topk_order(logits + gumbel_from_uniform(u), k)


def prefix_probabilities(logits: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(n, k) exact probabilities of each prefix a(1..j) of the sampled slates under PL(logits)."""
    m = np.max(logits, axis=1, keepdims=True)
    w = np.exp(logits - m)  # -inf logits give weight 0
    chosen = np.take_along_axis(w, order, axis=1)
    denom = w.sum(axis=1, keepdims=True) - np.concatenate(
        [np.zeros((len(w), 1)), np.cumsum(chosen, axis=1)[:, :-1]], axis=1
    )
    step = chosen / np.maximum(denom, 1e-300)
    return np.cumprod(step, axis=1)


def item_position_marginals(
    logits: np.ndarray, order: np.ndarray, samples: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, k) Monte-Carlo estimates of P(pool item order[:, j] lands at position j), realised slate included."""
    n, m = logits.shape
    k = order.shape[1]
    hits = np.zeros((n, k))
    rows = max(1, _CHUNK_ELEMS // max(1, samples * m))
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        g = rng.gumbel(size=(hi - lo, samples, m))
        draws = topk_order(logits[lo:hi, None, :] + g, k)  # (c, S, k)
        hits[lo:hi] = (draws == order[lo:hi, None, :]).sum(axis=1)
    return (hits + 1.0) / (samples + 1.0)
