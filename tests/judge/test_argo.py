"""The judge as Argo Rollouts' ``web`` metric provider, through the ASGI app over HTTP.

Requests are shaped as Argo sends them: a GET of the AnalysisTemplate's ``provider.web.url`` with the
``{{args.*}}`` rendered into the query string and the template's headers (argoproj.github.io
argo-rollouts/analysis/web; metricproviders/webmetric/webmetric.go builds ``Method: "GET"`` and reads any
non-2xx status as a measurement Error). The evidence is a real event store (SQLite here, PostgreSQL in the
last test) filled with per-user events whose truth each test sets.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from stagegate.judge.app import create_app
from stagegate.judge.config import load_setup
from stagegate.judge.looks import Judge
from stagegate.judge.state import JudgeState
from tests.judge.conftest import ARGO_HEADERS, EventWorld, FakeClock, write_files

PROMOTION = "shop.recs"
# What the AnalysisTemplate of infra/k8s/argo-analysistemplate.yaml renders for step 0 at 50 %.
URL = "/argo/v1/shop/recs?revision=7d9f8c6b5&promotion=shop.recs&step=0&weight=50"


def _client(app: Any) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def _measure(client: TestClient, url: str = URL) -> tuple[int, dict]:
    response = client.get(url, headers=ARGO_HEADERS)
    return response.status_code, response.json()


def _days(world: EventWorld, clock: FakeClock, client: TestClient, lift: float, n: int, **kw: Any) -> list:
    """n days of traffic, one Argo measurement after each: [(status, answer), ...]."""
    out = []
    for day in range(n):
        world.add_day(PROMOTION, day, lift=lift, **kw)
        clock.days = day + 1
        out.append(_measure(client))
    return out


def _check_shape(answer: dict) -> None:
    assert answer["verdict"] in {"PASS", "FAIL", "INCONCLUSIVE", "ERROR"}
    assert answer["rollout"] == {"tool": "argo", "namespace": "shop", "name": "recs", "revision": "7d9f8c6b5"}
    names = [g["name"] for g in answer["gates"]]
    assert names == ["srm", "sequential:revenue_per_user", "guardrail:error_rate"]
    for gate in answer["gates"]:
        assert set(gate) >= {"name", "outcome", "statistic", "interval", "n"}
        assert len(gate["interval"]) == 2


def test_harmful_candidate_fails_within_a_few_looks(world, clock, make_judge) -> None:
    _, app = make_judge()
    with _client(app) as client:
        looks = _days(world, clock, client, lift=0.6, n=4, users_per_day=120)
    verdicts = [answer["verdict"] for _, answer in looks]
    assert all(status == 200 for status, _ in looks), looks
    assert "FAIL" in verdicts, verdicts
    assert "PASS" not in verdicts
    first_fail = verdicts.index("FAIL")
    _, answer = looks[first_fail]
    _check_shape(answer)
    assert answer["decision"] == "rollback"
    assert answer["look"] == first_fail + 1
    seq = answer["gates"][1]
    assert seq["outcome"] == "FAIL" and seq["action"] == "rollback"
    assert seq["statistic"] < 0 and seq["interval"][1] < 0  # the whole interval says harm
    assert seq["sequential"]["harm_statistic"] >= seq["sequential"]["harm_boundary"]


def test_harmless_candidate_is_inconclusive_then_passes(world, clock, make_judge) -> None:
    _, app = make_judge()
    with _client(app) as client:
        looks = _days(world, clock, client, lift=1.3, n=4)
    verdicts = [answer["verdict"] for _, answer in looks]
    assert all(status == 200 for status, _ in looks)
    assert verdicts[0] == "INCONCLUSIVE", verdicts  # too little evidence yet: neither condition holds
    assert looks[0][1]["decision"] == "continue"
    assert "FAIL" not in verdicts
    assert verdicts[-1] == "PASS", verdicts
    _check_shape(looks[-1][1])
    assert looks[-1][1]["decision"] == "advance"
    assert [answer["look"] for _, answer in looks] == [1, 2, 3, 4]


def test_a_repeated_measurement_is_not_a_new_look(world, clock, make_judge) -> None:
    _, app = make_judge()
    with _client(app) as client:
        world.add_day(PROMOTION, 0, lift=1.0)
        clock.days = 1.0
        _, first = _measure(client)
        _, again = _measure(client)  # Argo retrying the same measurement
        clock.days = 1.0 + 30 / 86400  # 30 s later: same slot of the 60 s look grid
        _, same_slot = _measure(client)
        clock.days = 1.5  # the window moved, but no request arrived since the last look
        _, no_news = _measure(client)
        world.add_day(PROMOTION, 1, lift=1.0)
        clock.days = 2.0
        _, second = _measure(client)
    assert first["look"] == 1 and first["repeated"] is False
    for repeat in (again, same_slot, no_news):
        assert repeat["look"] == 1 and repeat["repeated"] is True
        assert repeat["gates"] == first["gates"]
    assert second["look"] == 2 and second["repeated"] is False
    assert second["n_requests"] > first["n_requests"]


def test_a_new_canary_step_is_a_new_look_with_its_own_window(world, clock, make_judge) -> None:
    """Argo's analysis of the next step (step 1, 25 %): its first window holds fewer requests than step 0's
    last look, and is still a new look; the earlier step stays in the sequential history."""
    _, app = make_judge()
    with _client(app) as client:
        for day in range(2):
            world.add_day(PROMOTION, day, lift=1.0)
            clock.days = day + 1
            _, step0 = _measure(client)
        world.add_day(PROMOTION, 2, lift=1.0, users_per_day=400, weight=0.25, step=1)
        clock.days = 3
        _, step1 = _measure(client, URL.replace("step=0&weight=50", "step=1&weight=25"))
    assert step0["look"] == 2
    assert step1["look"] == 3 and step1["repeated"] is False
    assert step1["window"]["step"] == 1 and step1["n_requests"] < step0["n_requests"]
    assert step1["allocation"] == {"champion": 0.75, "candidate": 0.25}
    assert step1["gates"][1]["sequential"]["looks"] == 1  # the per-step test restarts at the new split


def test_a_failing_metric_source_is_a_5xx_never_a_pass(world, clock, make_judge) -> None:
    _, app = make_judge()
    with _client(app) as client:
        # No traffic recorded for the promotion at all: a query with no data is an error, never a zero.
        clock.days = 1.0
        status, empty = _measure(client)
        assert status == 503 and empty["verdict"] == "ERROR" and empty["look"] == 0
        assert "no requests recorded" in empty["error"]

        passed = _days(world, clock, client, lift=1.3, n=4)
        assert passed[-1][1]["verdict"] == "PASS"
        world.break_queries()  # the event store's table is gone: every query fails for real

        clock.days = 5.0
        status, broken = _measure(client)
        assert status == 503, broken
        assert broken["verdict"] == "ERROR" and broken["look"] == 4  # not a look
        assert all(g["outcome"] == "ERROR" for g in broken["gates"])
        assert broken["error_streaks"]["1:sequential:revenue_per_user"] == 1
        status, retry = _measure(client)  # Argo's retry of the same measurement: counted once
        assert status == 503 and retry["error_streaks"]["1:sequential:revenue_per_user"] == 1
        clock.days = 6.0
        status, second = _measure(client)
        assert status == 503 and second["verdict"] == "ERROR"
        # past the gate's consecutive_error_limit (1): the rule now says roll back, the look stays ERROR
        assert second["error_streaks"]["1:sequential:revenue_per_user"] == 2
        assert second["decision"] == "rollback"


def test_sequential_state_survives_a_restart(tmp_path, world, clock, make_judge) -> None:
    restarted_db = f"sqlite:///{tmp_path / 'restarted.db'}"
    control_db = f"sqlite:///{tmp_path / 'control.db'}"
    _, before = make_judge(restarted_db)
    _, control = make_judge(control_db)
    with _client(before) as a, _client(control) as c:
        for day in range(3):
            world.add_day(PROMOTION, day, lift=0.9, users_per_day=200)
            clock.days = day + 1
            _, last_before = _measure(a)
            _measure(c)
    _, after = make_judge(restarted_db)  # a new judge process on the same state database
    with _client(after) as b, _client(control) as c:
        _, replay = _measure(b)
        assert replay["repeated"] is True and replay["look"] == 3
        assert replay["gates"] == last_before["gates"]
        world.add_day(PROMOTION, 3, lift=0.9, users_per_day=200)
        clock.days = 4
        _, resumed = _measure(b)
        _, uninterrupted = _measure(c)
    assert resumed["look"] == uninterrupted["look"] == 4
    assert resumed["verdict"] == uninterrupted["verdict"]
    for got, want in zip(resumed["gates"], uninterrupted["gates"], strict=True):
        assert got["statistic"] == pytest.approx(want["statistic"], rel=1e-12)
        assert got["interval"] == pytest.approx(want["interval"], rel=1e-12)
    seq_got, seq_want = resumed["gates"][1]["sequential"], uninterrupted["gates"][1]["sequential"]
    assert seq_got["looks"] == 4
    assert seq_got["harm_statistic"] == pytest.approx(seq_want["harm_statistic"], rel=1e-12)
    assert seq_got["harm_boundary"] == pytest.approx(seq_want["harm_boundary"], rel=1e-12)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("revision=r&step=0&weight=50&start=2000-01-01T00:00:00", "no time zone"),
        ("revision=r&weight=0", "weight must be"),
        ("revision=r&stpe=0", "unknown key"),
        ("revision=r&step=", "empty value"),
        ("revision=r&end=1999-01-01T00:00:00Z&start=2000-01-01T00:00:00Z", "empty window"),
    ],
)
def test_bad_arguments_are_refused_not_judged(world, clock, make_judge, query: str, reason: str) -> None:
    judge, app = make_judge()
    world.add_day(PROMOTION, 0, lift=1.0)
    clock.days = 1
    with _client(app) as client:
        status, answer = _measure(client, f"/argo/v1/shop/recs?{query}")
    assert status == 400 and answer["verdict"] == "ERROR"
    assert reason in answer["error"]
    assert judge.state.load("argo:shop/recs", "r", clock.now()).looks == []


def test_through_a_real_uvicorn_server(world, clock, make_judge) -> None:
    _, app = make_judge()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        world.add_day(PROMOTION, 0, lift=0.5, users_per_day=400)
        clock.days = 1
        with httpx.Client(base_url=base, timeout=20) as http:
            argo = http.get(URL, headers=ARGO_HEADERS)
            flagger = http.post(
                "/flagger/rollback",
                json={
                    "name": "recs",
                    "namespace": "shop",
                    "phase": "Progressing",
                    "checksum": "c1",
                    "metadata": {"promotion": PROMOTION, "step": "0", "weight": "50"},
                },
            )
            health = http.get("/healthz")
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert argo.status_code == 200 and argo.headers["content-type"] == "application/json"
    assert argo.json()["verdict"] == "FAIL"
    assert flagger.status_code == 200 and flagger.json()["decision"] == "rollback"  # "roll back now"
    assert health.json()["stage"] == "canary"
    assert not thread.is_alive()


def test_state_and_events_on_postgresql(tmp_path, clock, postgres_url) -> None:
    world = EventWorld(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    policy_file, connections = write_files(tmp_path, world.url)
    state = JudgeState(world.url)  # the judge's tables beside the events, on PostgreSQL
    try:
        app = create_app(Judge(load_setup(policy_file, "canary", connections), state, now=clock.now))
        with _client(app) as client:
            looks = _days(world, clock, client, lift=0.6, n=3, users_per_day=150)
        restarted = JudgeState(world.url)
        try:
            remembered = restarted.load("argo:shop/recs", "7d9f8c6b5", clock.now()).looks
        finally:
            restarted.dispose()
    finally:
        state.dispose()
        world.store.engine.dispose()
    verdicts = [answer["verdict"] for _, answer in looks]
    assert "FAIL" in verdicts and "PASS" not in verdicts, verdicts
    assert [look.number for look in remembered] == [1, 2, 3]
    assert remembered[-1].answer["verdict"] == verdicts[-1]
