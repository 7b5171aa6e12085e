"""Replayed slates come back for the same requests, in any order and in any chunking; unknown ones fail."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stagegate.models.replay import ReplayRanker
from tests.core.test_event_store import fake_batch


def test_replay_returns_each_requests_own_slate_whatever_the_order() -> None:
    batch = fake_batch(n=50)
    slates = np.arange(50 * 10).reshape(50, 10)
    ranker = ReplayRanker("m/1", batch.context.request_id, slates)
    order = np.random.default_rng(0).permutation(50)[:20]
    ctx = dataclasses.replace(batch.context, request_id=batch.context.request_id[order])
    np.testing.assert_array_equal(ranker.recommend(ctx, 10), slates[order])
    np.testing.assert_array_equal(ranker.recommend(ctx, 3), slates[order, :3])


def test_replay_refuses_unknown_requests_duplicates_and_longer_slates() -> None:
    batch = fake_batch(n=5)
    ranker = ReplayRanker("m/1", batch.context.request_id, np.zeros((5, 10), dtype=int))
    unknown = dataclasses.replace(batch.context, request_id=batch.context.request_id + 10**9)
    with pytest.raises(KeyError, match="never ranked"):
        ranker.recommend(unknown, 10)
    with pytest.raises(ValueError, match="asked for 11"):
        ranker.recommend(batch.context, 11)
    with pytest.raises(ValueError, match="not unique"):
        ReplayRanker("m/1", np.array([1, 1]), np.zeros((2, 10)))
