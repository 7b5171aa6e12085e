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
