"""Announcements: a promotion paused for approval, an approval refused, a rollback, a promotion.

Every announcement goes two ways, so that either a stack operator or the pipeline itself can route it:

1. a Prefect event ``stagegate.promotion.<kind>`` on the resource ``stagegate.promotion.<id>``. On the
   stack, ``stagegate up --notify-url URL`` (:func:`ensure_notification_automation`) saves a Webhook
   block and an automation that calls it for every such event: the Prefect server does the sending.
2. a direct call of a Prefect Webhook block, when this process is told which one: ``STAGEGATE_NOTIFY_BLOCK``
   (the name of a saved Webhook block) or ``STAGEGATE_NOTIFY_URL`` (an unsaved block for that URL).

A notification that cannot be sent is logged and never stops a promotion or a rollback.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

KINDS = (
    "paused",
    "approved",
    "approval_refused",
    "rejected",
    "rolled_back",
    "promoted",
    "monitor_breach",
    "rollback_incomplete",  # traffic or the registry could not be put back and verified: a person must look
)
EVENT_PREFIX = "stagegate.promotion."
AUTOMATION_NAME = "stagegate-notifications"
BLOCK_NAME = "stagegate-notify"
# The automation's payload: the same JSON document the direct call sends, rendered by the Prefect server.
AUTOMATION_PAYLOAD = (
    '{"source": "automation", "event": {{ event.event | tojson }}, '
    '"resource": {{ event.resource.id | tojson }}, "occurred": {{ event.occurred | string | tojson }}, '
    '"payload": {{ event.payload | tojson }}}'
)

_log = logging.getLogger("stagegate.notify")


def _logger() -> Any:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # outside a flow or task run (the CLI, the monitor's helpers)
        return _log


def notification(kind: str, *, promotion_id: str, model: str, version: str, message: str, **details: Any):
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}; known: {', '.join(KINDS)}")
    return {
        "event": EVENT_PREFIX + kind,
        "kind": kind,
        "promotion_id": promotion_id,
        "model": model,
        "version": str(version),
        "message": message,
        "at": datetime.now(UTC).isoformat(),
        **{k: v for k, v in details.items() if v is not None},
    }


def _webhook_block() -> Any | None:
    from prefect.blocks.webhook import Webhook

    if name := os.environ.get("STAGEGATE_NOTIFY_BLOCK"):
        return Webhook.load(name)
    if url := os.environ.get("STAGEGATE_NOTIFY_URL"):
        return Webhook(url=url)
    return None


def notify(kind: str, *, promotion_id: str, model: str, version: str, message: str, **details: Any) -> dict:
    """Announce ``kind`` for a promotion; returns the payload. Never raises."""
    payload = notification(
        kind, promotion_id=promotion_id, model=model, version=version, message=message, **details
    )
    logger = _logger()
    try:
        from prefect.events import emit_event

        emit_event(
            event=payload["event"],
            resource={
                "prefect.resource.id": f"stagegate.promotion.{promotion_id}",
                "prefect.resource.name": f"{model} v{version}",
                "stagegate.model": model,
            },
            payload=payload,
        )
    except Exception as exc:  # an event that cannot be sent must not stop a rollback
        logger.warning("could not emit Prefect event %s: %r", payload["event"], exc)
    try:
        block = _webhook_block()
        if block is not None:
            from prefect.utilities.asyncutils import run_coro_as_sync

            response = run_coro_as_sync(block.call(payload))
            if response is not None and response.status_code >= 400:
                logger.warning("notification %s answered HTTP %s", kind, response.status_code)
    except Exception as exc:
        logger.warning("could not send notification %s: %r", kind, exc)
    return payload


def ensure_notification_automation(url: str, block_name: str = BLOCK_NAME) -> tuple[str, str]:
    """Save a Webhook block for ``url`` and an automation that calls it on every stagegate event.

    Idempotent: an existing automation of the same name is replaced. Returns (block id, automation id).
    The server's triggers service loads the automation shortly after this returns (asynchronously); an
    event that reaches the server before then is not evaluated against it.
    """
    from prefect.automations import Automation, CallWebhook, EventTrigger, Posture
    from prefect.blocks.webhook import Webhook

    block_id = Webhook(url=url).save(block_name, overwrite=True)
    while True:  # replace, never duplicate
        try:
            Automation.read(name=AUTOMATION_NAME).delete()
        except ValueError:  # "not found"
            break
    automation = Automation(
        name=AUTOMATION_NAME,
        description="stagegate: pauses for approval, refused approvers, rollbacks and promotions",
        trigger=EventTrigger(
            expect={EVENT_PREFIX + "*"},
            match={"prefect.resource.id": "stagegate.promotion.*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[CallWebhook(block_document_id=block_id, payload=AUTOMATION_PAYLOAD)],
    ).create()
    return str(block_id), str(automation.id)
