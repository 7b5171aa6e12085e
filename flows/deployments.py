"""stagegate's Prefect deployments, in Python: the same two that infra/prefect.yaml declares.

- ``promote/promote``: flows/promote.py, the promotion flow.
- ``guardrail-monitor/guardrail-monitor``: flows/monitor.py, started by the promotion flow at every approval
  point (``run_deployment(..., timeout=0)``), because a paused flow cannot act.

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
}


def deployments() -> list[Any]:
    """RunnerDeployments of both flows, for ``prefect.serve``."""
    from flows.monitor import guardrail_monitor
    from flows.promote import promote

    return [
        promote.to_deployment(
            name="promote", tags=["stagegate"], parameters={"policy": "policies/default.yaml"}
        ),
        guardrail_monitor.to_deployment(name=MONITOR_DEPLOYMENT.split("/", 1)[1], tags=["stagegate"]),
    ]


def serve() -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*deployments())


if __name__ == "__main__":
    serve()
