"""Recovery end to end (the real flow, Prefect's temporary server, MLflow on SQLite): the events database
cut mid-canary, `stagegate promote` killed mid-canary (rolled back, or resumed under on_crash: resume), a
truncated split file under `stagegate status`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from simulator.setup import MODEL
from tests.e2e.test_promotion import FAST_STAGES, _state, write_policy

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


class CutLedger:
    """The real store until the canary serves its first window; from then on, the database is gone."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "append_batch" and kwargs.get("stage") == "canary":
                self.cut = True
            if self.cut:
                raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
            return attr(*args, **kwargs)

        return call


def test_events_database_cut_mid_canary(
    workspace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.context import runtime
    from flows.promote import promote
    from stagegate.cli import app

    monkeypatch.setenv("STAGEGATE_LEASE_SECONDS", "4")
    version = workspace["versions"]["clickbait"]
    champion = workspace["info"]["champion_version"]
    rt = runtime()
    real = rt.events
    ledger = CutLedger(real)
    rt.__dict__["events"] = ledger  # what the flow, its tasks and its lease keeper use
    result = promote(model=MODEL, version=version, policy=str(write_policy(tmp_path / "p.yaml")))
    assert ledger.cut

    # Traffic, aliases and tags are back although the ledger was unreachable; the flow says so.
    assert result.outcome == "rolled_back" and not result.ledger_closed
    assert "stagegate reconcile" in result.reason
    state = _state(workspace["root"])
    assert state["split"].champion == champion and state["split"].is_all_champion
    assert state["aliases"] == {"champion": champion, "candidate": None, "previous": None}
    assert state["rt"].registry.get_version(MODEL, version).tags["stagegate.status"] == "rolled_back"
    assert real.promotion(result.promotion_id)["state"] == "canary"

    # The database is back; once the lease has lapsed, reconcile closes the promotion from the ledger.
    rt.__dict__["events"] = real
    time.sleep(4.5)
    out = CliRunner().invoke(app, ["reconcile"])
    assert out.exit_code == 0, out.output
    assert f"promotion {result.promotion_id}" in out.output and "closed" in out.output
    row = real.promotion(result.promotion_id)
    assert row["state"] == "rolled_back" and "reconciled: lease expired at" in row["reason"]
    assert CliRunner().invoke(app, ["reconcile"]).output.startswith("nothing to reconcile")


def _promote_then_kill_in_canary(
    workspace: dict, policy: Path, log_path: Path, ready: Any, sig: int = signal.SIGKILL
) -> Any:
    """Run `stagegate promote` in its own process group and send it ``sig`` (SIGKILL: to the whole group)
    once ``ready(open promotion row)`` holds while the candidate serves 20%; the ledger store. A SIGINT or
    SIGTERM goes to the promote process alone, as a terminal's Ctrl-C or a supervisor's stop would, and
    the process is given 60 s to end; ``store.exit`` is its exit code, ``store.ended_in`` the seconds it
    took."""
    from stagegate.events.store import EventStore

    version = workspace["versions"]["better"]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["STAGEGATE_HOME"] = str(workspace["root"])
    env["PYTHONFAULTHANDLER"] = "1"  # a SIGABRT (sent below if it hangs) prints every thread's stack
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "stagegate.cli", "promote"),
            *("--model", MODEL, "--version", version, "--policy", str(policy)),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes its Prefect server along
    )
    store = EventStore(f"sqlite:///{workspace['root'] / 'events.db'}")
    traffic = workspace["root"] / "traffic.json"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            open_ones = store.promotions(MODEL, open_only=True)
            in_canary = bool(open_ones) and open_ones[0]["state"] == "canary" and ready(open_ones[0])
            if in_canary and '"candidate_weight":0.2' in traffic.read_text():
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"never reached the canary: {log_path.read_text()[-3000:]}")
        sent = time.monotonic()
        if sig != signal.SIGKILL:
            proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        store.ended_in = time.monotonic() - sent
        if proc.poll() is None:  # hung: the log gets where each thread is
            proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group of the process this test started
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    store.exit = proc.returncode
    return store


def test_promote_killed_mid_canary_is_recovered_by_reconcile(workspace: dict, tmp_path: Path) -> None:
    from stagegate.cli import app

    version = workspace["versions"]["better"]
    champion = workspace["info"]["champion_version"]
    endless = {  # a canary step that keeps looking: the kill lands while the candidate has 20%
        **FAST_STAGES["canary"],
        "steps": [{"weight": 20, "min_users": 10**8}],
        "batch_hours": 1,
        "max_hours_per_step": 10_000,
    }
    policy = write_policy(tmp_path / "p.yaml", canary=endless)
    store = _promote_then_kill_in_canary(workspace, policy, tmp_path / "promote.log", lambda row: True)
    [victim] = store.promotions(MODEL, open_only=True)
    assert _state(workspace["root"])["split"].candidate_weight == 0.2  # what SIGKILL left behind

    out = CliRunner().invoke(app, ["reconcile"])
    assert out.exit_code == 0, out.output
    state = _state(workspace["root"])
    assert state["split"].champion == champion and state["split"].is_all_champion
    assert state["aliases"] == {"champion": champion, "candidate": None, "previous": None}
    assert state["rt"].registry.get_version(MODEL, version).tags["stagegate.status"] == "rolled_back"
    row = store.promotion(victim["id"])
    assert row["state"] == "rolled_back" and "is gone" in row["reason"], row["reason"]
    assert store.promotions(MODEL, open_only=True) == []  # the model is free for the next promotion


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_or_sigterm_mid_canary_ends_the_promotion_safely_within_seconds(
    workspace: dict, tmp_path: Path, sig: int
) -> None:
    """Ctrl-C or a supervisor's stop during the canary: traffic goes back to the champion and the ledger
    is closed rolled_back by the promote process itself, which then exits (non-zero) within seconds."""
    version = workspace["versions"]["better"]
    champion = workspace["info"]["champion_version"]
    endless = {
        **FAST_STAGES["canary"],
        "steps": [{"weight": 20, "min_users": 10**8}],
        "batch_hours": 1,
        "max_hours_per_step": 10_000,
    }
    policy = write_policy(tmp_path / "p.yaml", canary=endless)
    log = tmp_path / "promote.log"
    store = _promote_then_kill_in_canary(workspace, policy, log, lambda row: True, sig=sig)
    output = log.read_text()
    if store.exit == -signal.SIGABRT:  # hung past 60 s: the log holds every thread's stack
        pytest.xfail(
            "known defect, seen once in CI before the rollback's calls were bounded: the interrupted process "
            f"did not end within 60 s; its threads' stacks: {output[-6000:]}"
        )
    # 128 + n, or ended by the signal itself (Prefect re-raises SIGTERM): what a shell reports as 130 or 143
    assert store.exit in (128 + sig, -sig), (store.exit, output[-3000:])
    assert store.ended_in < 30, (store.ended_in, output[-3000:])
    [row] = store.promotions(MODEL)
    if row["state"] == "rolled_back_pending":
        # The documented hand-over: an MLflow write the signal cut short kept the registry locked until the
        # process ended (benchmarks/interrupt_locks.py), so the process moved traffic, recorded the pending
        # rollback and left the registry to the reconciler; the process is gone now, so reconcile finishes.
        assert _state(workspace["root"])["split"].is_all_champion
        from stagegate.cli import app

        finished = CliRunner().invoke(app, ["reconcile"])
        assert finished.exit_code == 0, finished.output
        [row] = store.promotions(MODEL)
    said = " ".join(t["reason"] or "" for t in store.transitions(row["id"]))
    assert row["state"] == "rolled_back" and "interrupted by" in said, (row["reason"], output[-3000:])
    state = _state(workspace["root"])
    assert state["split"].champion == champion and state["split"].is_all_champion
    assert state["aliases"] == {"champion": champion, "candidate": None, "previous": None}
    assert state["rt"].registry.get_version(MODEL, version).tags["stagegate.status"] == "rolled_back"
    assert "Traceback" not in output
    print(f"signal {sig}: the promote process ended in {store.ended_in:.1f}s with exit code {store.exit}")


def test_promote_killed_mid_canary_under_on_crash_resume_is_resumed_by_reconcile(
    workspace: dict, tmp_path: Path
) -> None:
    """The policy says on_crash: resume: `stagegate reconcile` continues the killed promotion from the
    ledger's checkpoint (the step it was in, its looks so far) to its end, instead of rolling it back."""
    import yaml

    from stagegate.cli import app

    version = workspace["versions"]["better"]
    champion = workspace["info"]["champion_version"]
    canary = {**FAST_STAGES["canary"], "steps": [{"weight": 20, "min_users": 60}], "batch_hours": 1}
    policy = write_policy(tmp_path / "p.yaml", canary=canary)
    policy.write_text(yaml.safe_dump({**yaml.safe_load(policy.read_text()), "on_crash": "resume"}))

    def looked_once(row: dict) -> bool:  # the canary has a checkpoint with a judged look
        return bool(((row.get("checkpoint") or {}).get("stage") == "canary") and row["checkpoint"]["trail"])

    store = _promote_then_kill_in_canary(workspace, policy, tmp_path / "promote.log", looked_once)
    [victim] = store.promotions(MODEL, open_only=True)
    before = store.promotion(victim["id"])["checkpoint"]
    assert _state(workspace["root"])["split"].candidate_weight == 0.2

    out = CliRunner().invoke(app, ["reconcile"])
    assert out.exit_code == 0, out.output
    assert "resumed from the ledger" in out.output and ": promoted" in out.output, out.output
    row = store.promotion(victim["id"])
    assert row["state"] == "promoted"
    transitions = [t["reason"] or "" for t in store.transitions(victim["id"])]
    assert any(r.startswith("resumed from the ledger at canary") for r in transitions), transitions
    verdicts = store.verdicts(victim["id"])
    canary_looks = sorted(set(verdicts[verdicts["stage"] == "canary"]["look"]))
    assert canary_looks == list(range(1, len(canary_looks) + 1))  # numbered on, none repeated or skipped
    assert len(canary_looks) >= before["looks_done"]
    state = _state(workspace["root"])
    assert state["split"].champion == version and state["split"].is_all_champion
    assert state["aliases"] == {"champion": version, "candidate": None, "previous": champion}


def test_status_shows_a_truncated_split_file_and_the_ledger(workspace: dict) -> None:
    from stagegate.cli import app

    traffic = workspace["root"] / "traffic.json"
    text = traffic.read_text()
    traffic.write_text(text[: len(text) // 2])
    out = CliRunner().invoke(app, ["status"])
    assert out.exit_code == 0, out.output
    assert "cannot read the split" in out.output and "promotions" in out.output


def test_a_promotion_that_fails_while_opening_is_closed_at_once(
    workspace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.context import runtime
    from flows.promote import promote
    from stagegate.tracking import PromotionTracker

    def broken(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("MLflow is down")

    monkeypatch.setattr(PromotionTracker, "start_promotion", broken)
    version = workspace["versions"]["better"]
    with pytest.raises(ConnectionError, match="MLflow is down"):
        promote(model=MODEL, version=version, policy=str(write_policy(tmp_path / "p.yaml")))
    [row] = runtime().events.promotions(MODEL)
    assert row["state"] == "rejected" and "opening the promotion failed" in row["reason"]
    assert runtime().events.promotions(MODEL, open_only=True) == []  # the next promotion may start
    assert _state(workspace["root"])["aliases"]["candidate"] is None


def test_promote_is_refused_while_another_promotion_of_the_model_holds_its_lease(
    workspace: dict, tmp_path: Path
) -> None:
    from flows.context import runtime
    from stagegate.cli import app

    holder = runtime().events.open_promotion(
        model=MODEL, version="9", policy_path="p", policy={}, champion_version="1"
    )  # this process: alive, lease fresh
    before = _state(workspace["root"])
    policy = write_policy(tmp_path / "p.yaml")
    version = workspace["versions"]["better"]
    out = CliRunner().invoke(
        app, ["promote", "--model", MODEL, "--version", version, "--policy", str(policy)]
    )
    assert out.exit_code == 2, out.output
    assert f"promotion {holder} of {MODEL!r} (version 9) is still in progress" in out.output
    after = _state(workspace["root"])
    assert after["aliases"] == before["aliases"] and after["split"] == before["split"]


def test_a_flow_that_lost_its_lease_cannot_leave_the_candidate_serving(
    workspace: dict, tmp_path: Path
) -> None:
    """A reconciler took the promotion over mid-bake (this process looked dead: a stall longer than the
    lease). The rollout still ends with its 100% split, but `promoted` is refused by the ledger, and then
    the flow puts the champion back instead of leaving the new version serving unrecorded."""
    from types import SimpleNamespace

    from sqlalchemy import update

    from flows.context import runtime
    from flows.promote import promote
    from stagegate.events.store import EventStore, promotions
    from stagegate.reconcile import reconcile

    version = workspace["versions"]["better"]
    champion = workspace["info"]["champion_version"]
    rt = runtime()
    real = rt.events
    other = EventStore(real.url, owner="reconciler-elsewhere")

    class Stall:
        done = False

        def __getattr__(self, name: str) -> Any:
            attr = getattr(real, name)

            def call(*args: Any, **kwargs: Any) -> Any:
                if name == "append_batch" and kwargs.get("stage") == "rollout" and not Stall.done:
                    Stall.done = True
                    with real.engine.begin() as conn:  # the lease lapses while this process stalls
                        conn.execute(
                            update(promotions).values(lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
                        )
                    services = SimpleNamespace(events=other, traffic=rt.traffic, registry=rt.registry)
                    assert [r.outcome for r in reconcile(services, MODEL)] == ["rolled_back"]
                return attr(*args, **kwargs)

            return call if callable(attr) else attr

    rt.__dict__["events"] = Stall()
    try:
        result = promote(model=MODEL, version=version, policy=str(write_policy(tmp_path / "p.yaml")))
    finally:
        rt.__dict__["events"] = real
    assert Stall.done and result.outcome == "rolled_back", result.reason
    state = _state(workspace["root"])
    assert state["split"].champion == champion and state["split"].is_all_champion
    assert state["aliases"]["champion"] == champion and state["aliases"]["candidate"] is None
    row = real.promotion(result.promotion_id)
    assert row["state"] == "rolled_back" and "reconciled: lease expired" in row["reason"]
