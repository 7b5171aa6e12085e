"""Faults of the servers around a promotion, on real servers (issue 11, items 3 and 10): `stagegate promote`
runs in its own process against a real Prefect server (not the temporary one), on the e2e workspace.

- the model's Prefect global concurrency limit: a second promotion of the model is refused, another
  model's slot is free, the slot frees when the promotion ends;
- the Prefect server killed and restarted mid-canary: the promotion continues or ends rolled back, never
  the candidate serving with an open ledger, and the model's slot is not left stuck.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.setup import MODEL
from tests.e2e.servers import REPO, PrefectServer, promote_process, stop_group, wait_for
from tests.e2e.test_faults import LIVE_STAGES, live_policy
from tests.e2e.test_promotion import _state

pytestmark = pytest.mark.slow

ENDLESS_CANARY = {  # a canary step that keeps looking while the test does its part
    **LIVE_STAGES["canary"],
    "steps": [{"weight": 20, "min_users": 10**8}],
    "batch_hours": 1,
    "max_hours_per_step": 10_000,
    "gates": [{"type": "guardrail", "metric": "error_rate", "max": 0.2, "on_inconclusive": "record"}],
}


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    from tests.proof.test_real_adapters import _database  # a PostgreSQL database for the module

    database = _database()
    server = PrefectServer(tmp_path_factory.mktemp("prefect"), next(database))
    took = server.start()
    print(f"Prefect server healthy in {took:.1f}s")
    yield server
    server.kill()
    next(database, None)


def _limit(api: str, name: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{api}/v2/concurrency_limits/{name}", timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _in_canary(root: Path) -> bool:
    from stagegate.events.store import EventStore

    rows = EventStore(f"sqlite:///{root / 'events.db'}").promotions(MODEL, open_only=True)
    return (
        bool(rows)
        and rows[0]["state"] == "canary"
        and '"candidate_weight":0.2' in (root / "traffic.json").read_text()
    )


def _ledger(root: Path) -> Any:
    from stagegate.events.store import EventStore

    return EventStore(f"sqlite:///{root / 'events.db'}")


def _cli(root: Path, api: str, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    import os

    full = {**os.environ, "STAGEGATE_HOME": str(root), "PREFECT_API_URL": api, **env}
    return subprocess.run(
        [sys.executable, "-m", "stagegate.cli", *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_one_promotion_of_a_model_at_a_time_on_a_prefect_server(
    workspace: dict, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    import signal

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.concurrency import limit_name, promotion_slot

    root, api = workspace["root"], prefect_server.api
    champion = workspace["info"]["champion_version"]
    name = limit_name(MODEL)
    policy = live_policy(tmp_path / "p.yaml", canary=ENDLESS_CANARY)
    first = promote_process(root, api, workspace["versions"]["better"], policy, tmp_path / "a.log", MODEL)
    try:
        wait_for(lambda: _in_canary(root) or first.poll() is not None, 180, "the first promotion's canary")
        assert first.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
        limit = _limit(api, name)  # created by the first promotion, its one slot held
        assert limit is not None and limit["limit"] == 1 and limit["active_slots"] == 1, limit
        before = _state(root)

        started = time.monotonic()
        second = _cli(
            root,
            api,
            *("promote", "--model", MODEL, "--version", workspace["versions"]["clickbait"]),
            *("--policy", str(policy)),
            STAGEGATE_PROMOTION_SLOT_TIMEOUT="3",
        )
        took = time.monotonic() - started
        assert second.returncode == 2, second.stdout + second.stderr[-3000:]
        last = second.stderr.strip().splitlines()[-1]
        assert f"holds the Prefect global concurrency limit {name!r}" in last, second.stderr[-3000:]
        assert "nothing moved" in last and "version" in last, last
        after = _state(root)
        assert after["aliases"] == before["aliases"] and after["split"] == before["split"]
        assert len(_ledger(root).promotions(MODEL)) == 1  # the refused one opened nothing
        print(f"the second promotion was refused in {took:.1f}s")

        # Another model's slot is not taken by this one.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            t0 = time.monotonic()
            with promotion_slot("another-model", _ledger(root)) as other:
                assert other == "stagegate-promote-another-model"
                assert _limit(api, other)["active_slots"] == 1
            assert time.monotonic() - t0 < 8
        assert _limit(api, "stagegate-promote-another-model")["active_slots"] == 0

        first.send_signal(signal.SIGTERM)  # it rolls back and ends; its slot is released
        assert first.wait(timeout=60) in (143, -signal.SIGTERM)
    finally:
        stop_group(first)
    assert _limit(api, name)["active_slots"] == 0
    state = _state(root)
    assert state["split"].champion == champion and state["split"].is_all_champion
    assert state["aliases"] == {"champion": champion, "candidate": None, "previous": None}
    assert _ledger(root).promotions(MODEL, open_only=True) == []


def test_prefect_server_restarted_mid_canary(
    workspace: dict, tmp_path: Path, prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is SIGKILLed while the candidate serves 20% and started again on the same database. The
    promotion ends (promoted or rolled back, or `stagegate reconcile` closes it), with the split, the
    aliases and the ledger agreeing, and the model's concurrency slot is not left stuck for the next one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.concurrency import limit_name, promotion_slot

    root, api = workspace["root"], prefect_server.api
    champion, version = workspace["info"]["champion_version"], workspace["versions"]["better"]
    # About a minute of looks (the simulated clock serves an hour a look), then the step's deadline.
    canary = {**ENDLESS_CANARY, "max_hours_per_step": 60}
    policy = live_policy(tmp_path / "p.yaml", canary=canary)
    log = tmp_path / "promote.log"
    proc = promote_process(root, api, version, policy, log, MODEL)
    try:
        wait_for(lambda: _in_canary(root) or proc.poll() is not None, 180, "the canary")
        assert proc.poll() is None, log.read_text()[-3000:]
        looks_before = len(_ledger(root).verdicts(_ledger(root).promotions(MODEL)[0]["id"]))
        prefect_server.kill()
        killed = time.monotonic()
        time.sleep(3)
        took = prefect_server.start()
        looks_at_restart = len(_ledger(root).verdicts(_ledger(root).promotions(MODEL)[0]["id"]))
        print(f"Prefect server down for {time.monotonic() - killed:.1f}s (restart {took:.1f}s)")
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        stop_group(proc)
    output = log.read_text(errors="replace")
    ledger = _ledger(root)
    [row] = ledger.promotions(MODEL)
    print(f"promote exit {code}, ledger {row['state']}: {row['reason']}")
    assert code is not None, f"the promotion did not end within 240 s of the restart: {output[-4000:]}"
    if row["state"] not in ("promoted", "rolled_back"):  # the process died: the reconciler closes it
        out = _cli(root, api, "reconcile")
        assert out.returncode == 0, out.stdout + out.stderr[-2000:]
        [row] = ledger.promotions(MODEL)
    assert row["state"] in ("promoted", "rolled_back"), (row, output[-4000:])
    state = _state(root)
    serving = version if row["state"] == "promoted" else champion
    assert state["split"].champion == serving and state["split"].is_all_champion, state["split"]
    assert state["aliases"]["champion"] == serving and state["aliases"]["candidate"] is None
    assert state["rt"].registry.get_version(MODEL, version).tags["stagegate.status"] == row["state"]
    # Nothing recorded was lost, and the canary kept looking through the outage and after it.
    assert len(ledger.verdicts(row["id"])) > looks_at_restart >= looks_before
    # The server forgot the slot's lease (kept in its memory): the next promotion still gets the slot.
    monkeypatch.setenv("STAGEGATE_PROMOTION_SLOT_TIMEOUT", "3")
    with temporary_settings(updates={PREFECT_API_URL: api}):
        t0 = time.monotonic()
        with promotion_slot(MODEL, ledger) as name:
            assert name == limit_name(MODEL) and _limit(api, name)["active_slots"] == 1
        print(f"the model's slot taken in {time.monotonic() - t0:.1f}s after the restart")
