"""The judge applying the project's own policy (policies/default.yaml, canary stage, rule risk_aware:
a guardrail proven non-inferior, a success metric proven better, the step's min_users met)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from stagegate.judge.app import create_app
from stagegate.judge.config import load_setup
from stagegate.judge.looks import Judge
from stagegate.judge.state import JudgeState
from tests.judge.conftest import ARGO_HEADERS, FLAGGER_HEADERS, write_files

ROOT = Path(__file__).resolve().parents[2]
PROMOTION = "shop.recs"
STEP = 2  # the last canary step of policies/default.yaml: 50 %, min_users 500
URL = f"/argo/v1/shop/recs?revision=9c8b7a6d5&promotion={PROMOTION}&step={STEP}&weight=50"
FLAGGER = {
    "name": "recs",
    "namespace": "shop",
    "phase": "Progressing",
    "checksum": "9c8b7a6d5",
    "metadata": {"promotion": PROMOTION, "step": str(STEP), "weight": "50"},
}


def _app(tmp_path: Path, world, clock) -> tuple[object, JudgeState]:
    _, connections = write_files(tmp_path, world.url)
    setup = load_setup(ROOT / "policies/default.yaml", "canary", connections)
    assert setup.gates.rule == "risk_aware"
    state = JudgeState(f"sqlite:///{tmp_path / 'judge.db'}")
    return create_app(Judge(setup, state, now=clock.now)), state


def test_risk_aware_promotes_only_on_proof_and_sample_size(tmp_path, world, clock) -> None:
    app, state = _app(tmp_path, world, clock)
    looks = []
    with TestClient(app) as client:
        for day in range(3):
            world.add_day(PROMOTION, day, lift=1.6, users_per_day=400, step=STEP)
            clock.days = day + 1
            argo = client.get(URL, headers=ARGO_HEADERS).json()
            promote = client.post("/flagger/confirm-promotion", json=FLAGGER, headers=FLAGGER_HEADERS)
            looks.append((argo, promote.status_code))
    state.dispose()
    first, first_promote = looks[0]
    # Everything proven already, but only ~200 candidate users of the step's 500: not yet.
    assert first["verdict"] == "INCONCLUSIVE" and first_promote == 403
    assert "minimum sample size" in first["reason"]
    assert {g["name"] for g in first["gates"]} >= {"sequential:revenue_per_user better"}
    last, last_promote = looks[-1]
    assert last["verdict"] == "PASS" and last["decision"] == "advance" and last_promote == 200
    assert last["users"]["candidate"] >= 500
    better = next(g for g in last["gates"] if g["name"] == "sequential:revenue_per_user better")
    assert better["outcome"] == "PASS" and better["interval"][0] > 0


def test_risk_aware_rolls_back_proven_harm(tmp_path, world, clock) -> None:
    app, state = _app(tmp_path, world, clock)
    with TestClient(app) as client:
        world.add_day(PROMOTION, 0, lift=0.6, users_per_day=400, step=STEP)
        clock.days = 1
        argo = client.get(URL, headers=ARGO_HEADERS)
        rollback = client.post("/flagger/rollback", json=FLAGGER, headers=FLAGGER_HEADERS)
    state.dispose()
    assert argo.status_code == 200 and argo.json()["verdict"] == "FAIL"
    guardrail = next(g for g in argo.json()["gates"] if g["name"] == "sequential:purchases_per_user")
    assert guardrail["outcome"] == "FAIL" and guardrail["action"] == "rollback"
    assert rollback.status_code == 200  # "roll back now"


def test_the_deadline_look_ramps_an_earlier_step_and_holds_the_last(tmp_path, world, clock) -> None:
    """Argo's verdict metric and Flagger's confirm-promotion read the step's last look at its deadline
    (``deadline=true``): risk_aware moves an unharmed, unproven candidate from an earlier step to the next
    (between_steps: ramp) and holds it at the last step for a human. The deadline reading of a look
    already counted is not a new look."""
    app, state = _app(tmp_path, world, clock)
    step0 = "/argo/v1/shop/recs?revision=9c8b7a6d5&promotion=shop.recs&step=0&weight=10"
    with TestClient(app) as client:
        for day in range(3):
            world.add_day(PROMOTION, day, lift=1.0, users_per_day=1500, weight=0.1, step=0)
            clock.days = day + 1
            monitor = client.get(step0, headers=ARGO_HEADERS).json()
        deadline = client.get(f"{step0}&deadline=true", headers=ARGO_HEADERS).json()
        again = client.get(step0, headers=ARGO_HEADERS).json()  # the monitor's reading is unchanged
        for day in range(3, 5):
            world.add_day(PROMOTION, day, lift=1.0, users_per_day=600, step=STEP)
            clock.days = day + 1
            last_monitor = client.get(URL, headers=ARGO_HEADERS).json()
        promote = client.post(
            "/flagger/confirm-promotion",
            json={**FLAGGER, "metadata": {**FLAGGER["metadata"], "deadline": "true"}},
            headers=FLAGGER_HEADERS,
        )
    state.dispose()
    assert monitor["verdict"] == "INCONCLUSIVE" and monitor["look"] == 3
    assert deadline["verdict"] == "PASS" and deadline["decision"] == "advance"
    assert deadline["look"] == 3 and deadline["repeated"] is True and deadline["at_deadline"] is True
    assert "moving to the next step" in deadline["reason"]
    assert again["verdict"] == "INCONCLUSIVE" and again["at_deadline"] is False
    assert last_monitor["verdict"] == "INCONCLUSIVE" and last_monitor["look"] == 5
    assert promote.status_code == 403  # the last step's deadline holds: never promoted unproven
    assert promote.json()["decision"] == "hold"
    assert promote.json()["look"] == 1  # Flagger's canary is its own rollout key (flagger:shop/recs)
