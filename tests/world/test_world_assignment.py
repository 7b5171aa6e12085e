"""Sticky salted-hash arm assignment: shares within binomial bounds, monotone ramps, per-user stickiness."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.world import LiveWorld
from simulator.world.assignment import assign
from tests.world.helpers import random_ranker, tiny_config


@pytest.mark.parametrize("share", [0.01, 0.05, 0.2, 0.5])
def test_share_within_binomial_bounds(share: float) -> None:
    users = np.arange(200_000)
    n1 = int(assign(users, share, "salt-a").sum())
    sd = np.sqrt(len(users) * share * (1 - share))
    assert abs(n1 - len(users) * share) < 5 * sd


def test_assignment_is_sticky_monotone_and_salted() -> None:
    users = np.arange(50_000)
    small, large = assign(users, 0.05, "s"), assign(users, 0.25, "s")
    np.testing.assert_array_equal(small, assign(users, 0.05, "s"))  # sticky
    assert not (small & ~large).any()  # a ramp keeps every earlier candidate user
    other = assign(users, 0.25, "t")
    assert 0.1 < (other == large).mean() < 0.99 and not np.array_equal(other, large)
    assert assign(users, 0.0, "s").sum() == 0 and assign(users, 1.0, "s").all()


def test_serve_assigns_users_not_requests() -> None:
    world = LiveWorld(tiny_config(seed=9, n_users=2000, requests_per_hour=120.0))
    champion, candidate = random_ranker(world, 1), random_ranker(world, 2, "candidate")
    share = 0.3
    log = world.serve(champion, candidate, candidate_share=share, hours=24)
    later = world.serve(champion, candidate, candidate_share=share, hours=6)
    users = np.concatenate([log.context.user_id, later.context.user_id])
    arms = np.concatenate([log.arm, later.arm])
    per_user = {}
    for u, a in zip(users.tolist(), arms.tolist(), strict=True):
        per_user.setdefault(u, set()).add(a)
    assert all(len(a) == 1 for a in per_user.values())  # sticky across requests and calls
    n_users = len(per_user)
    n1 = sum(1 for a in per_user.values() if 1 in a)
    sd = np.sqrt(n_users * share * (1 - share))
    assert abs(n1 - n_users * share) < 5 * sd
