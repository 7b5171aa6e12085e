"""Plackett–Luce slates: sampling by the Gumbel top-k trick and item-position marginals.

A Plackett–Luce logger with scores s and temperature T draws the slate position by position, each time
picking among the remaining items with probability ∝ exp(s_i / T). Adding i.i.d. Gumbel(0, 1) noise to
s / T and taking the top-k gives exactly that distribution (Yellott 1977; Kool et al. 2019). The
item-position marginals π(a at k | x) that OPE needs are computed exactly by enumerating ordered
k-subsets (few items) or estimated by Monte Carlo (shared/reference/recsys_simulation.md §2.2, §6.4).
"""

from __future__ import annotations

import itertools

import numpy as np

from stagegate.ranking import top_k


def sample_slates(
    scores: np.ndarray, k: int, rng: np.random.Generator, temperature: float = 1.0
) -> np.ndarray:
    """``(n, k)`` slates drawn from Plackett–Luce(scores / temperature), one per row of ``scores``."""
    z = np.asarray(scores, dtype=float) / temperature + rng.gumbel(size=np.shape(scores))
    return top_k(z, k)  # a deterministic order if Gumbel draws ever tie (float64 makes it rare)


def exact_marginals(scores: np.ndarray, k: int, temperature: float = 1.0) -> np.ndarray:
    """``(n_items, k)`` exact item-position marginals of one Plackett–Luce ranking.

    P(slate = (a_1..a_k)) = Π_j exp(s_{a_j}/T) / Σ_{i ∉ {a_1..a_{j−1}}} exp(s_i/T); the marginal
    π(a at j) sums it over ordered k-subsets. Cost n!/(n−k)!: for small catalogues only (tests).
    """
    s = np.asarray(scores, dtype=float) / temperature
    w = np.exp(s - s.max())
    n = len(w)
    perms = np.array(list(itertools.permutations(range(n), k)))  # (P, k)
    weights = w[perms]
    remaining = w.sum() - np.concatenate([np.zeros((len(perms), 1)), np.cumsum(weights, axis=1)[:, :-1]], 1)
    prob = np.prod(weights / remaining, axis=1)
    out = np.zeros((n, k))
    for j in range(k):
        np.add.at(out[:, j], perms[:, j], prob)
    return out


def mc_marginals(
    scores: np.ndarray,
    items: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    n_samples: int = 1000,
) -> np.ndarray:
    """Monte-Carlo item-position marginals of the logged items: ``(n, k, k)``.

    ``out[i, j, p]`` estimates π_b(items[i, j] at position p | x_i) for a Plackett–Luce logger with
    per-request ``scores`` ``(n, n_items)``, from ``n_samples`` Gumbel top-k draws per request. This is the
    ``logger_marginals`` input of :func:`stagegate.evaluation.ope.pbm_ips`.
    """
    items = np.asarray(items, dtype=np.int64)
    n, k = items.shape
    out = np.zeros((n, k, k))
    for _ in range(n_samples):
        slate = sample_slates(scores, k, rng, temperature)  # (n, k)
        out += items[:, :, None] == slate[:, None, :]
    return out / n_samples
