"""Starting, stopping and waiting for the guardrail monitor (flows.monitor), without importing it.

The approval step (flows.approval) starts the monitor and waits for it; the monitor flow itself reuses the
promotion's roll-back task (flows.promote). Keeping the control here, apart from the monitor flow, is what
keeps ``promote -> approval -> monitor -> promote`` from being an import cycle: the monitor runs in another
process (a subprocess ``python -m flows.monitor`` or a deployment run), so nothing here needs its code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from flows.context import PromotionContext, runtime

DEPLOYMENT = "guardrail-monitor/guardrail-monitor"
MONITOR_APPROVER = "stagegate-guardrail-monitor"
WATCHED_STATES = frozenset({"awaiting_approval"})


def watched_stage(ctx: PromotionContext) -> str | None:
    """The stage whose traffic is live now: the last traffic stage the promotion entered, if any."""
    from stagegate.policy.schema import STAGE_ORDER

    entered = {t["to_state"] for t in runtime().events.transitions(ctx.promotion_id)}
    split = runtime().traffic.get_split()
    if split.candidate != ctx.version or not (split.candidate_weight > 0 or split.shadow):
        return None  # the candidate serves nobody and sees no mirrored request: nothing to watch
    for stage in reversed(STAGE_ORDER):
        if stage in ("shadow", "canary", "rollout") and stage in entered:
            return stage
    return None


@dataclass
class MonitorHandle:
    """A running monitor: a subprocess, or a flow run of the deployment."""

    kind: str
    process: subprocess.Popen | None = None
    flow_run_id: str | None = None
    log_path: str | None = None

    def stop(self) -> None:
        """End the monitor now (the promotion flow is failing and cannot wait for it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        elif self.flow_run_id is not None:
            _wait_flow_run(self.flow_run_id, timeout=0)

    def wait(self, timeout: float = 120.0) -> str:
        """Wait for the monitor to end (after the ledger told it to stop); kill or cancel it past timeout."""
        if self.process is not None:
            try:
                code = self.process.wait(timeout=timeout)
                return f"exited with {code}"
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
                return "killed after timeout"
        if self.flow_run_id is not None:
            return _wait_flow_run(self.flow_run_id, timeout)
        return "not started"


def _wait_flow_run(flow_run_id: str, timeout: float) -> str:
    from uuid import UUID

    from prefect import get_client
    from prefect.states import Cancelled

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is not None and run.state.is_final():
                return f"flow run {run.state.type.value.lower()}"
            if time.monotonic() > deadline:
                client.set_flow_run_state(UUID(flow_run_id), Cancelled(), force=True)
                return "cancelled after timeout"
            time.sleep(1.0)


def monitor_mode() -> str:
    """``STAGEGATE_MONITOR``: subprocess, deployment, off, or auto (the deployment if it exists)."""
    mode = os.environ.get("STAGEGATE_MONITOR", "auto")
    if mode != "auto":
        return mode
    if not os.environ.get("PREFECT_API_URL"):
        return "subprocess"
    try:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(DEPLOYMENT)
        return "deployment"
    except Exception:
        return "subprocess"


def current_api_url() -> str:
    """The Prefect API this process talks to (the temporary server's address on the embedded default)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


def monitor_parameters(
    promotion_id: str, stage: str, flow_run_id: str | None, interval: float
) -> dict[str, Any]:
    """The monitor deployment's flow-run parameters. Prefect stores them and shows them to anyone who can
    read its API or UI, so every URL goes without its password or secret query values
    (stagegate.redaction); the monitor takes the credentials from its own environment (flows.monitor)."""
    from stagegate.redaction import redact_url

    ws = runtime().workspace
    notify_url = os.environ.get("STAGEGATE_NOTIFY_URL")
    return {
        "promotion_id": promotion_id,
        "stage": stage,
        "interval_seconds": interval,
        "workspace": str(ws.root),
        "mlflow_uri": redact_url(ws.mlflow_uri),
        "events_url": redact_url(ws.events_url),
        "flow_run_id": flow_run_id,
        # announcements go where the promotion's own go
        "notify_url": redact_url(notify_url) if notify_url else None,
        "notify_block": os.environ.get("STAGEGATE_NOTIFY_BLOCK"),
    }


def start_monitor(
    ctx: PromotionContext, stage: str, flow_run_id: str | None, interval_seconds: float | None = None
) -> MonitorHandle:
    """Start watching ``stage``: the deployment on the stack, a subprocess otherwise."""
    interval = interval_seconds or float(os.environ.get("STAGEGATE_MONITOR_INTERVAL", "5"))
    ws = runtime().workspace
    params = monitor_parameters(ctx.promotion_id, stage, flow_run_id, interval)
    mode = monitor_mode()
    if mode == "off":
        return MonitorHandle("off")
    if mode == "deployment":
        from prefect.deployments import run_deployment

        run = run_deployment(DEPLOYMENT, parameters=params, timeout=0, as_subflow=False)
        return MonitorHandle("deployment", flow_run_id=str(run.id))
    env = dict(os.environ)
    env["PREFECT_API_URL"] = current_api_url()
    env["STAGEGATE_HOME"] = str(ws.root)
    log_dir = ws.root / "logs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"monitor-{ctx.promotion_id[:8]}-{stage}.log"
    args = [sys.executable, "-m", "flows.monitor", "--promotion-id", ctx.promotion_id, "--stage", stage]
    args += ["--interval", str(interval)]
    if flow_run_id:
        args += ["--flow-run-id", flow_run_id]
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    return MonitorHandle("subprocess", process=process, log_path=str(log_path))
