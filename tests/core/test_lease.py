"""The lease: one open promotion per model under a race, on SQLite and on the machine's PostgreSQL; a fresh
database created by many processes at once; heartbeats, take-over and dead owners."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, inspect

from stagegate.events.store import (
    LEASE_COLUMNS,
    EventStore,
    PromotionInProgress,
    aware,
    owner_alive,
    process_owner,
    promotions,
)
from stagegate.lease import LeaseKeeper

RACERS = 20


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("postgres_url")  # a fresh database: no tables yet


def _open(store: EventStore, model: str = "m") -> str:
    return store.open_promotion(model=model, version="2", policy_path="p", policy={}, champion_version="1")


def test_of_20_racing_promotes_on_a_fresh_database_exactly_one_proceeds(url: str) -> None:
    """20 threads, each with its own store (its own engine and connections), start together on a database
    without tables: schema creation must not fail, and exactly one promotion opens."""
    barrier = threading.Barrier(RACERS)
    opened: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def racer(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            store = EventStore(url, owner=f"racer-{i}")
            opened.append(_open(store))
        except PromotionInProgress as exc:
            refused.append(str(exc))
        except BaseException as exc:  # any other failure is a bug: collected and shown
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(opened) == 1 and len(refused) == RACERS - 1, (opened, refused)
    winner = opened[0]
    for message in refused:  # a clear message naming the open promotion, its owner and its lease
        assert f"promotion {winner} of 'm'" in message and "still in progress" in message
        assert "owner racer-" in message and "lease runs until" in message
    store = EventStore(url)
    assert [p["id"] for p in store.promotions("m", open_only=True)] == [winner]
    # another model is not blocked; once the open one ends, the model is free again
    _open(store, model="other")
    store.transition(winner, "aborted", "test done")
    assert _open(store) != winner


def _create_schema_at(url: str, barrier: Any, failures: Any) -> None:
    try:
        barrier.wait(timeout=60)
        EventStore(url).engine.dispose()
    except BaseException as exc:
        failures.put(repr(exc))


def test_schema_creation_does_not_race_across_processes(url: str) -> None:
    """Separate processes start together on a fresh database (`stagegate up` and a first `stagegate
    promote`): every one creates or finds the schema, none fails. Forked, so they start in milliseconds."""
    ctx = multiprocessing.get_context("fork")
    barrier, failures = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_create_schema_at, args=(url, barrier, failures)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    errors = [failures.get(timeout=5) for _ in range(failures.qsize())] if not failures.empty() else []
    assert [p.exitcode for p in procs] == [0] * len(procs) and not errors, errors


def test_heartbeat_renews_only_the_owners_open_lease(url: str) -> None:
    owner, other = EventStore(url, owner="me"), EventStore(url, owner="someone-else")
    pid = owner.open_promotion(
        model="m", version="2", policy_path="p", policy={}, champion_version="1", lease_for=5
    )
    first = aware(owner.promotion(pid)["lease_expires_at"])
    time.sleep(0.02)
    assert owner.heartbeat(pid, lease_for=60)
    renewed = aware(owner.promotion(pid)["lease_expires_at"])
    assert renewed - first > timedelta(seconds=50)
    assert not other.heartbeat(pid)  # not its lease
    owner.transition(pid, "canary", "step 1", stage="canary")  # a transition renews too
    assert aware(owner.promotion(pid)["heartbeat_at"]) > aware(owner.promotion(pid)["started_at"])
    owner.transition(pid, "aborted", "done")
    assert not owner.heartbeat(pid)  # an ended promotion has no lease to renew


def test_lease_keeper_beats_in_the_background_and_stops(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    pid = store.open_promotion(
        model="m", version="2", policy_path="p", policy={}, champion_version="1", lease_for=1
    )
    start = aware(store.promotion(pid)["lease_expires_at"])
    with LeaseKeeper(store, pid, interval=0.05) as keeper:
        time.sleep(0.4)
    assert keeper.beats >= 3 and not keeper.lost
    assert aware(store.promotion(pid)["lease_expires_at"]) > start
    store.transition(pid, "aborted", "done")
    keeper = LeaseKeeper(store, pid, interval=0.02).start()
    time.sleep(0.2)
    keeper.stop()
    assert keeper.lost and keeper.beats == 0  # it noticed the promotion ended


def test_take_over_is_a_compare_and_swap_on_the_lease_seen(url: str) -> None:
    dead = EventStore(url, owner="crashed")
    pid = dead.open_promotion(
        model="m", version="2", policy_path="p", policy={}, champion_version="1", lease_for=-1
    )
    a, b = EventStore(url, owner="reconciler-a"), EventStore(url, owner="reconciler-b")
    [row] = a.expired_leases("m")
    assert a.take_over(row)
    assert not b.take_over(row)  # the lease it saw is gone: only one reconciler proceeds
    assert a.promotion(pid)["owner"] == "reconciler-a"
    assert a.expired_leases("m") == []  # a fresh lease now


def test_a_dead_owner_process_of_this_host_counts_as_expired(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = process_owner().rsplit(":", 2)[0]
    dead_owner = f"{host}:{gone.pid}:1"
    assert owner_alive(dead_owner) is False
    assert owner_alive(process_owner()) is True
    assert owner_alive("another-host:1:1") is None  # cannot tell: wait for the lease
    url = f"sqlite:///{tmp_path / 'events.db'}"
    pid = EventStore(url, owner=dead_owner).open_promotion(
        model="m", version="2", policy_path="p", policy={}, champion_version="1", lease_for=3600
    )
    assert [r["id"] for r in EventStore(url).expired_leases()] == [pid]


def test_an_older_ledger_gains_the_lease_columns_and_its_open_rows_count_as_expired(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    old = MetaData()  # the promotions table as it was before leases
    Table(
        "promotions",
        old,
        *(c._copy() for c in promotions.c if c.name not in LEASE_COLUMNS),
    )
    engine = create_engine(url)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            old.tables["promotions"].insert().values(id="old-1", model="m", version="2", state="canary")
        )
    store = EventStore(url)
    assert {"owner", "heartbeat_at", "lease_expires_at"} <= {
        c["name"] for c in inspect(store.engine).get_columns("promotions")
    }
    assert [r["id"] for r in store.expired_leases()] == ["old-1"]
    with pytest.raises(PromotionInProgress, match=r"promotion old-1 of 'm'.*lease has expired"):
        _open(store)


def test_an_older_ledger_with_two_open_promotions_of_a_model_says_what_to_do(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    old = MetaData()
    Table("promotions", old, *(c._copy() for c in promotions.c if c.name not in LEASE_COLUMNS))
    engine = create_engine(url)
    old.create_all(engine)
    with engine.begin() as conn:  # what the check-then-insert race left behind
        for pid in ("race-a", "race-b"):
            conn.execute(
                old.tables["promotions"].insert().values(id=pid, model="m", version="2", state="canary")
            )
    with pytest.raises(RuntimeError, match=r"more than one open promotion.*race-a.*race-b.*'aborted'"):
        EventStore(url)
