"""The judge behind Flagger's webhooks, through the ASGI app.

Each request is the POST Flagger sends to a webhook (fluxcd/flagger docs/gitbook/usage/webhooks.md,
"Webhook payload"; pkg/apis/flagger/v1beta1 CanaryWebhookPayload: name, namespace, phase, checksum,
metadata as string to string). Flagger reads only the status: 2xx goes on, anything else halts; for a
``rollback`` hook a 2xx means "roll back now".
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.judge.conftest import FLAGGER_HEADERS

PROMOTION = "test.podinfo"


def _payload(checksum: str = "5d8c7b9f4", **metadata: str) -> dict[str, Any]:
    return {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "checksum": checksum,
        "metadata": {"promotion": PROMOTION, "step": "0", "weight": "50", **metadata},
    }


def _hooks(client: TestClient, payload: dict[str, Any] | None = None) -> dict[str, tuple[int, dict]]:
    """Call the three webhooks as Flagger does within one analysis iteration."""
    out = {}
    for hook in ("confirm-traffic-increase", "confirm-promotion", "rollback"):
        response = client.post(f"/flagger/{hook}", json=payload or _payload(), headers=FLAGGER_HEADERS)
        out[hook] = (response.status_code, response.json())
    return out


def test_harmless_candidate_goes_on_then_is_promoted(world, clock, make_judge) -> None:
    _, app = make_judge()
    iterations = []
    with TestClient(app) as client:
        for day in range(4):
            world.add_day(PROMOTION, day, lift=1.3)
            clock.days = day + 1
            iterations.append(_hooks(client))
    first = iterations[0]
    assert first["confirm-traffic-increase"][1]["verdict"] == "INCONCLUSIVE"
    assert first["confirm-traffic-increase"][0] == 200  # no harm proven: more traffic may go
    assert first["confirm-promotion"][0] == 403  # not proven: never promote on INCONCLUSIVE
    assert first["rollback"][0] == 403  # non-2xx: do not roll back
    for it in iterations:
        assert it["rollback"][0] != 200
        assert it["confirm-traffic-increase"][0] == 200
        # the three hooks of one iteration judged one look, counted once
        assert len({answer["look"] for _, answer in it.values()}) == 1
        assert [answer["repeated"] for _, answer in it.values()] == [False, True, True]
    last = iterations[-1]
    assert last["confirm-promotion"][1]["verdict"] == "PASS"
    assert last["confirm-promotion"][0] == 200
    assert last["confirm-promotion"][1]["hook"] == "confirm-promotion"
    assert last["confirm-promotion"][1]["phase"] == "Progressing"
    assert last["confirm-promotion"][1]["look"] == 4


def test_harmful_candidate_is_rolled_back(world, clock, make_judge) -> None:
    _, app = make_judge()
    with TestClient(app) as client:
        for day in range(4):
            world.add_day(PROMOTION, day, lift=0.6, users_per_day=120)
            clock.days = day + 1
            hooks = _hooks(client)
            if hooks["rollback"][0] == 200:
                break
    assert hooks["rollback"][0] == 200, hooks  # "roll back now"
    assert hooks["rollback"][1]["decision"] == "rollback"
    assert hooks["confirm-traffic-increase"][0] == 403  # harm proven: no more traffic
    assert hooks["confirm-promotion"][0] == 403


def test_no_measurement_halts_everything(world, clock, make_judge) -> None:
    _, app = make_judge()
    clock.days = 1
    with TestClient(app) as client:
        # The canary has had no traffic: a measurement error. Flagger asks confirm-traffic-increase
        # before the first step too (pkg/controller/scheduler.go); that first increase goes ahead once.
        first = _hooks(client)
        clock.days = 2  # the next iteration: still nothing measured
        second = _hooks(client)
        # A second judge process on the same state: the one-off is spent for every process.
    assert all(answer["verdict"] == "ERROR" for _, answer in [*first.values(), *second.values()])
    assert first["confirm-traffic-increase"][0] == 200
    assert "first_step" in first["confirm-traffic-increase"][1]
    assert second["confirm-traffic-increase"][0] == 503  # once only: never a second unmeasured step
    for hooks in (first, second):
        assert hooks["confirm-promotion"][0] == 503  # never promote
    assert first["rollback"][0] == 503  # one unmeasured window: nothing proven, no rollback either
    # Two in a row: past the revenue gate's consecutive_error_limit (1), whose on_error is rollback.
    assert second["rollback"][0] == 200 and second["rollback"][1]["decision"] == "rollback"
    _, other = make_judge()
    with TestClient(other) as client:
        again = client.post("/flagger/confirm-traffic-increase", json=_payload(), headers=FLAGGER_HEADERS)
    assert again.status_code == 503


def test_the_first_step_opens_once_per_revision(world, clock, make_judge) -> None:
    """After a look was measured, an ERROR is never let through; a new revision gets its own first step."""
    _, app = make_judge()
    with TestClient(app) as client:
        world.add_day(PROMOTION, 0, lift=1.0)
        clock.days = 1
        measured = _hooks(client)
        world.break_queries()
        clock.days = 2
        broken = _hooks(client)
        clock.days = 3
        new_canary = client.post(
            "/flagger/confirm-traffic-increase",
            json=_payload(checksum="0f0f0f0f0"),
            headers=FLAGGER_HEADERS,
        )
    assert measured["confirm-traffic-increase"][0] == 200
    assert broken["confirm-traffic-increase"][0] == 503  # a look was counted: ERROR halts
    assert broken["confirm-traffic-increase"][1]["look"] == 1
    assert new_canary.status_code == 200 and new_canary.json()["look"] == 0


def test_a_new_checksum_is_a_new_canary(world, clock, make_judge) -> None:
    _, app = make_judge()
    with TestClient(app) as client:
        for day in range(2):
            world.add_day(PROMOTION, day, lift=1.0)
            clock.days = day + 1
            before = _hooks(client)
        assert before["rollback"][1]["look"] == 2
        world.add_day(PROMOTION, 2, lift=1.0)
        clock.days = 3
        after = _hooks(client, _payload(checksum="a1b2c3d4e"))
    assert after["rollback"][1]["look"] == 1
    assert after["rollback"][1]["rollout"]["revision"] == "a1b2c3d4e"


def test_unknown_metadata_is_refused(world, clock, make_judge) -> None:
    _, app = make_judge()
    world.add_day(PROMOTION, 0, lift=1.0)
    clock.days = 1
    with TestClient(app) as client:
        typo = client.post("/flagger/confirm-promotion", json=_payload(wieght="50"), headers=FLAGGER_HEADERS)
        missing = client.post(
            "/flagger/confirm-promotion", json={"namespace": "test"}, headers=FLAGGER_HEADERS
        )
    assert typo.status_code == 400 and "wieght" in typo.json()["error"]
    assert missing.status_code == 422  # no name: Flagger always sends one; never a 2xx
