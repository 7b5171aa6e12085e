"""A rollback that stays unverified after its retries is announced (kind ``rollback_incomplete``) before
the roll-back task fails: the automation that rolls back at night must wake someone when it cannot."""

from __future__ import annotations

from typing import Any

import pytest

import flows.promote as promote_module
from flows.context import PromotionContext
from stagegate.policy import parse_policy
from stagegate.rollback import RollbackIncomplete, RollbackReport
from tests.ops.servers import Receiver


def test_an_unverified_rollback_is_announced_then_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver()
    monkeypatch.setenv("STAGEGATE_NOTIFY_URL", receiver.url)
    monkeypatch.delenv("STAGEGATE_NOTIFY_BLOCK", raising=False)
    # the Prefect event cannot be sent here (nothing listens): the webhook still gets the announcement
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    report = RollbackReport("p-1", "rolled_back", traffic_ok=True, problems=["round 3: registry down"])

    def unverified(*args: Any, **kwargs: Any) -> Any:
        raise RollbackIncomplete("rollback of promotion p-1 not verified after 3 rounds", report)

    monkeypatch.setattr(promote_module, "_roll_back_with_runtime", unverified)
    ctx = PromotionContext(
        promotion_id="p-1",
        model="ranker",
        version="2",
        champion_version="1",
        policy=parse_policy({"model": "ranker", "approvals": "auto", "stages": {}}),
        policy_path="p.yaml",
        mlflow_run_id="run",
    )
    try:
        with pytest.raises(RollbackIncomplete):
            promote_module.roll_back.fn(ctx, "canary", "guardrail breach", "rolled_back")
        [sent] = receiver.wait_for(lambda r: r.get("kind") == "rollback_incomplete")
    finally:
        receiver.close()
    assert sent["promotion_id"] == "p-1" and "not verified" in sent["message"]
    assert sent["problems"] == ["round 3: registry down"]
