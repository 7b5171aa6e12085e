"""Rollback and reconcile against the observed faults: a ledger that is down or hangs mid-canary, a
process killed mid-canary or right after the final rollout split, a truncated split file, a registry
that does not take a write the first time or is down. The ledger is a real SQLite file and a real
PostgreSQL database, the split the real file-backed controller; the registry is an in-memory stand-in
with MLflow's alias and tag semantics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from simulator.traffic import FileTrafficController
from stagegate import rollback
from stagegate.events.store import EventStore, promotions
from stagegate.reconcile import reconcile
from stagegate.registry import RegistryError, VersionInfo
from stagegate.rollback import RollbackIncomplete, RollbackTarget, roll_back_promotion
from stagegate.traffic import Split

MODEL = "ranker"
CHAMPION, CANDIDATE = "1", "2"


@dataclass
class FakeRegistry:
    aliases: dict[str, str] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=lambda: {CHAMPION: {}, CANDIDATE: {}})
    calls: list[str] = field(default_factory=list)
    ignore_first: set[str] = field(default_factory=set)  # operations silently dropped once

    def _info(self, version: str) -> VersionInfo:
        aliases = [a for a, v in self.aliases.items() if v == version]
        return VersionInfo(MODEL, version, "src", None, dict(self.tags[version]), aliases)

    def get_version(self, model: str, version: str) -> VersionInfo:
        if version not in self.tags:
            raise RegistryError(f"no version {version}")
        return self._info(version)

    def get_alias(self, model: str, alias: str) -> VersionInfo | None:
        return self._info(self.aliases[alias]) if alias in self.aliases else None

    def _dropped(self, op: str) -> bool:
        self.calls.append(op)
        if op in self.ignore_first:
            self.ignore_first.discard(op)
            return True
        return False

    def set_alias(self, model: str, alias: str, version: str) -> None:
        if not self._dropped(f"set_alias {alias}"):
            self.aliases[alias] = version

    def delete_alias(self, model: str, alias: str) -> None:
        if not self._dropped(f"delete_alias {alias}"):
            self.aliases.pop(alias, None)

    def tag(self, model: str, version: str, **tags: str) -> None:
        if not self._dropped("tag"):
            self.tags[version].update({f"stagegate.{k}": str(v) for k, v in tags.items()})


class DeadLedger:
    """The events database cut: every call fails the way SQLAlchemy does (or hangs, with ``hang``)."""

    def __init__(self, hang: float = 0.0) -> None:
        self.hang = hang
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.hang:
                time.sleep(self.hang)
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

        return call


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollback, "RETRY_DELAY", 0.01)


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> SimpleNamespace:
    """Mid-canary: the candidate on 20% of users, its alias set, its promotion open in the ledger."""
    if request.param == "sqlite":
        events = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    else:
        events = EventStore(request.getfixturevalue("postgres_url"))
    traffic = FileTrafficController(tmp_path / "traffic.json")
    traffic.set_split(Split(champion=CHAMPION, candidate=CANDIDATE, candidate_weight=0.2))
    registry = FakeRegistry(aliases={"champion": CHAMPION, "candidate": CANDIDATE})
    return SimpleNamespace(events=events, traffic=traffic, registry=registry, tmp=tmp_path)


def open_canary(
    world: SimpleNamespace, *, expired: bool = False, owner: str | None = None, **policy: Any
) -> str:
    """A promotion at canary step 1; ``expired``: its owner stopped renewing long enough ago."""
    store = EventStore(world.events.url, owner=owner) if owner else world.events
    pid = store.open_promotion(
        model=MODEL, version=CANDIDATE, policy_path="p.yaml", policy=policy, champion_version=CHAMPION
    )
    store.transition(pid, "canary", "canary step 1: 20% of users", stage="canary")
    if expired:
        lapse(world.events, pid)
    return pid


def lapse(store: EventStore, pid: str) -> None:
    """Time passes without a heartbeat: the lease ran out a minute ago."""
    with store.engine.begin() as conn:
        conn.execute(
            update(promotions)
            .where(promotions.c.id == pid)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )


def assert_champion_serves(world: SimpleNamespace, outcome: str = "rolled_back") -> None:
    split = world.traffic.get_split()
    assert split.champion == CHAMPION and split.is_all_champion and not split.shadow
    assert world.registry.aliases.get("champion") == CHAMPION
    assert "candidate" not in world.registry.aliases
    assert world.registry.tags[CANDIDATE]["stagegate.status"] == outcome


@pytest.mark.parametrize("moved_traffic", [True, False], ids=["own-process", "from-outside"])
def test_rollback_moves_traffic_before_reading_or_writing_anything(
    world: SimpleNamespace, moved_traffic: bool
) -> None:
    """The promotion's own process (the flow, its monitor) writes the split before anything else; a
    rollback from outside (reconcile, abort, a script) reads the ledger once first (a promotion that has
    ended is not touched), then writes the split before anything else."""
    pid = open_canary(world)
    order: list[str] = []

    class Spy:
        def __init__(self, inner: Any, name: str) -> None:
            self.inner, self.name = inner, name

        def __getattr__(self, attr: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                order.append(f"{self.name}.{attr}")
                return getattr(self.inner, attr)(*args, **kwargs)

            return call

    report = roll_back_promotion(
        RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
        traffic=Spy(world.traffic, "traffic"),
        registry=Spy(world.registry, "registry"),
        events=Spy(world.events, "events"),
        stage="canary",
        reason="revenue fell",
        outcome="rolled_back",
        moved_traffic=moved_traffic,
    )
    if not moved_traffic:
        assert order.pop(0) == "events.promotion"
    assert order[0] == "traffic.set_split"
    assert order.index("traffic.set_split") < order.index("events.transition")
    assert order.index("traffic.get_split") > order.index("registry.tag")  # read back only to verify
    assert report.verified and report.ledger_closed and report.rounds == 1
    assert_champion_serves(world)
    assert [t["to_state"] for t in world.events.transitions(pid)][-2:] == [
        "rolled_back_pending",
        "rolled_back",
    ]


def test_ledger_cut_mid_canary_still_returns_traffic_then_reconcile_closes_it(world: SimpleNamespace) -> None:
    """The observed fault: the ledger write before the traffic reset failed, the candidate kept 20%."""
    pid = open_canary(world)
    started = time.monotonic()
    report = roll_back_promotion(
        RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
        traffic=world.traffic,
        registry=world.registry,
        events=DeadLedger(),
        stage="canary",
        reason="the events database went away",
        outcome="rolled_back",
    )
    assert time.monotonic() - started < 5
    assert report.verified and not report.ledger_closed
    assert any("ledger cannot be written" in p for p in report.problems)
    assert_champion_serves(world)
    assert world.events.promotion(pid)["state"] == "canary"  # the ledger never heard of it
    # The store is back and the lease has lapsed (its process stopped renewing): reconcile closes it.
    lapse(world.events, pid)
    rt = SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry)
    [done] = reconcile(rt)
    assert done.done and done.outcome == "rolled_back", done.line()
    row = world.events.promotion(pid)
    assert row["state"] == "rolled_back" and row["reason"].startswith("canary: reconciled: lease expired at ")
    assert reconcile(rt) == []  # idempotent


def test_a_hanging_ledger_costs_bounded_time(world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollback, "CALL_TIMEOUT", 0.2)
    pid = open_canary(world)
    ledger = DeadLedger(hang=30)
    started = time.monotonic()
    report = roll_back_promotion(
        RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
        traffic=world.traffic,
        registry=world.registry,
        events=ledger,
        stage="canary",
        reason="ledger hangs",
        outcome="rolled_back",
    )
    elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed  # 3 tries of 0.2 s, not 3 x 30 s
    assert any("did not answer within" in p for p in report.problems)
    assert report.verified and not report.ledger_closed
    assert_champion_serves(world)


def test_killed_mid_canary_is_rolled_back_by_reconcile_from_the_ledger_alone(world: SimpleNamespace) -> None:
    """SIGKILL of `stagegate promote` mid-canary: the lease lapses and nothing else is known."""
    pid = open_canary(world, expired=True, owner="somehost:4242:1")
    rt = SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry)
    [done] = reconcile(rt, MODEL)
    assert done.done and done.from_state == "canary" and done.outcome == "rolled_back"
    assert_champion_serves(world)
    row = world.events.promotion(pid)
    assert row["state"] == "rolled_back"
    assert "reconciled: lease expired at" in row["reason"] and "somehost:4242:1" in row["reason"]
    assert [t["to_state"] for t in world.events.transitions(pid)][-2:] == [
        "rolled_back_pending",
        "rolled_back",
    ]
    assert reconcile(rt, MODEL) == []
    world.events.open_promotion(  # the model is free again
        model=MODEL, version="3", policy_path="p", policy={}, champion_version=CHAMPION
    )


def test_killed_after_the_final_rollout_split_is_rolled_back(world: SimpleNamespace) -> None:
    """SIGKILL right after the rollout's last split: the new version served 100%, `promoted` unrecorded."""
    pid = open_canary(world)
    world.events.transition(pid, "rollout", "entering rollout", stage="rollout")
    lapse(world.events, pid)
    world.registry.aliases.update(champion=CANDIDATE, previous=CHAMPION)
    world.registry.aliases.pop("candidate")
    world.traffic.set_split(Split(champion=CANDIDATE))
    [done] = reconcile(SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry))
    assert done.done and done.outcome == "rolled_back"
    assert_champion_serves(world)
    assert "previous" not in world.registry.aliases


def test_reconcile_leaves_a_live_lease_alone(world: SimpleNamespace) -> None:
    pid = open_canary(world)  # this process, lease valid for two minutes
    rt = SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry)
    assert reconcile(rt) == []
    assert world.events.promotion(pid)["state"] == "canary"
    assert world.traffic.get_split().candidate_weight == 0.2


def test_reconcile_finishes_a_recorded_pending_outcome_even_under_on_crash_resume(
    world: SimpleNamespace,
) -> None:
    pid = world.events.open_promotion(
        model=MODEL,
        version=CANDIDATE,
        policy_path="p",
        policy={"on_crash": "resume"},
        champion_version=CHAMPION,
    )
    world.events.transition(pid, "shadow", "entering shadow", stage="shadow")
    world.events.transition(pid, "rejected_pending", "shadow: latency", stage="shadow")
    lapse(world.events, pid)
    rt = SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry)
    [done] = reconcile(rt, resume=lambda _: pytest.fail("a rollback under way is finished, not resumed"))
    assert done.done and done.outcome == "rejected"
    row = world.events.promotion(pid)
    assert (
        row["state"] == "rejected"
        and "on_crash: resume, but a rollback was already under way" in row["reason"]
    )
    assert_champion_serves(world, outcome="rejected")


def _with_checkpoint(world: SimpleNamespace, pid: str) -> None:
    from flows.stages.checkpoint import to_checkpoint
    from flows.stages.runner import LoopState

    world.events.save_checkpoint(pid, to_checkpoint("canary", LoopState(step_start=datetime.now(UTC))))
    lapse(world.events, pid)


def test_on_crash_resume_resumes_a_crashed_canary_from_its_checkpoint(world: SimpleNamespace) -> None:
    pid = open_canary(world, on_crash="resume")
    _with_checkpoint(world, pid)
    rt = SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry)
    asked: list[str] = []

    def resume(promotion_id: str) -> str:
        asked.append(promotion_id)
        return "promoted"

    [done] = reconcile(rt, resume=resume)
    assert asked == [pid] and done.resumed and done.done and done.outcome == "promoted"
    assert "resumed from the ledger" in done.line()
    assert world.traffic.get_split().candidate_weight == 0.2  # reconcile left traffic to the resumed run


@pytest.mark.parametrize("how", ["no resumer", "resume fails", "no checkpoint"])
def test_on_crash_resume_that_cannot_resume_rolls_back(world: SimpleNamespace, how: str) -> None:
    pid = open_canary(world, on_crash="resume", expired=True)
    if how != "no checkpoint":
        _with_checkpoint(world, pid)

    def broken(promotion_id: str) -> str:
        raise RuntimeError("the metric store is down")

    rt = SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry)
    resume = {"no resumer": None, "resume fails": broken, "no checkpoint": broken}[how]
    [done] = reconcile(rt, resume=resume)
    assert done.done and not done.resumed and done.outcome == "rolled_back"
    reason = world.events.promotion(pid)["reason"]
    expected = {
        "no resumer": "cannot resume (the commands can)",
        "resume fails": "resuming it failed (RuntimeError('the metric store is down'))",
        "no checkpoint": "no checkpoint of a traffic stage",
    }[how]
    assert "on_crash: resume, but " in reason and expected in reason, reason
    assert_champion_serves(world)


def test_truncated_split_file_does_not_stop_the_rollback(world: SimpleNamespace) -> None:
    """The observed fault: roll_back read the split first, failed 4 times, stayed rolled_back_pending."""
    pid = open_canary(world)
    text = world.traffic.path.read_text()
    world.traffic.path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError):
        world.traffic.get_split()
    report = roll_back_promotion(
        RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
        traffic=world.traffic,
        registry=world.registry,
        events=world.events,
        stage="canary",
        reason="split file truncated",
        outcome="rolled_back",
    )
    assert report.verified and report.ledger_closed and report.rounds == 1
    assert_champion_serves(world)
    assert world.events.promotion(pid)["state"] == "rolled_back"


def test_a_failed_verification_goes_round_again(world: SimpleNamespace) -> None:
    pid = open_canary(world)
    world.registry.ignore_first = {"delete_alias candidate"}  # the first delete "succeeds" but does nothing
    report = roll_back_promotion(
        RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
        traffic=world.traffic,
        registry=world.registry,
        events=world.events,
        stage="canary",
        reason="flaky registry",
        outcome="rolled_back",
    )
    assert report.rounds == 2 and report.verified and report.ledger_closed
    assert any("alias 'candidate' still on v2" in p for p in report.problems)
    assert world.registry.calls.count("delete_alias candidate") == 2
    assert_champion_serves(world)


def test_a_rollback_that_cannot_be_verified_keeps_the_ledger_pending(world: SimpleNamespace) -> None:
    pid = open_canary(world)

    class StuckTraffic:  # the router takes the write and keeps serving the candidate
        def set_split(self, split: Split) -> None:
            pass

        def get_split(self) -> Split:
            return Split(champion=CHAMPION, candidate=CANDIDATE, candidate_weight=0.2)

    with pytest.raises(RollbackIncomplete, match="not verified after 3 rounds") as caught:
        roll_back_promotion(
            RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
            traffic=StuckTraffic(),
            registry=world.registry,
            events=world.events,
            stage="canary",
            reason="router stuck",
            outcome="rolled_back",
        )
    assert not caught.value.report.traffic_ok and caught.value.report.registry_ok
    assert world.events.promotion(pid)["state"] == "rolled_back_pending"  # not closed on a lie


def test_a_second_rollback_of_a_closed_promotion_changes_nothing_in_the_ledger(
    world: SimpleNamespace,
) -> None:
    """The guardrail monitor rolled back while the flow waited; the flow's own rollback finds it closed."""
    pid = open_canary(world)
    kwargs = dict(
        traffic=world.traffic, registry=world.registry, events=world.events, stage="canary", reason="breach"
    )
    target = RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION)
    roll_back_promotion(target, outcome="rolled_back", **kwargs)
    n = len(world.events.transitions(pid))
    again = roll_back_promotion(target, outcome="rolled_back", **kwargs)
    assert again.verified and again.ledger_closed and again.outcome == "rolled_back"
    assert len(world.events.transitions(pid)) == n


def test_registry_down_during_the_rollback_then_reconcile_finishes_it(world: SimpleNamespace) -> None:
    """MLflow unreachable: traffic is back at once, the ledger stays pending (not closed on a lie), and
    reconcile completes aliases, tags and the ledger once the registry answers and the lease has lapsed."""
    pid = open_canary(world)

    class DownRegistry:
        def __getattr__(self, name: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("MLflow is down")

            return call

    with pytest.raises(RollbackIncomplete) as caught:
        roll_back_promotion(
            RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
            traffic=world.traffic,
            registry=DownRegistry(),
            events=world.events,
            stage="canary",
            reason="guardrail breach",
            outcome="rolled_back",
        )
    assert caught.value.report.traffic_ok and not caught.value.report.registry_ok
    split = world.traffic.get_split()
    assert split.champion == CHAMPION and split.is_all_champion  # the champion serves meanwhile
    assert world.events.promotion(pid)["state"] == "rolled_back_pending"
    lapse(world.events, pid)
    [done] = reconcile(SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry))
    assert done.done and done.from_state == "rolled_back_pending" and done.outcome == "rolled_back"
    assert_champion_serves(world)


def test_an_interrupted_process_rolls_back_within_its_bounds_when_the_registry_hangs(
    world: SimpleNamespace,
) -> None:
    """The bounds an interrupted `stagegate promote` uses (one round, one try, a short deadline per call)
    with a registry that never answers, as one locked by a write the interrupt cut: traffic is back, the
    ledger says rolled_back_pending, all within about (1 + 1 + 1) calls' deadlines; reconcile finishes."""
    pid = open_canary(world)
    release = threading.Event()

    class LockedRegistry:
        def __getattr__(self, name: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                release.wait(60)  # SQLite's lock, held by this process's own interrupted write

            return call

    started = time.monotonic()
    with pytest.raises(RollbackIncomplete) as caught:
        roll_back_promotion(
            RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
            traffic=world.traffic,
            registry=LockedRegistry(),
            events=world.events,
            stage="canary",
            reason="interrupted by SIGINT (Ctrl-C)",
            outcome="rolled_back",
            rounds=1,
            attempts=1,
            call_timeout=0.3,
        )
    elapsed = time.monotonic() - started
    release.set()
    # the registry's first write (0.3 s) and the read-back (0.3 s), not 3 tries x 3 rounds x 20 s
    assert elapsed < 2.5, elapsed
    assert caught.value.report.traffic_ok and caught.value.report.rounds == 1
    split = world.traffic.get_split()
    assert split.champion == CHAMPION and split.is_all_champion
    assert world.events.promotion(pid)["state"] == "rolled_back_pending"
    lapse(world.events, pid)  # the interrupted process is gone
    [done] = reconcile(SimpleNamespace(events=world.events, traffic=world.traffic, registry=world.registry))
    assert done.done and done.outcome == "rolled_back"
    assert_champion_serves(world)


def test_a_real_unreachable_database_is_the_same_as_a_dead_ledger(world: SimpleNamespace) -> None:
    """The store's own client, pointed at a port where no database listens (the database went away)."""
    from stagegate.events.store import store_engine

    pid = open_canary(world)
    cut = EventStore.__new__(EventStore)  # the same store object, its server gone
    cut.__dict__.update(
        world.events.__dict__, engine=store_engine("postgresql+psycopg://postgres@127.0.0.1:9/gone")
    )
    started = time.monotonic()
    report = roll_back_promotion(
        RollbackTarget(pid, MODEL, CANDIDATE, CHAMPION),
        traffic=world.traffic,
        registry=world.registry,
        events=cut,
        stage="canary",
        reason="database gone",
        outcome="rolled_back",
    )
    assert time.monotonic() - started < 10
    assert report.verified and not report.ledger_closed
    assert any("OperationalError" in p for p in report.problems), report.problems
    assert_champion_serves(world)
