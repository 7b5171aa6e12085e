"""stagegate's Prefect deployments, in Python: the same three that infra/prefect.yaml declares.

- ``promote/promote``: flows/promote.py, the promotion flow.
- ``guardrail-monitor/guardrail-monitor``: flows/monitor.py, started by the promotion flow at every approval
  point (``run_deployment(..., timeout=0)``), because a paused flow cannot act.
- ``reconcile/reconcile``: flows/reconcile.py, every 5 minutes and, through its trigger's automation, when a
  promote or resume-promotion run ends Crashed or Failed.

``stagegate up`` applies infra/prefect.yaml for its process worker. Without a worker,
``python -m flows.deployments`` serves both deployments from this process (``prefect.serve``); runs start
within about a second with ``PREFECT_RUNNER_POLL_FREQUENCY=1``. ``serve`` pauses its deployments on SIGTERM.
"""

from __future__ import annotations

from typing import Any

from flows.monitor import DEPLOYMENT as MONITOR_DEPLOYMENT

#: deployment name -> entry point (the same as in infra/prefect.yaml)
ENTRYPOINTS = {
    "promote": "flows/promote.py:promote",
    "guardrail-monitor": "flows/monitor.py:guardrail_monitor",
    "reconcile": "flows/reconcile.py:reconcile_flow",
}
RECONCILE_EVERY = 300  # seconds between scheduled reconciles (infra/prefect.yaml says the same)
#: the flows whose Crashed or Failed runs start a reconcile at once
WATCHED_FLOWS = ["promote", "resume-promotion"]


def reconcile_trigger() -> Any:
    """The reconcile deployment's trigger: a promote or resume run that ended Crashed or Failed."""
    from prefect.events import DeploymentEventTrigger

    from flows.reconcile import trigger_parameters

    return DeploymentEventTrigger(
        expect={"prefect.flow-run.Crashed", "prefect.flow-run.Failed"},
        match_related={"prefect.resource.role": "flow", "prefect.resource.name": WATCHED_FLOWS},
        parameters=trigger_parameters(),
    )


def deployments() -> list[Any]:
    """RunnerDeployments of the three flows, for ``prefect.serve``."""
    from flows.monitor import guardrail_monitor
    from flows.promote import promote
    from flows.reconcile import reconcile_flow

    return [
        promote.to_deployment(
            name="promote", tags=["stagegate"], parameters={"policy": "policies/default.yaml"}
        ),
        guardrail_monitor.to_deployment(name=MONITOR_DEPLOYMENT.split("/", 1)[1], tags=["stagegate"]),
        reconcile_flow.to_deployment(
            name="reconcile", tags=["stagegate"], interval=RECONCILE_EVERY, triggers=[reconcile_trigger()]
        ),
    ]


def serve() -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*deployments())


if __name__ == "__main__":
    serve()
