"""Faults of the servers around a promotion, on real servers (issue 11, items 3 and 10): `stagegate promote`
runs in its own process against a real Prefect server (not the temporary one), on the e2e workspace.

- the model's Prefect global concurrency limit: a second promotion of the model is refused, another
  model's slot is free, the slot frees when the promotion ends;
- the Prefect server killed and restarted mid-canary: the promotion continues or ends rolled back, never
  the candidate serving with an open ledger, and the model's slot is not left stuck;
- the router (`stagegate serve`) killed mid-canary: a bounded rollback hands over to reconcile;
- S3 (SeaweedFS, MLflow's artifact store) killed while the flow logs artifacts: rolled back, bounded.
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
    # Nothing recorded was lost, and the canary kept looking once the server was gone (on an idle machine
    # its 60 looks can end before the server is back; under load they go on after the restart).
    assert len(ledger.verdicts(row["id"])) > looks_before
    # The server forgot the slot's lease (kept in its memory): the next promotion still gets the slot.
    monkeypatch.setenv("STAGEGATE_PROMOTION_SLOT_TIMEOUT", "3")
    with temporary_settings(updates={PREFECT_API_URL: api}):
        t0 = time.monotonic()
        with promotion_slot(MODEL, ledger) as name:
            assert name == limit_name(MODEL) and _limit(api, name)["active_slots"] == 1
        print(f"the model's slot taken in {time.monotonic() - t0:.1f}s after the restart")


def test_router_killed_mid_canary(
    workspace: dict, tmp_path: Path, prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real router (`stagegate serve`, the ``http`` traffic port) is SIGKILLed while the candidate
    serves 20%. The flow's next look cannot read the split: the stage fails and the rollback tries to put
    the champion back (bounded), cannot reach the router, puts the aliases back and hands over: the ledger
    says rolled_back_pending, the process ends. The router, restarted from its state file, would serve the
    candidate's 20% again, so `stagegate reconcile` (or, on the stack, the reconcile deployment triggered by
    the failed run) rolls it back: everyone on the champion, the ledger closed, every verdict kept."""
    import os
    import signal

    import httpx
    import yaml

    from stagegate.stack import free_port
    from tests.router.test_serve import ServeProcess

    root, api = workspace["root"], prefect_server.api
    champion, version = workspace["info"]["champion_version"], workspace["versions"]["better"]
    token = "fault-test-router-token-0123456789"
    port = free_port()
    serve_args = [
        *("--model", MODEL, "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"),
        *("--state", str(tmp_path / "split.json"), "--port", str(port)),
    ]
    serve_env = {**os.environ, "STAGEGATE_ROUTER_TOKEN": token}
    router = ServeProcess(serve_args, serve_env)
    (root / "connections.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "traffic": {
                    "type": "http",
                    "base_url": router.url,
                    "token": {"env": "STAGEGATE_ROUTER_TOKEN"},
                    "timeout_seconds": 3,
                },
            }
        )
    )
    admin = {"Authorization": f"Bearer {token}"}

    def router_split() -> dict[str, Any]:
        return httpx.get(f"{router.url}/admin/split", headers=admin, timeout=5).json()

    policy = live_policy(tmp_path / "p.yaml", canary=ENDLESS_CANARY)
    log = tmp_path / "promote.log"
    monkeypatch.setenv("STAGEGATE_ROUTER_TOKEN", token)  # the connections file's token reference
    proc = promote_process(root, api, version, policy, log, MODEL)
    try:

        def in_canary() -> bool:
            rows = _ledger(root).promotions(MODEL, open_only=True)
            return bool(rows) and rows[0]["state"] == "canary" and router_split()["candidate_weight"] == 0.2

        wait_for(lambda: proc.poll() is not None or in_canary(), 180, "the canary on the router")
        assert proc.poll() is None, log.read_text()[-3000:]
        [row] = _ledger(root).promotions(MODEL)
        wait_for(lambda: len(_ledger(root).verdicts(row["id"])) > 0, 60, "a canary look")
        router.proc.send_signal(signal.SIGKILL)
        router.proc.wait(timeout=30)
        killed = time.monotonic()
        # Bounded: the rollback's rounds (3) of bounded calls; measured 10 s on an idle machine.
        code = proc.wait(timeout=300)
        ended_in = time.monotonic() - killed
    finally:
        stop_group(proc)
    output = log.read_text(errors="replace")
    print(f"the promote process ended {ended_in:.1f}s after the router was killed, exit {code}")
    assert code != 0, output[-3000:]
    row = _ledger(root).promotion(row["id"])
    assert row["state"] == "rolled_back_pending", (row, output[-3000:])  # handed over, not forgotten
    verdicts = len(_ledger(root).verdicts(row["id"]))
    assert verdicts > 0
    from stagegate.registry import Registry

    registry = Registry(f"sqlite:///{root / 'mlflow.db'}")  # reachable: aliases are back already
    assert registry.get_alias(MODEL, "candidate") is None
    assert registry.get_alias(MODEL, "champion").version == champion

    restarted = ServeProcess(serve_args, serve_env)  # same port, same state file
    try:
        assert router_split()["candidate_weight"] == 0.2  # what the killed router left: unsafe until...
        out = _cli(root, api, "reconcile")
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        split = router_split()
        assert split["champion"] == champion and split["candidate"] is None, split
        assert split["candidate_weight"] == 0.0 and not split["shadow"], split
    finally:
        restarted.stop()
    row = _ledger(root).promotion(row["id"])
    assert row["state"] == "rolled_back", row
    assert len(_ledger(root).verdicts(row["id"])) == verdicts
    assert registry.get_version(MODEL, version).tags["stagegate.status"] == "rolled_back"
    assert registry.get_alias(MODEL, "previous") is None


def test_s3_down_while_the_flow_logs_artifacts(
    workspace: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promotions' MLflow artifacts go to S3 (SeaweedFS, as on the stack); SeaweedFS is SIGKILLed once
    the canary serves. The next artifact upload fails: the look's verdicts are already in the ledger, the
    stage fails closed and rolls back (the registry and the split do not need S3). Bounded, nothing recorded
    lost, everyone on the champion, no candidate alias."""
    import os
    import signal
    import threading

    from mlflow import MlflowClient

    from flows.promote import promote
    from stagegate.stack import BUCKET, Stack, free_port
    from stagegate.workspace import Workspace

    root = workspace["root"]
    champion, version = workspace["info"]["champion_version"], workspace["versions"]["better"]
    s3 = Stack(Workspace(tmp_path / "s3"))
    port = free_port(grpc_too=True)
    s3._start_s3(port)  # the stack's own SeaweedFS start (`weed mini`, every port named, the bucket made)
    try:
        for key, value in {
            "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "stagegate",
            "AWS_SECRET_ACCESS_KEY": "stagegate",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
        name = f"stagegate/{MODEL}"
        assert client.get_experiment_by_name(name) is None
        client.create_experiment(name, artifact_location=f"s3://{BUCKET}/promotions")

        killed: dict[str, float] = {}

        def kill_s3_in_canary() -> None:
            def serving() -> bool:
                rows = _ledger(root).promotions(MODEL, open_only=True)
                return (
                    bool(rows) and rows[0]["state"] == "canary" and len(_ledger(root).verdicts(rows[0]["id"]))
                )

            wait_for(serving, 240, "the canary's first look")
            killed["looks"] = len(_ledger(root).verdicts(_ledger(root).promotions(MODEL)[0]["id"]))
            os.killpg(s3.pid("s3"), signal.SIGKILL)  # the SeaweedFS this test started
            killed["at"] = time.monotonic()

        watcher = threading.Thread(target=kill_s3_in_canary, daemon=True)
        watcher.start()
        # A canary that passes after some looks: its end writes the stage's verdict table to S3.
        canary = {**ENDLESS_CANARY, "steps": [{"weight": 20, "min_users": 60}]}
        policy = live_policy(tmp_path / "p.yaml", canary=canary)
        result = promote(model=MODEL, version=version, policy=str(policy))
        ended_in = time.monotonic() - killed["at"]
        watcher.join(5)
    finally:
        s3.down()
    print(
        f"S3 killed after {killed['looks']} verdicts; the promotion ended {ended_in:.1f}s later",
        result.reason,
    )
    assert result.outcome == "rolled_back" and result.stage == "canary", result.reason
    assert ended_in < 180, ended_in
    state = _state(root)
    assert state["split"].champion == champion and state["split"].is_all_champion
    assert state["aliases"] == {"champion": champion, "candidate": None, "previous": None}
    assert state["rt"].registry.get_version(MODEL, version).tags["stagegate.status"] == "rolled_back"
    row = _ledger(root).promotion(result.promotion_id)
    assert row["state"] == "rolled_back", row
    assert len(_ledger(root).verdicts(result.promotion_id)) >= killed["looks"]  # nothing recorded lost
    run = client.get_run(result.mlflow_run_id)  # the run's record is in the tracking store, not on S3
    assert run.data.tags["stagegate.outcome"] == "rolled_back", run.data.tags
