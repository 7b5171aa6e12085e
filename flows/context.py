"""What every stage of one promotion knows, and the process-wide services it talks to."""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel, ConfigDict

from stagegate.policy import Policy
from stagegate.runtime import Runtime


class PromotionContext(BaseModel):
    """Serializable (Prefect shows it as the stage subflows' parameters)."""

    model_config = ConfigDict(frozen=True)

    promotion_id: str
    model: str
    version: str
    champion_version: str | None
    policy: Policy
    policy_path: str
    mlflow_run_id: str

    @property
    def absolute_only(self) -> bool:
        return self.champion_version is None


# The ports each stage reads through (stagegate.ports); traffic is always needed, because a rollback from any
# stage puts the champion back. The guardrail monitor runs inside shadow, canary and rollout.
STAGE_PORTS: dict[str, frozenset[str]] = {
    "offline": frozenset({"offline_data"}),
    "simulation": frozenset({"offline_data"}),
    "shadow": frozenset({"metrics", "clock"}),
    "canary": frozenset({"metrics", "clock"}),
    "rollout": frozenset({"metrics", "clock"}),
}


def ports_for(policy: Policy) -> frozenset[str]:
    """The ports a promotion under ``policy`` uses: traffic, plus those of each stage it configures."""
    used = {"traffic"}
    for name, _ in policy.stages.configured():
        used |= STAGE_PORTS[name]
    return frozenset(used)


#: The stages that judge live traffic through the MetricSource port.
TRAFFIC_STAGES = ("shadow", "canary", "rollout")


def check_metric_source(rt: Runtime, policy: Policy) -> None:
    """Refuse a policy whose traffic-stage gates the metric source in force cannot feed (UnjudgeableGates
    naming each gate and why), before anything moves; a source without ``check_gates`` feeds every gate."""
    check = getattr(rt.metrics, "check_gates", None)
    if check is None:
        return
    from stagegate.policy.gates import configure_stage

    for name, stage in policy.stages.configured():
        if name in TRAFFIC_STAGES and stage.gates:
            check(configure_stage(stage).gates)


@cache
def runtime() -> Runtime:
    """One Runtime per process, built from the environment (STAGEGATE_HOME, STAGEGATE_CONNECTIONS and
    friends); a connections file that does not validate fails at the first call. Adapters are built when
    first used; ``open-promotion`` builds the ones its policy needs before anything moves
    (Runtime.build_ports with :func:`ports_for`)."""
    return Runtime.from_env()
