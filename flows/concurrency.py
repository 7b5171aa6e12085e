"""One promotion of a model at a time, as a Prefect global concurrency limit (besides the ledger's lease).

On a Prefect server that is not the temporary one (``PREFECT_API_URL`` set: the stack, a team's server),
the promote flow holds one slot of the limit ``stagegate-promote-<model>`` (limit 1, created when missing)
for the whole promotion, so the limit shows in Prefect's UI which model is being promoted, and a second
promotion of the model is refused before it opens anything. The ledger's unique index over open promotions
stays the arbiter (it also guards promotions run without a server, and resumes); this is the guard an
operator sees and can tune in Prefect.

- **Refused**: a promotion that cannot get the slot within ``STAGEGATE_PROMOTION_SLOT_TIMEOUT`` seconds
  (default 10) raises :class:`PromotionSlotTaken` (a :class:`PromotionInProgress`: ``stagegate promote``
  exits 2 with its one-line message) naming the limit and the open promotion.
- **A stale slot**: slots are leased (60 s, renewed while the promotion runs), so a killed holder's slot
  expires by itself. Prefect's default lease storage is in the server's memory, though: a server restarted
  while a promotion held its slot forgets the lease but not the occupied slot, which then never frees.
  When the slot cannot be had and the ledger has no open promotion of the model, the slot is stale: it is
  reset (and logged) and taken. A failed lease renewal (the server restarting) never stops the promotion.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from stagegate.events.store import PromotionInProgress

log = logging.getLogger("stagegate.concurrency")

PREFIX = "stagegate-promote-"
LIMIT = 1
LEASE_SECONDS = 60.0  # the shortest lease Prefect's server accepts: a killed holder's slot frees soonest


class PromotionSlotTaken(PromotionInProgress):
    """The model's global concurrency slot is held by another promotion: refused before anything moved."""


def slot_timeout() -> float:
    return float(os.environ.get("STAGEGATE_PROMOTION_SLOT_TIMEOUT", "10"))


def limit_name(model: str) -> str:
    """The global concurrency limit of ``model`` (characters Prefect refuses in a name become ``-``)."""
    return PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", model)


def uses_prefect_server() -> bool:
    """True when flows run against a Prefect server of their own (``PREFECT_API_URL``), not the
    temporary one a process starts for itself (where a second process has a server of its own anyway)."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def ensure_limit(name: str) -> None:
    """Create the limit ``name`` (``LIMIT`` slots) unless it exists; an existing one is left as it is."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=LIMIT))
                log.info("created the global concurrency limit %s (limit %d)", name, LIMIT)
            except ObjectAlreadyExists:  # another promotion created it first
                pass


def _reset_stale(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))


def _refusal(model: str, name: str, open_ones: list[dict[str, Any]]) -> PromotionSlotTaken:
    holder = (
        f"promotion {open_ones[0]['id']} (version {open_ones[0]['version']}, {open_ones[0]['state']})"
        if open_ones
        else "another promotion"
    )
    return PromotionSlotTaken(
        f"{holder} of {model!r} holds the Prefect global concurrency limit {name!r} (1 promotion of a model "
        f"at a time): not started, nothing moved (waited {slot_timeout():g}s for the slot)",
        open_ones[0] if open_ones else None,
    )


@contextmanager
def promotion_slot(model: str, events: Any) -> Iterator[str | None]:
    """Hold ``model``'s slot for the ``with`` block (the limit's name), or nothing without a server of
    its own (None); :class:`PromotionSlotTaken` when another promotion holds it (module docstring).
    ``events`` is the ledger, read only when the slot cannot be had (is it held, or stale?)."""
    if not uses_prefect_server():
        yield None
        return
    from prefect.concurrency.sync import concurrency

    name = limit_name(model)
    ensure_limit(name)

    def take(stack: ExitStack) -> None:
        stack.enter_context(
            concurrency(
                name,
                occupy=1,
                timeout_seconds=slot_timeout(),
                lease_duration=LEASE_SECONDS,
                strict=True,
                raise_on_lease_renewal_failure=False,  # a server restarting must not cut the promotion
            )
        )

    with ExitStack() as stack:
        try:  # only the acquisition's TimeoutError is a refusal, never one raised by the promotion
            take(stack)
        except TimeoutError:
            open_ones = events.promotions(model, open_only=True)
            if open_ones:
                raise _refusal(model, name, open_ones) from None
            log.warning("the slot of %s is held but no promotion of %r is open: stale, reset", name, model)
            _reset_stale(name)
            try:
                take(stack)
            except TimeoutError:
                raise _refusal(model, name, events.promotions(model, open_only=True)) from None
        yield name
