"""The Python deployments (flows/deployments.py) and infra/prefect.yaml declare the same flows."""

from __future__ import annotations

import yaml

from flows.deployments import ENTRYPOINTS, deployments
from flows.monitor import DEPLOYMENT
from tests.ops.servers import REPO


def test_prefect_yaml_and_python_agree() -> None:
    declared = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in declared["deployments"]}
    assert {name: d["entrypoint"] for name, d in by_name.items()} == ENTRYPOINTS
    assert all(d["work_pool"]["name"] == "stagegate" for d in by_name.values())
    built = {d.name: d for d in deployments()}
    assert set(built) == set(ENTRYPOINTS)
    # the promotion flow starts the monitor by this name
    flow_name, deployment_name = DEPLOYMENT.split("/")
    assert built[deployment_name].flow_name == flow_name
    for name, entrypoint in ENTRYPOINTS.items():
        path, func = entrypoint.split(":")
        assert f"def {func}(" in (REPO / path).read_text(), (name, entrypoint)


def test_reconcile_runs_on_a_schedule_and_on_crashed_or_failed_promote_runs() -> None:
    from flows.deployments import RECONCILE_EVERY, WATCHED_FLOWS

    declared = {
        d["name"]: d for d in yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())["deployments"]
    }
    reconcile = declared["reconcile"]
    assert reconcile["schedules"] == [{"interval": RECONCILE_EVERY}]
    [trigger] = reconcile["triggers"]
    assert set(trigger["expect"]) == {"prefect.flow-run.Crashed", "prefect.flow-run.Failed"}
    assert trigger["match_related"] == {
        "prefect.resource.role": "flow",
        "prefect.resource.name": WATCHED_FLOWS,
    }
    built = {d.name: d for d in deployments()}["reconcile"]
    [python_trigger] = built.triggers
    assert python_trigger.expect == set(trigger["expect"])
    assert (
        python_trigger.parameters == trigger["parameters"] == {"crashed_flow_run": "{{ event.resource.id }}"}
    )
    assert built.schedules[0].schedule.interval.total_seconds() == RECONCILE_EVERY
    # the flows it watches are named so
    for path, name in (("flows/promote.py", "promote"), ("flows/resume.py", "resume-promotion")):
        assert f'@flow(name="{name}"' in (REPO / path).read_text()
