"""Same seed, same calls: byte-identical logs. Forks with the same truth seed share their dice (CRN)."""

from __future__ import annotations

import dataclasses

import numpy as np

from simulator.world import LiveWorld
from tests.world.helpers import random_ranker, tiny_config


def _arrays(batch) -> dict[str, np.ndarray]:
    out = {f"ctx.{f.name}": getattr(batch.context, f.name) for f in dataclasses.fields(batch.context)}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if f.name != "context" and value is not None:
            out[f.name] = value
    return out


def _assert_identical(a, b) -> None:
    xa, xb = _arrays(a), _arrays(b)
    assert xa.keys() == xb.keys()
    for name in xa:
        np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)


def test_same_seed_gives_identical_logs() -> None:
    logs = []
    for _ in range(2):
        world = LiveWorld(tiny_config(seed=11))
        champion, candidate = random_ranker(world, 1), random_ranker(world, 2, "cand")
        first = world.log_history(champion, days=1)
        second = world.serve(champion, candidate, candidate_share=0.3, hours=5, shadow=candidate)
        logs.append((first, second, world.catalog_public()))
    _assert_identical(logs[0][0], logs[1][0])
    _assert_identical(logs[0][1], logs[1][1])
    assert logs[0][2].equals(logs[1][2])


def test_different_seeds_give_different_worlds() -> None:
    a, b = LiveWorld(tiny_config(seed=1)), LiveWorld(tiny_config(seed=2))
    assert not np.array_equal(a.catalog_public()["price"], b.catalog_public()["price"])
    la, lb = a.log_history(random_ranker(a), 1), b.log_history(random_ranker(b), 1)
    assert la.n != lb.n or not np.array_equal(la.items, lb.items)


def test_forks_with_one_truth_seed_share_random_numbers() -> None:
    world = LiveWorld(tiny_config(seed=5))
    ranker = random_ranker(world)
    world.log_history(ranker, 1)
    a, b = world.fork(truth_seed=3), world.fork(truth_seed=3)
    log_a = a.serve(ranker, hours=12)
    _assert_identical(log_a, b.serve(ranker, hours=12))
    log_c = world.fork(truth_seed=4).serve(ranker, hours=12)
    assert log_a.n != log_c.n or not np.array_equal(log_a.clicks, log_c.clicks)
    # the original world did not move
    assert world.now == 1.0


def test_fork_without_truth_seed_continues_the_same_future() -> None:
    world = LiveWorld(tiny_config(seed=6))
    ranker = random_ranker(world)
    twin = world.fork()
    _assert_identical(world.serve(ranker, hours=6), twin.serve(ranker, hours=6))
