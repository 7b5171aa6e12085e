"""The state database: evidence stored exactly, one look counted however many replicas race, and a state
database that fails never answers a 2xx."""

from __future__ import annotations

import threading

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import text

from stagegate.evidence import ArmSample
from stagegate.judge.looks import LookRequest
from stagegate.judge.state import pack_arms, unpack_arms
from tests.judge.conftest import ARGO_HEADERS

PROMOTION = "shop.recs"


def test_evidence_round_trips_exactly() -> None:
    rng = np.random.default_rng(1)
    arm = ArmSample(
        user_ids=np.arange(5),
        metrics={"revenue_per_user": rng.exponential(3.0, 5), "requests": np.ones(5)},
        segments={"heavy": np.array([True, False, True, False, True])},
        requests={"latency_ms": rng.gamma(2.0, 5.0, 12)},
        pre_period={"revenue_per_user": rng.exponential(3.0, 5)},
    )
    back = unpack_arms(pack_arms({"candidate": arm, "champion": arm}))
    assert set(back) == {"candidate", "champion"}
    for kind in ("metrics", "segments", "requests", "pre_period"):
        for name, values in getattr(arm, kind).items():
            got = getattr(back["candidate"], kind)[name]
            assert got.dtype == values.dtype and np.array_equal(got, values)
    assert np.array_equal(back["champion"].user_ids, arm.user_ids)


def test_racing_replicas_count_one_look(world, clock, make_judge) -> None:
    """Two judge processes on one state database, four concurrent calls each for the same window."""
    world.add_day(PROMOTION, 0, lift=1.0)
    clock.days = 1
    replicas = [make_judge()[0], make_judge()[0]]
    request = LookRequest("argo", "shop", "recs", "r1", promotion=PROMOTION, step=0, weight=50)
    answers: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def call(judge) -> None:
        try:
            start.wait()
            answers.append(judge.look(request).answer)
        except BaseException as exc:  # collected: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(replicas[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(answers) == 8
    assert {a["look"] for a in answers} == {1}
    assert sum(not a["repeated"] for a in answers) == 1
    looks = replicas[0].state.load("argo:shop/recs", "r1", clock.now()).looks
    assert [look.number for look in looks] == [1]


def test_a_failing_state_database_is_a_500(tmp_path, world, clock, make_judge) -> None:
    judge, app = make_judge()
    world.add_day(PROMOTION, 0, lift=1.0)
    clock.days = 1
    with judge.state.engine.begin() as conn:
        conn.execute(text("DROP TABLE judge_looks"))
    with TestClient(app, raise_server_exceptions=False) as client:
        argo = client.get("/argo/v1/shop/recs?revision=r1&step=0&weight=50", headers=ARGO_HEADERS)
        promote = client.post(
            "/flagger/confirm-promotion",
            json={
                "name": "recs",
                "namespace": "shop",
                "phase": "Progressing",
                "checksum": "c",
                "metadata": {"promotion": PROMOTION},
            },
        )
    for response in (argo, promote):
        assert response.status_code == 500
        assert response.json()["verdict"] == "ERROR" and "judge failed" in response.json()["error"]
