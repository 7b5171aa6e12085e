"""The guardrail monitor watches the canary while the promotion waits for approval, and rolls back on a
breach even then: as the stack's deployment (run on the process worker) and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.ops.servers import CLI, REPO, Promo, Receiver, RunningStack, make_promo

pytestmark = pytest.mark.slow

CANARY = {
    "canary": {
        "steps": [{"weight": 50}],
        "gates": [{"type": "guardrail", "metric": "error_rate", "max": 0.02, "on_fail": "rollback"}],
    },
    "rollout": {"bake": "0s"},
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _start(promo: Promo, candidate_error: float, mode: str) -> subprocess.Popen:
    env = {**promo.env, "STAGEGATE_MONITOR": mode, "STAGEGATE_MONITOR_INTERVAL": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ops.paused_canary",
            promo.model,
            str(promo.policy),
            str(candidate_error),
        ],
        env=env,
        cwd=str(promo.root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _answer(process: subprocess.Popen, timeout: float = 120) -> tuple[dict, str]:
    out, _ = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert process.returncode == 0 and lines, out[-4000:]
    return json.loads(lines[-1]), out


def test_breach_while_paused_rolls_back_through_the_deployment(
    stack: RunningStack, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> None:
    promo = make_promo(
        tmp_path_factory.mktemp("monitor"),
        stack,
        approvers=["alice"],
        stages=CANARY,
        extra_env={"STAGEGATE_NOTIFY_URL": receiver.url},
    )
    started = time.monotonic()
    answer, out = _answer(_start(promo, candidate_error=0.08, mode="deployment"))
    took = time.monotonic() - started
    # Nobody answered: the monitor rolled back, then woke the paused flow, which only closes its records.
    assert answer["approved"] is False and answer["ended_as"] == "rolled_back", out[-3000:]
    assert answer["approver"] == "stagegate-guardrail-monitor"
    assert "guardrail monitor" in answer["reason"] and "error_rate" in answer["reason"]
    rt = promo.runtime()
    pid = answer["promotion_id"]
    states = [t["to_state"] for t in rt.events.transitions(pid)]
    assert states[-3:] == ["awaiting_approval", "rolled_back_pending", "rolled_back"], states
    split = rt.traffic.get_split()
    assert split.is_all_champion and split.champion == "1" and split.candidate_weight == 0.0
    assert rt.registry.get_alias(promo.model, "candidate") is None
    assert rt.registry.get_alias(promo.model, "champion").version == "1"
    assert rt.registry.get_version(promo.model, "2").tags["stagegate.status"] == "rolled_back"
    verdicts = rt.events.verdicts(pid, "canary/monitor")
    assert not verdicts.empty and verdicts.iloc[-1]["outcome"] == "FAIL"
    assert verdicts.iloc[-1]["action"] == "rollback"
    # the verdict was persisted before the rollback began
    pending_at = next(t["at"] for t in rt.events.transitions(pid) if t["to_state"] == "rolled_back_pending")
    assert verdicts.iloc[-1]["at"] <= pending_at
    run = rt.registry.client.get_run(rt.events.promotion(pid)["mlflow_run_id"])
    assert "error_rate" in run.data.tags["stagegate.monitor.breach"]
    assert receiver.wait_for(lambda r: r.get("promotion_id") == pid and r.get("by") == "guardrail-monitor")
    # the monitor ran as a flow run of the guardrail-monitor deployment, on the worker
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["guardrail-monitor"]))
        )
    mine = [r for r in runs if r.parameters.get("promotion_id") == pid]
    assert len(mine) == 1 and mine[0].state.is_completed(), [(r.parameters, r.state) for r in mine]
    print(f"breach to closed records: {took:.1f}s")


def test_monitor_stops_when_the_approver_answers(
    stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    promo = make_promo(tmp_path_factory.mktemp("monitor"), stack, approvers=["alice"], stages=CANARY)
    process = _start(promo, candidate_error=0.0, mode="subprocess")
    rt = promo.runtime()
    deadline = time.monotonic() + 90
    looks = None
    while time.monotonic() < deadline:  # wait until the monitor has judged at least twice
        rows = rt.events.promotions(promo.model)
        if rows:
            looks = rt.events.verdicts(rows[0]["id"], "canary/monitor")
            if len(looks) >= 2:
                break
        time.sleep(0.5)
    assert looks is not None and len(looks) >= 2, process.stdout.read() if process.poll() is not None else ""
    assert (looks["outcome"] == "PASS").all()
    flow_run = rows[0]["flow_run_id"] or _paused_flow_run(stack, promo)
    done = subprocess.run(
        [
            *CLI,
            "approve",
            flow_run,
            "--approver",
            "alice",
            "--token",
            promo.tokens["alice"],
            "--reason",
            "ok",
        ],
        env=promo.env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer, _ = _answer(process)
    assert answer == {**answer, "approved": True, "approver": "alice", "ended_as": None}
    pid = answer["promotion_id"]
    assert rt.events.promotion(pid)["state"] == "approval_granted"
    split = rt.traffic.get_split()
    assert split.candidate == "2" and split.candidate_weight == 0.5  # the monitor did not touch traffic
    log = next((promo.root / "logs").glob("monitor-*.log")).read_text()
    assert "stopped watching" in log, log[-3000:]


def _paused_flow_run(stack: RunningStack, promo: Promo) -> str:
    import urllib.request

    body = json.dumps({"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}).encode()
    request = urllib.request.Request(
        f"{stack.api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        for run in json.loads(response.read()):
            if run.get("parameters", {}).get("model") == promo.model:
                return run["id"]
    raise AssertionError("no paused run")


def test_the_monitor_rolls_back_when_the_waiting_promotion_is_killed(
    stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGKILL of the promotion that waits for approval: its flow run stays Paused, but its lease's owner
    is gone, so the orphaned monitor rolls back (traffic to the champion, the ledger closed) at its next
    look instead of serving the candidate until the pause times out."""
    promo = make_promo(tmp_path_factory.mktemp("orphan"), stack, approvers=["alice"], stages=CANARY)
    process = _start(promo, candidate_error=0.0, mode="subprocess")
    rt = promo.runtime()
    deadline = time.monotonic() + 90
    rows: list = []
    while time.monotonic() < deadline:  # the monitor is watching: it has judged a look
        rows = rt.events.promotions(promo.model)
        if rows and len(rt.events.verdicts(rows[0]["id"], "canary/monitor")) >= 1:
            break
        time.sleep(0.5)
    else:
        pytest.fail(process.stdout.read() if process.poll() is not None else "the monitor never looked")
    assert rt.traffic.get_split().candidate_weight == 0.5
    process.kill()
    process.wait(timeout=30)
    killed = time.monotonic()
    pid = rows[0]["id"]
    while time.monotonic() < killed + 60 and rt.events.promotion(pid)["state"] != "rolled_back":
        time.sleep(0.5)
    took = time.monotonic() - killed
    row = rt.events.promotion(pid)
    log = next((promo.root / "logs").glob("monitor-*.log")).read_text()
    assert row["state"] == "rolled_back", (row["state"], log[-3000:])
    assert "abandoned" in row["reason"] and "is gone" in row["reason"], row["reason"]
    split = rt.traffic.get_split()
    assert split.champion == "1" and split.is_all_champion
    print(f"promotion killed to rolled back by its monitor: {took:.1f}s")
