"""A release manager in the Prefect UI: headless Chromium (Debian's, driven by Playwright through its
executable path) opens the paused promotion, presses Resume, fills the approval form and submits it.
One run is approved and goes on to promotion; a second is rejected and rolls back. Screenshots of every
step are kept in test-output/browser/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stagegate.cli import NOT_PROMOTED
from tests.browser.chromium import chromium
from tests.ops.servers import (
    OUTPUT,
    Promo,
    RunningStack,
    finish,
    log_tail,
    make_promo,
    paused_run,
    start_promotion,
)

pytestmark = pytest.mark.slow

SHOTS = OUTPUT / "browser"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="module")
def promos(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Promo]:
    base = tmp_path_factory.mktemp("browser")
    made = {
        "approve": make_promo(base, stack, approvers=["release-manager"]),
        "reject": make_promo(base, stack, approvers=["release-manager"]),
    }
    for promo in made.values():
        start_promotion(promo)
    return made


def choose_decision(page: Any, dialog: Any, decision: str) -> None:
    """The form's decision: a required choice with no default, Prefect's own select (prefect-design). Its
    list opens from the keyboard (ArrowDown; a click on it did not open it here): pick, then read back."""
    control = dialog.locator(".p-select-button__control").first
    assert control.inner_text().strip() == "", "the decision must start empty (no default)"
    control.focus()
    control.press("ArrowDown")
    page.get_by_text(decision, exact=True).last.click()  # the option in the list that opened
    page.wait_for_timeout(300)
    assert control.inner_text().strip() == decision, control.inner_text()


def answer_in_ui(
    context: object, stack: RunningStack, run: str, approve: bool, reason: str, name: str, token: str
) -> None:
    page = context.new_page()  # type: ignore[attr-defined]
    try:
        page.goto(f"{stack.ui}/runs/flow-run/{run}")
        resume = page.get_by_role("button", name="Resume")
        resume.wait_for(timeout=30_000)
        page.screenshot(path=str(SHOTS / f"{name}-1-paused.png"))
        resume.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Evidence report").wait_for(timeout=15_000)
        page.screenshot(path=str(SHOTS / f"{name}-2-empty-form.png"))
        # submitted unchanged, the form is refused in the page: nothing is sent, nothing is decided
        dialog.get_by_role("button", name="Submit").click()
        page.wait_for_timeout(1500)
        assert dialog.is_visible(), "an empty approval form was accepted"
        page.screenshot(path=str(SHOTS / f"{name}-2-empty-form-refused.png"))
        choose_decision(page, dialog, "approve" if approve else "reject")
        boxes = dialog.locator("textarea")
        boxes.nth(0).fill("release-manager")
        # the token field: a password input if Prefect honours the schema's format, else the second text box
        secret = dialog.locator("input[type=password]")
        (secret.first if secret.count() else boxes.nth(1)).fill(token)
        boxes.nth(boxes.count() - 1).fill(reason)
        page.screenshot(path=str(SHOTS / f"{name}-2-form.png"))
        dialog.get_by_role("button", name="Submit").click()
        dialog.wait_for(state="hidden", timeout=15_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / f"{name}-3-submitted.png"))
    except Exception:
        page.screenshot(path=str(SHOTS / f"{name}-failure.png"), full_page=True)
        (SHOTS / f"{name}-failure.html").write_text(page.content(), encoding="utf-8")
        raise
    finally:
        page.close()


def test_approve_in_the_ui(stack: RunningStack, promos: dict[str, Promo], browser: object) -> None:
    promo = promos["approve"]
    run = paused_run(stack, promo)
    answer_in_ui(
        browser,
        stack,
        run,
        approve=True,
        reason="evidence reviewed in the UI",
        name="approve",
        token=promo.tokens["release-manager"],
    )
    assert finish(promo) == 0, log_tail(promo)
    rt = promo.runtime()
    row = rt.events.promotions(promo.model)[0]
    assert row["state"] == "promoted", log_tail(promo)
    granted = [t for t in rt.events.transitions(row["id"]) if t["to_state"] == "approval_granted"]
    assert [t["reason"] for t in granted] == [
        "before rollout: approved by release-manager: evidence reviewed in the UI"
    ]
    tags = rt.registry.client.get_run(row["mlflow_run_id"]).data.tags
    assert tags["stagegate.approval.before-rollout.approver"] == "release-manager"
    assert rt.registry.get_alias(promo.model, "champion").version == "2"


def test_reject_in_the_ui_rolls_back(stack: RunningStack, promos: dict[str, Promo], browser: object) -> None:
    promo = promos["reject"]
    run = paused_run(stack, promo)
    answer_in_ui(
        browser,
        stack,
        run,
        approve=False,
        reason="revenue dip in cold-start users",
        name="reject",
        token=promo.tokens["release-manager"],
    )
    assert finish(promo) == NOT_PROMOTED, log_tail(promo)
    rt = promo.runtime()
    row = rt.events.promotions(promo.model)[0]
    assert row["state"] == "rolled_back", log_tail(promo)
    assert "revenue dip in cold-start users" in row["reason"]
    assert rt.registry.get_alias(promo.model, "champion").version == "1"
    assert rt.registry.get_alias(promo.model, "candidate") is None
    assert rt.traffic.get_split().is_all_champion
    for step in ("1-paused", "2-form", "3-submitted"):
        assert (SHOTS / f"reject-{step}.png").stat().st_size > 10_000
