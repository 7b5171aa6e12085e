"""The ports' contracts (stagegate.ports), checked against every adapter that ships.

Each ``check_*`` function is the port's shared conformance suite (as sklearn's estimator checks): any
adapter of that port, ours or a third party's, must pass it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from simulator.adapters import SimulatedClock, WorkspaceOfflineData
from simulator.traffic import FileTrafficController
from stagegate.adapters.clock import WallClock
from stagegate.adapters.metrics import EventStoreMetricSource, sim_days
from stagegate.adapters.offline import catalogue_table, impressions_table
from stagegate.events.store import EventStore
from stagegate.evidence import CANDIDATE, CHAMPION
from stagegate.log_rows import concat
from stagegate.ports import (
    CATALOGUE_SCHEMA,
    IMPRESSIONS_SCHEMA,
    SIM_EPOCH,
    Clock,
    Look,
    Measurement,
    MeasurementError,
    MetricSource,
    OfflineData,
    Split,
    TrafficController,
    TrafficError,
    Wait,
    Window,
    check_table,
    next_look,
    required_fields,
    schema_problems,
)
from stagegate.verdict import Outcome
from tests.core.test_event_store import fake_batch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- shared conformance suites -----------------------------------------------------------------------------


def check_traffic_controller(controller: TrafficController) -> None:
    assert isinstance(controller, TrafficController)
    split = Split(champion="1", candidate="2", candidate_weight=0.25)
    controller.set_split(split)
    assert controller.get_split() == split
    back = controller.rollback()
    assert back == Split(champion="1") and back.is_all_champion
    assert controller.get_split() == back  # persisted, not only returned
    controller.set_split(Split(champion="1", candidate="2", shadow=True))
    assert controller.rollback("3") == Split(champion="3")  # an explicit champion wins
    assert controller.rollback("3") == Split(champion="3")  # idempotent


def check_metric_source(source: MetricSource, with_data: Window, without_data: Window) -> Measurement:
    assert isinstance(source, MetricSource)
    m = source.measure(with_data)
    assert isinstance(m, Measurement) and m.window == with_data
    for arm in (CHAMPION, CANDIDATE):
        sample = m.arms[arm]
        assert sample.n_users > 0
        for name, values in sample.metrics.items():
            assert np.asarray(values).shape == (sample.n_users,), name
        for name, mask in sample.segments.items():
            assert np.asarray(mask).dtype == bool, name
    again = source.measure(with_data)  # a closed window measures the same twice
    for arm in m.arms:
        np.testing.assert_array_equal(m.arms[arm].metrics["revenue"], again.arms[arm].metrics["revenue"])
    with pytest.raises(MeasurementError):
        source.measure(without_data)  # never empty data in place of a measurement
    return m


def check_clock(clock: Clock, past: Look) -> None:
    assert isinstance(clock, Clock)
    now = clock.now()
    assert now.tzinfo is not None
    wait = clock.wait(past)
    assert isinstance(wait, Wait) and wait.ready and wait.due == past.due  # a due look is ready at once


def check_offline_data(data: OfflineData) -> None:
    assert isinstance(data, OfflineData)
    holdout, training = data.holdout(), data.training_log()
    for table in (holdout, training):
        assert not schema_problems(table, IMPRESSIONS_SCHEMA)
        assert table.num_rows > 0
    assert max(training.column("t").to_pylist()) < min(holdout.column("t").to_pylist())  # no overlap
    assert not schema_problems(data.catalogue(), CATALOGUE_SCHEMA, extra_prefix="emb_")


# -- traffic -------------------------------------------------------------------------------------------------


def test_file_traffic_controller_conforms(tmp_path: Path) -> None:
    check_traffic_controller(FileTrafficController(tmp_path / "traffic.json"))


def test_rollback_reads_the_split_back(tmp_path: Path) -> None:
    """A backend that accepts the write but keeps serving the old split fails the rollback loudly."""

    class Stuck(FileTrafficController):
        def set_split(self, split: Split) -> None:  # acknowledges, changes nothing
            return None

    stuck = Stuck(tmp_path / "traffic.json")
    FileTrafficController(stuck.path).set_split(Split(champion="1", candidate="2", candidate_weight=0.5))
    with pytest.raises(TrafficError, match="did not take"):
        stuck.rollback()


def test_split_is_still_importable_from_traffic() -> None:
    from stagegate.traffic.base import Split as OldSplit

    assert OldSplit is Split


# -- metrics -------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(f"sqlite:///{tmp_path / 'events.db'}")


def _promotion(store: EventStore) -> str:
    return store.open_promotion(model="m", version="2", policy_path="p", policy={}, champion_version="1")


def test_event_store_metric_source_conforms_and_aggregates_per_user(store: EventStore) -> None:
    pid = _promotion(store)
    batch = fake_batch(n=400, seed=3)
    store.append_batch(batch, promotion_id=pid, stage="canary", step=1, versions=("1", "2"))
    source = EventStoreMetricSource(store)
    m = check_metric_source(source, Window(pid, "canary", 1), Window(pid, "canary", 2))
    assert m.n_requests == batch.n
    # Revenue per user, recomputed from the batch: users are the unit, not requests.
    users, arm = batch.context.user_id, batch.arm
    for name, code in ((CHAMPION, 0), (CANDIDATE, 1)):
        sample = m.arms[name]
        want = pd.Series(batch.revenue[arm == code]).groupby(users[arm == code]).sum()
        np.testing.assert_allclose(sample.metrics["revenue_per_user"], want.loc[sample.user_ids].to_numpy())
        assert sample.n_users == len(np.unique(users[arm == code]))
        np.testing.assert_array_equal(
            sample.segments["cold_start"] | sample.segments["light"] | sample.segments["heavy"],
            np.ones(sample.n_users, bool),
        )
    assert set(m.arms[CHAMPION].requests) >= {"latency_ms", "error"}
    evidence = m.evidence({CHAMPION: 0.8, CANDIDATE: 0.2}, look=2)
    assert evidence.stage == "canary" and evidence.look == 2 and not evidence.paired


def test_window_bounds_select_by_time(store: EventStore) -> None:
    pid = _promotion(store)
    early, late = fake_batch(n=200, seed=1, t0=0.0), fake_batch(n=200, seed=2, t0=1.0)
    for batch in (early, late):
        store.append_batch(batch, promotion_id=pid, stage="canary", step=1, versions=("1", "2"))
    source = EventStoreMetricSource(store)
    day1 = SIM_EPOCH + timedelta(days=1)
    assert source.measure(Window(pid, "canary", 1, end=day1)).n_requests == early.n
    assert source.measure(Window(pid, "canary", 1, start=day1)).n_requests == late.n
    assert source.measure(Window(pid, "canary", None)).n_requests == early.n + late.n
    assert sim_days(day1) == pytest.approx(1.0)
    with pytest.raises(MeasurementError, match="no requests"):
        source.measure(Window(pid, "canary", 1, start=SIM_EPOCH + timedelta(days=5)))


def test_an_expected_arm_without_users_is_a_measurement_error(store: EventStore) -> None:
    pid = _promotion(store)
    batch = fake_batch(n=200, seed=4)
    champion_only = replace(batch, arm=np.zeros(batch.n, np.int8))  # every request on the champion
    store.append_batch(champion_only, promotion_id=pid, stage="canary", step=1, versions=("1", "2"))
    source = EventStoreMetricSource(store)
    with pytest.raises(MeasurementError, match="candidate"):
        source.measure(Window(pid, "canary", 1))
    # Asked only for the champion (e.g. a guardrail on the incumbent), the same data measures.
    assert source.measure(Window(pid, "canary", 1), expect=(CHAMPION,)).n_units(CHAMPION) > 0


def test_a_failed_query_is_a_measurement_error_never_empty(store: EventStore) -> None:
    pid = _promotion(store)
    store.append_batch(fake_batch(), promotion_id=pid, stage="canary", step=1, versions=("1", "2"))
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE events"))
    with pytest.raises(MeasurementError, match="event query failed") as info:
        EventStoreMetricSource(store).measure(Window(pid, "canary", 1))
    assert info.value.window == Window(pid, "canary", 1)
    assert pid in str(info.value)  # the message says which window could not be measured


def test_shadow_windows_are_paired(store: EventStore) -> None:
    pid = _promotion(store)
    batch = fake_batch(n=200, seed=5)
    rng = np.random.default_rng(0)
    shadow = replace(batch, shadow_items=rng.integers(0, 50, batch.items.shape).astype(np.int32))
    store.append_batch(shadow, promotion_id=pid, stage="shadow", step=0, versions=("1", "2"))
    m = EventStoreMetricSource(store).measure(Window(pid, "shadow", 0, mirrored=True))
    assert m.paired
    np.testing.assert_array_equal(m.arms[CHAMPION].user_ids, m.arms[CANDIDATE].user_ids)
    assert "overlap@k" in m.arms[CANDIDATE].metrics


def test_measurement_refuses_columns_of_the_wrong_shape() -> None:
    from stagegate.evidence import ArmSample

    arm = ArmSample(user_ids=np.arange(3), metrics={"revenue": np.zeros(2)})
    with pytest.raises(MeasurementError, match="shape"):
        Measurement(Window("p", "canary", 1), {CHAMPION: arm})
    arm = ArmSample(user_ids=np.arange(3), metrics={}, segments={"heavy": np.array([0, 1, 0])})
    with pytest.raises(MeasurementError, match="bool"):
        Measurement(Window("p", "canary", 1), {CHAMPION: arm})


def test_window_checks_its_bounds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Window("p", "canary", 1, start=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="empty window"):
        Window("p", "canary", 1, start=T0, end=T0)


# -- clock ---------------------------------------------------------------------------------------------------


def test_next_look_schedule_is_fixed_by_the_step_start() -> None:
    every = timedelta(hours=2)
    looks = [next_look("p", "canary", 1, T0, every, done) for done in range(3)]
    assert [lk.number for lk in looks] == [1, 2, 3]
    assert [lk.due for lk in looks] == [T0 + every, T0 + 2 * every, T0 + 3 * every]
    assert looks[2].window() == Window("p", "canary", 1, T0, T0 + 3 * every)
    with pytest.raises(ValueError):
        next_look("p", "canary", 1, T0, timedelta(0), 0)


class FakeTime:
    def __init__(self, now: datetime) -> None:
        self.current = now
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)


def test_wall_clock_blocks_briefly_and_hands_long_waits_back() -> None:
    fake = FakeTime(T0)
    clock = WallClock(max_block_seconds=300, now=fake.now, sleep=fake.sleep)
    check_clock(clock, next_look("p", "canary", 1, T0 - timedelta(hours=3), timedelta(hours=1), 0))
    assert fake.slept == []  # an overdue look never sleeps

    soon = next_look("p", "canary", 1, T0 - timedelta(minutes=58), timedelta(hours=1), 0)  # due in 2 min
    wait = clock.wait(soon)
    assert wait.ready and fake.slept == [120.0] and wait.waited == timedelta(minutes=2)

    later = next_look("p", "canary", 1, fake.now(), timedelta(hours=6), 0)
    wait = clock.wait(later)
    assert not wait.ready and wait.resume_at == later.due  # the worker is not held for six hours
    assert fake.slept == [120.0]


def test_a_look_after_a_crash_continues_from_the_ledger_checkpoint(store: EventStore) -> None:
    """The checkpoint goes through the ledger's JSON column and back; the next look is the one after the
    recorded ones, on the step's own schedule, and an overdue look is judged at once."""
    from flows.stages.checkpoint import restore_state, to_checkpoint
    from flows.stages.runner import LoopState, Plan, Step, schedule

    pid = _promotion(store)
    every = timedelta(hours=2)
    plan = Plan(pid, "canary", (Step(1, 0.1, deadline_hours=24, last=False), Step(2, 0.5)), every)
    store.save_checkpoint(pid, to_checkpoint("canary", LoopState(looks_done=2, step_start=T0, total_looks=2)))

    def no_measure(window: Window, expect: object) -> Measurement:
        raise AssertionError("nothing to measure again: no judged look in the trail")

    restored = restore_state(plan, store.promotion(pid)["checkpoint"], no_measure)
    look = schedule(plan, plan.steps[0], restored)
    assert (look.number, look.due) == (3, T0 + 3 * every)
    assert WallClock(now=lambda: T0 + 7 * every).wait(look).ready


def test_a_deferred_promotion_is_not_abandoned_while_its_lease_runs(store: EventStore) -> None:
    """Its process has ended (the owner is gone) by design: only the lease says when it is abandoned."""
    import socket

    from flows.stages.checkpoint import to_checkpoint
    from flows.stages.runner import LoopState

    pid = _promotion(store)
    gone = EventStore(store.url, owner=f"{socket.gethostname()}:999999999:0")
    assert gone.take_over(store.promotion(pid), lease_for=3600)
    assert [r["id"] for r in store.expired_leases()] == [pid]  # a dead owner, not deferred: abandoned
    due = datetime.now(UTC) + timedelta(minutes=30)
    gone.save_checkpoint(pid, to_checkpoint("canary", LoopState(step_start=T0), resume_at=due))
    assert store.expired_leases() == []
    with store.engine.begin() as conn:  # the lease lapses: nobody resumed it in time
        conn.execute(text("UPDATE promotions SET lease_expires_at = :t"), {"t": T0})
    assert [r["id"] for r in store.expired_leases()] == [pid]


def test_simulated_clock_serves_the_world_up_to_the_due_time(store: EventStore, tmp_path: Path) -> None:
    pid = _promotion(store)

    class World:
        now = 2.0  # days

    served: list[tuple[str, Split, float]] = []

    def serve(model: str, split: Split, hours: float):
        served.append((model, split, hours))
        World.now += hours / 24
        return fake_batch(n=100, t0=World.now)

    traffic = FileTrafficController(tmp_path / "traffic.json")
    traffic.set_split(Split(champion="1", candidate="2", candidate_weight=0.5))
    host = SimpleNamespace(world=World, events=store, traffic=traffic, serve=serve)
    clock = SimulatedClock(host)
    start = clock.now()
    assert start == SIM_EPOCH + timedelta(days=2)
    check_clock(clock, next_look(pid, "canary", 1, start - timedelta(hours=4), timedelta(hours=2), 0))
    assert served == []  # nothing to serve for an overdue look

    look = next_look(pid, "canary", 1, start, timedelta(hours=3), 0)
    wait = clock.wait(look)
    assert wait.ready and wait.waited == timedelta(hours=3)
    assert served == [("m", traffic.get_split(), pytest.approx(3.0))]
    assert abs(clock.now() - look.due) < timedelta(milliseconds=1)
    assert store.count_events(pid) == 100  # the window's requests are in the event store for the metrics


# -- offline data --------------------------------------------------------------------------------------------


def _catalogue_frame(n_items: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "item_id": np.arange(n_items, dtype=np.int64),
            "category": rng.integers(0, 5, n_items).astype(np.int64),
            "price": rng.uniform(1, 50, n_items),
            "margin": rng.uniform(0, 0.5, n_items),
            "publish_day": rng.uniform(-30, 0, n_items),
            "saliency": rng.random(n_items),
            "stock": rng.integers(0, 9, n_items).astype(np.int64),
            "emb_0": rng.normal(size=n_items),
            "emb_1": rng.normal(size=n_items),
        }
    )


def test_workspace_offline_data_conforms(tmp_path: Path) -> None:
    history = concat([fake_batch(n=300, seed=1, t0=0.0), fake_batch(n=300, seed=2, t0=3.0)])

    def training_log():
        from stagegate.log_rows import take

        return take(history, np.flatnonzero(history.context.t < 2.0))

    host = SimpleNamespace(
        history=history,
        manifest={"holdout_start_day": 2.0},
        world=SimpleNamespace(catalog_public=_catalogue_frame),
        training_log=training_log,
    )
    data = WorkspaceOfflineData(host)
    check_offline_data(data)
    assert data.holdout().num_rows == 300 and data.training_log().num_rows == 300


def test_impressions_survive_parquet_and_keep_propensities(tmp_path: Path) -> None:
    batch = fake_batch(n=120, seed=9)
    table = impressions_table(batch)
    pq.write_table(table, tmp_path / "log.parquet")
    back = check_table(pq.read_table(tmp_path / "log.parquet"), IMPRESSIONS_SCHEMA, "log")
    pscore = np.array(back.column("pscore").to_pylist())
    np.testing.assert_array_equal(pscore, batch.pscore)  # propensities for OPE, position by position
    np.testing.assert_array_equal(np.array(back.column("items").to_pylist()), batch.items)
    assert set(required_fields(IMPRESSIONS_SCHEMA)) <= set(back.column_names)


def test_schema_problems_name_every_break() -> None:
    table = impressions_table(fake_batch(n=20))
    broken = table.drop_columns(["pscore"])
    broken = broken.set_column(broken.schema.get_field_index("revenue"), "revenue", pa.array(["x"] * 20))
    broken = broken.append_column("mystery", pa.array(range(20)))
    problems = schema_problems(broken, IMPRESSIONS_SCHEMA)
    assert any("missing required column 'pscore'" in p for p in problems)
    assert any("'revenue' is string" in p for p in problems)
    assert any("unknown column 'mystery'" in p for p in problems)
    with pytest.raises(ValueError, match="pscore"):
        check_table(broken, IMPRESSIONS_SCHEMA, "log")
    catalogue = catalogue_table(_catalogue_frame())
    assert not schema_problems(catalogue, CATALOGUE_SCHEMA, extra_prefix="emb_")
    nulls = catalogue.set_column(0, "item_id", pa.array([None] * catalogue.num_rows, pa.int64()))
    assert any("nulls" in p for p in schema_problems(nulls, CATALOGUE_SCHEMA, extra_prefix="emb_"))


# -- the monitor reads the metric port --------------------------------------------------------------------


def test_monitor_judges_a_measurement_error_as_error_never_as_no_harm(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    import flows.monitor as monitor
    from stagegate.plugins import build_gate

    pid = _promotion(store)
    traffic = FileTrafficController(tmp_path / "traffic.json")
    traffic.set_split(Split(champion="1", candidate="2", candidate_weight=0.5))
    host = SimpleNamespace(events=store, traffic=traffic, metrics=EventStoreMetricSource(store))
    monkeypatch.setattr(monitor, "runtime", lambda: host)
    monkeypatch.setattr(monitor, "get_run_logger", lambda: logging.getLogger("test"))
    ctx = SimpleNamespace(promotion_id=pid)
    gate = build_gate({"type": "guardrail", "metric": "error_rate", "max": 0.5})

    evidence, step = monitor.build_evidence(ctx, "canary", 1, ())  # no request recorded yet
    assert evidence.arms == {} and step == 0
    assert gate.evaluate(evidence).outcome is Outcome.ERROR

    store.append_batch(fake_batch(n=400), promotion_id=pid, stage="canary", step=1, versions=("1", "2"))
    evidence, step = monitor.build_evidence(ctx, "canary", 2, ())
    assert step == 1 and set(evidence.arms) == {CHAMPION, CANDIDATE}
    assert evidence.allocation == {CHAMPION: 0.5, CANDIDATE: 0.5} and evidence.look == 2
    assert gate.evaluate(evidence).outcome is Outcome.PASS


def test_flow_traffic_tasks_go_through_the_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.traffic as traffic_tasks

    traffic = FileTrafficController(tmp_path / "traffic.json")
    traffic.set_split(Split(champion="1", candidate="2", candidate_weight=0.5, shadow=True))
    host = SimpleNamespace(traffic=traffic, clock=WallClock())
    monkeypatch.setattr(traffic_tasks, "runtime", lambda: host)
    assert traffic_tasks.roll_back_traffic.fn("1") == Split(champion="1")
    assert traffic.get_split() == Split(champion="1")
    ctx = SimpleNamespace(promotion_id="p", model="m")
    with pytest.raises(RuntimeError, match="does not serve traffic"):
        traffic_tasks.serve_window.fn(ctx, "canary", 1, 2.0)  # a real clock never serves the simulator
