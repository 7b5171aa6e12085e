"""The stack recovers a crashed promotion by itself: a promote run on the stack's worker is SIGKILLed
mid-canary, the worker reports it Crashed, the reconcile deployment's trigger starts a reconcile run for
it, and that run rolls the promotion back in the workspace the crashed run used. Nobody runs a command."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from simulator.setup import MODEL, RECIPES, init_workspace, register_candidate
from tests.e2e.test_promotion import FAST_STAGES, _state, write_policy
from tests.ops.servers import RunningStack

pytestmark = pytest.mark.slow


def _worker_log(stack: RunningStack, lines: int = 80) -> str:
    path = stack.stack.log_path("worker")
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def test_a_promote_run_killed_on_the_worker_is_rolled_back_by_the_reconcile_automation(
    stack: RunningStack, tmp_path: Path
) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from stagegate.events.store import EventStore

    root = tmp_path / "ws"
    info = init_workspace(size="small", root=root, seed=11)
    version = register_candidate(RECIPES / "better.yaml", MODEL, root=root)
    champion = info["champion_version"]
    endless = {  # the canary keeps looking: the kill lands while the candidate has 20%
        **FAST_STAGES["canary"],
        "steps": [{"weight": 20, "min_users": 10**8}],
        "batch_hours": 1,
        "max_hours_per_step": 10_000,
    }
    policy = write_policy(tmp_path / "p.yaml", canary=endless)
    # the run uses this workspace, not the worker's (its ledger, MLflow file and split)
    env = {
        "STAGEGATE_HOME": str(root),
        "STAGEGATE_MLFLOW_URI": f"sqlite:///{root / 'mlflow.db'}",
        "STAGEGATE_EVENTS_URL": f"sqlite:///{root / 'events.db'}",
    }
    with temporary_settings({PREFECT_API_URL: stack.api}):
        run = run_deployment(
            "promote/promote",
            parameters={"model": MODEL, "version": version, "policy": str(policy)},
            job_variables={"env": env},
            timeout=0,
        )
    store = EventStore(env["STAGEGATE_EVENTS_URL"])
    traffic = root / "traffic.json"
    deadline = time.monotonic() + 240
    row = None
    while time.monotonic() < deadline:
        open_ones = store.promotions(MODEL, open_only=True) if (root / "events.db").exists() else []
        if (
            open_ones
            and open_ones[0]["state"] == "canary"
            and '"candidate_weight":0.2' in traffic.read_text()
        ):
            row = open_ones[0]
            break
        time.sleep(0.5)
    assert row is not None, f"the promote run never reached the canary: {_worker_log(stack)}"
    pid = int(row["owner"].rsplit(":", 2)[1])  # the flow run's own process, on the worker
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    deadline = killed + 180
    while time.monotonic() < deadline and store.promotion(row["id"])["state"] != "rolled_back":
        time.sleep(1)
    took = time.monotonic() - killed
    final = store.promotion(row["id"])
    assert final["state"] == "rolled_back", (final, _worker_log(stack))
    assert "reconciled" in final["reason"], final["reason"]
    state = _state(root)
    assert state["split"].champion == champion and state["split"].is_all_champion
    assert state["aliases"] == {"champion": champion, "candidate": None, "previous": None}

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    # the reconcile run closed the ledger; it may still be finishing its bookkeeping (MLflow): wait for it
    with temporary_settings({PREFECT_API_URL: stack.api}):
        from prefect import get_client

        with get_client(sync_client=True) as client:
            crashed = client.read_flow_run(run.id)
            until = time.monotonic() + 90
            while True:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["reconcile"]))
                )
                mine = [r for r in runs if str(run.id) in str(r.parameters.get("crashed_flow_run"))]
                if any(r.state.is_completed() for r in mine) or time.monotonic() > until:
                    break
                time.sleep(1)
    assert crashed.state.is_crashed(), crashed.state
    assert any(r.state.is_completed() for r in mine), [(r.parameters, r.state) for r in runs]
    print(f"SIGKILL of the promote run to rolled_back by the automation: {took:.1f}s")
