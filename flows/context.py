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


@cache
def runtime() -> Runtime:
    """One Runtime per process, built from the environment (STAGEGATE_HOME, STAGEGATE_CONNECTIONS and
    friends), with every port's adapter built: a bad connections file or a missing secret fails at the
    first call (in ``open-promotion``, before anything moved)."""
    rt = Runtime.from_env()
    rt.build_ports()
    return rt
