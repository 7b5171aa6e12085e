"""Stochastic serving by Plackett–Luce over a ranker's scores, with the propensities OPE needs.

Sampling uses the Gumbel-top-k trick (a PL sample without replacement is the top-k of logits + Gumbel noise;
Kool, van Hoof & Welling, ICML 2019). Logged per request (reference §2.2, §6.4):
- prefix probabilities P(a(1..j)) = Π_t exp(l_{a_t}) / Σ_{not yet chosen} exp(l): exact, for RIPS/SIPS;
- item-position marginals P(item a_j at position j): Monte-Carlo over fresh samples, with the realised slate
  counted as one of them, which keeps the estimate unbiased and never zero (for IIPS / PBM-IPS).
"""

from __future__ import annotations

import numpy as np

from stagegate.ranking import top_k

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
    """Indices of the k largest entries of the last axis, largest first, ties (−inf logits) by index."""
    return top_k(keys, k)


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
    """(n, k) Monte-Carlo estimates of P(pool item order[:, j] lands at position j), Rao–Blackwellised.

    For each sampled slate, the probability that item i is drawn at position j *given the sampled prefix*
    is w_i / (W − w(prefix)) (zero if i is already in the prefix); averaging that over samples is unbiased
    and has far lower variance than counting hits. The realised slate is one of the samples, so the
    estimate is never zero for what was actually shown.
    """
    n, m = logits.shape
    k = order.shape[1]
    w = np.exp(logits - np.max(logits, axis=1, keepdims=True))
    total = w.sum(axis=1)
    w_target = np.take_along_axis(w, order, axis=1)  # (n, k) weight of the realised item at each position
    acc = _conditional(w, total, w_target, order[:, None, :], order)[:, 0, :]  # the realised slate itself
    rows = max(1, _CHUNK_ELEMS // max(1, samples * m))
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        # float64: logarithms differ in their last bits between instruction sets (AVX2, AVX-512); in float32
        # that moves a key by ~1e-7 and reorders close keys, in float64 by ~1e-16
        u = rng.random((hi - lo, samples, m))
        keys = logits[lo:hi, None, :] + gumbel_from_uniform(u)
        draws = topk_order(keys, k)  # (c, S, k)
        acc[lo:hi] += _conditional(w[lo:hi], total[lo:hi], w_target[lo:hi], draws, order[lo:hi]).sum(axis=1)
    return acc / (samples + 1.0)


def _conditional(
    w: np.ndarray, total: np.ndarray, w_target: np.ndarray, draws: np.ndarray, order: np.ndarray
) -> np.ndarray:
    """(c, S, k): P(order[:, j] drawn at position j | the prefix draws[:, s, :j])."""
    c, s, k = draws.shape
    dw = np.take_along_axis(w[:, None, :], draws, axis=2)  # (c, S, k)
    removed = np.concatenate([np.zeros((c, s, 1)), np.cumsum(dw, axis=2)[:, :, :-1]], axis=2)
    # is the target of position j among the first j drawn items?
    same = draws[:, :, None, :] == order[:, None, :, None]  # (c, S, j, t): draw t equals target j
    before = np.tril(np.ones((k, k), dtype=bool), -1)[None, None]  # t < j
    taken = (same & before).any(axis=3)
    denom = np.maximum(total[:, None, None] - removed, 1e-300)
    return np.where(taken, 0.0, w_target[:, None, :] / denom)
