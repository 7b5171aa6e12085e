"""`stagegate reconcile` as a Prefect flow, so that the stack recovers abandoned promotions by itself.

The deployment ``reconcile/reconcile`` (infra/prefect.yaml, flows/deployments.py) runs:

- on a schedule (every 5 minutes), over the worker's workspace: whatever crashed with nobody watching,
  including a promote process killed outside Prefect, is closed within one interval of its lease lapsing;
- on a trigger: the automation that the deployment's trigger creates starts it when a ``promote`` or
  ``resume-promotion`` flow run ends Crashed or Failed, with that run's id. It then reconciles the
  workspace *that run* used (the ``STAGEGATE_*`` variables of its job variables, else the worker's),
  so a promotion started with its own workspace is recovered in it.

What it does is :func:`stagegate.reconcile.reconcile`: a promotion whose lease expired, or whose owner
process on this host is gone, is rolled back from the ledger alone, or resumed where its policy says
``on_crash: resume`` (the resumed promotion runs in this flow run, as a subflow). A promotion whose owner
still holds a live lease is left alone, so a trigger that fires early does nothing harmful.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger

WORKSPACE_VARIABLES = (
    "STAGEGATE_HOME",
    "STAGEGATE_MLFLOW_URI",
    "STAGEGATE_EVENTS_URL",
    "STAGEGATE_CONNECTIONS",
)
FLOW_RUN_PREFIX = "prefect.flow-run."


def workspace_of(flow_run_id: str) -> dict[str, str]:
    """The ``STAGEGATE_*`` workspace variables a flow run was started with (its job variables' env)."""
    from uuid import UUID

    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id.removeprefix(FLOW_RUN_PREFIX)))
    env = (run.job_variables or {}).get("env") or {}
    return {k: str(v) for k, v in env.items() if k in WORKSPACE_VARIABLES and v}


@flow(name="reconcile", log_prints=True)
def reconcile_flow(model: str | None = None, crashed_flow_run: str | None = None) -> list[str]:
    """Close the abandoned promotions of ``model`` (default: every model); with ``crashed_flow_run`` (set
    by the automation), in the workspace that flow run used. Returns one line per promotion acted on."""
    from flows.context import runtime
    from flows.resume import resume_outcome
    from stagegate.reconcile import reconcile

    logger = get_run_logger()
    if crashed_flow_run:
        found = workspace_of(crashed_flow_run)
        logger.info(
            "flow run %s ended badly; reconciling its workspace %s",
            crashed_flow_run,
            found or "(the worker's)",
        )
        os.environ.update(found)
        runtime.cache_clear()  # the workspace may have changed: build the ports anew
    results = reconcile(runtime(), model, resume=resume_outcome)
    lines = [result.line() for result in results]
    for line in lines:
        logger.info("reconcile: %s", line)
    if not lines:
        logger.info("nothing to reconcile: every open promotion holds a live lease")
    return lines


def trigger_parameters() -> dict[str, Any]:
    """The automation's parameters: the id of the run whose Crashed or Failed event fired it."""
    return {"crashed_flow_run": "{{ event.resource.id }}"}
