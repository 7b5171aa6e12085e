"""Announcements reach a local HTTP receiver: through a Prefect Webhook block called by the pipeline, and
through a Prefect automation on the stack's server that calls a saved Webhook block on stagegate events."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flows.notify import AUTOMATION_NAME, notification, notify
from tests.ops.servers import Receiver, RunningStack, free_port_url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def on_stack(stack: RunningStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStack]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("STAGEGATE_NOTIFY_URL", raising=False)
    monkeypatch.delenv("STAGEGATE_NOTIFY_BLOCK", raising=False)
    with temporary_settings({PREFECT_API_URL: stack.api}):
        yield stack


def test_webhook_block_posts_the_announcement(
    on_stack: RunningStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEGATE_NOTIFY_URL", receiver.url)
    sent = notify(
        "rolled_back", promotion_id="p-1", model="m", version="7", message="canary breach", stage="canary"
    )
    (got,) = receiver.wait_for(lambda r: r.get("promotion_id") == "p-1", timeout=10)
    assert got == sent
    assert got["event"] == "stagegate.promotion.rolled_back" and got["stage"] == "canary"


def test_a_saved_block_by_name(
    on_stack: RunningStack, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.webhook import Webhook

    Webhook(url=receiver.url).save("stagegate-test-hook", overwrite=True)
    monkeypatch.setenv("STAGEGATE_NOTIFY_BLOCK", "stagegate-test-hook")
    notify("promoted", promotion_id="p-2", model="m", version="8", message="every stage passed")
    (got,) = receiver.wait_for(lambda r: r.get("promotion_id") == "p-2", timeout=10)
    assert got["kind"] == "promoted"


def test_an_unreachable_receiver_never_stops_the_pipeline(
    on_stack: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEGATE_NOTIFY_URL", free_port_url())
    payload = notify("paused", promotion_id="p-3", model="m", version="9", message="waiting")
    assert payload["kind"] == "paused"
    with pytest.raises(ValueError, match="unknown notification kind"):
        notification("exploded", promotion_id="p", model="m", version="1", message="")


def test_automation_calls_the_webhook_on_stagegate_events(on_stack: RunningStack, receiver: Receiver) -> None:
    from prefect.automations import Automation

    from flows.notify import ensure_notification_automation

    ensure_notification_automation(receiver.url)
    ensure_notification_automation(receiver.url)  # idempotent: replaced, never duplicated
    try:
        _wait_until_the_automation_is_live(receiver)
        notify("paused", promotion_id="p-4", model="m", version="10", message="waits for approval")
        (got,) = receiver.wait_for(
            lambda r: r.get("source") == "automation" and r.get("resource") == "stagegate.promotion.p-4",
            timeout=60,
        )
        assert got["event"] == "stagegate.promotion.paused"
        assert got["resource"] == "stagegate.promotion.p-4"
        assert got["payload"]["message"] == "waits for approval"
    finally:
        Automation.read(name=AUTOMATION_NAME).delete()


def _wait_until_the_automation_is_live(receiver: Receiver, timeout: float = 60.0) -> None:
    """Until the server's automation has called the receiver for a probe event.

    The server's triggers service loads a new automation asynchronously, after `POST /automations/` has
    answered (on PostgreSQL through a NOTIFY, or at its next reconciliation every few seconds), and it
    evaluates an event against the automations loaded when the event arrives, once: an event sent right
    after the automation was created (over an events websocket already open) can pass before the
    automation is loaded and is then never acted on. The probes are announcements of their own promotion.
    """
    import time
    import uuid

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        notify("paused", promotion_id=probe, model="m", version="0", message="probe")
        resource = f"stagegate.promotion.{probe}"
        try:
            receiver.wait_for(lambda r, resource=resource: r.get("resource") == resource, timeout=3)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the automation never called the receiver within {timeout}s: {receiver.received}")
