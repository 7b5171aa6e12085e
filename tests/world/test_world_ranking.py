"""The one ranking helper: best first, equal scores by lower index, whatever the array's shape."""

from __future__ import annotations

import numpy as np
import pytest

from stagegate.ranking import top_k


def _reference(scores: np.ndarray, k: int) -> np.ndarray:
    """The specified order, by a full lexicographic sort: score descending, then index ascending."""
    s = np.where(np.isnan(scores), -np.inf, scores).reshape(-1, scores.shape[-1])
    idx = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    order = np.lexsort((idx, -s), axis=1)[:, :k]
    return order.reshape(*scores.shape[:-1], -1)


def test_ties_go_to_the_lower_index() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(top_k(scores, 3), [[1, 2, 4], [0, 1, 2]])
    # the tie straddles the cut: of the three 3.0s only the two lowest indices fit in k = 2
    np.testing.assert_array_equal(top_k(scores, 2), [[1, 2], [0, 1]])


def test_minus_inf_and_nan_rank_last_and_tie_by_index() -> None:
    scores = np.array([[-np.inf, np.nan, 0.5, -np.inf, 0.5]])
    np.testing.assert_array_equal(top_k(scores, 5), [[2, 4, 0, 1, 3]])


@pytest.mark.parametrize("k", [1, 7, 60, 300])
def test_matches_the_lexicographic_order_on_heavily_tied_scores(k: int) -> None:
    rng = np.random.default_rng(5)
    scores = np.round(rng.standard_normal((400, 300)), 1)  # ~60 distinct values: ties everywhere
    scores[:, 250:] = -np.inf  # unservable items
    scores[::7, :50] = np.nan
    np.testing.assert_array_equal(top_k(scores, k), _reference(scores, k))


def test_leading_dimensions_and_k_larger_than_the_axis() -> None:
    rng = np.random.default_rng(6)
    keys = np.floor(rng.random((5, 8, 20)) * 4)  # Monte-Carlo shaped (requests, samples, pool)
    np.testing.assert_array_equal(top_k(keys, 6), _reference(keys, 6))
    assert top_k(keys, 50).shape == (5, 8, 20)


def test_the_result_does_not_depend_on_how_ties_were_laid_out_in_memory() -> None:
    """The same scores as a Fortran-ordered copy and as a slice of a bigger array rank the same."""
    rng = np.random.default_rng(7)
    big = np.round(rng.standard_normal((100, 400)), 1)
    scores = big[:, :200]
    expected = _reference(scores, 10)
    for view in (scores, np.asfortranarray(scores), scores.copy()):
        np.testing.assert_array_equal(top_k(view, 10), expected)
