"""The ``http`` traffic controller against a real HTTP server on loopback (tests/proof/fake_router.py, a
separate process): the admin API contract, errors that name the URL and status, a rollback read back, a
token that is never shown."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from stagegate.adapters.http_traffic import HttpTrafficController
from stagegate.connections import parse_connections
from stagegate.ports import Split, TrafficController, TrafficError
from tests.proof.fake_router import Running, running

TOKEN = "s3cret-router-token"


@pytest.fixture(scope="module")
def router() -> Iterator[Running]:
    with running(TOKEN) as r:
        yield r


def test_split_round_trip_and_rollback(router: Running) -> None:
    traffic = HttpTrafficController(router.url, TOKEN, timeout_seconds=5)
    assert isinstance(traffic, TrafficController)
    traffic.rollback(None)  # a clean start whatever an earlier test left
    canary = Split(champion="1", candidate="2", candidate_weight=0.2)
    traffic.set_split(canary)
    assert traffic.get_split() == canary
    shadow = Split(champion="1", candidate="2", candidate_weight=0.0, shadow=True)
    traffic.set_split(shadow)
    assert traffic.get_split() == shadow and not traffic.get_split().is_all_champion
    back = traffic.rollback("1")
    assert back == Split(champion="1") and traffic.get_split().is_all_champion
    assert traffic.rollback(None) == Split(champion="1")  # idempotent, the router's champion kept


def test_a_wrong_or_missing_token_is_refused_with_url_and_status(router: Running) -> None:
    wrong = HttpTrafficController(router.url, "not-the-token", timeout_seconds=5)
    with pytest.raises(TrafficError) as caught:
        wrong.get_split()
    message = str(caught.value)
    assert f"GET {router.url}/admin/split" in message and "401" in message
    with pytest.raises(TrafficError, match="401"):
        wrong.set_split(Split(champion="9"))
    assert httpx.get(f"{router.url}/admin/split", timeout=5).status_code == 401  # no header at all
    with pytest.raises(ValueError, match="empty"):
        HttpTrafficController(router.url, "")


def test_a_malformed_body_is_422(router: Running) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    bad = httpx.put(f"{router.url}/admin/split", json={"champion": 1}, headers=headers, timeout=5)
    assert bad.status_code == 422
    bad = httpx.post(f"{router.url}/admin/rollback", json={"who": "x"}, headers=headers, timeout=5)
    assert bad.status_code == 422


def test_a_rollback_that_does_not_take_raises() -> None:
    with running(TOKEN, "--broken-rollback") as liar:
        traffic = HttpTrafficController(liar.url, TOKEN, timeout_seconds=5)
        traffic.set_split(Split(champion="1", candidate="2", candidate_weight=0.5))
        with pytest.raises(TrafficError, match="rollback did not take"):
            traffic.rollback("1")


def test_network_errors_and_timeouts_raise_traffic_error() -> None:
    with running(TOKEN, "--delay", "3") as slow:
        traffic = HttpTrafficController(slow.url, TOKEN, timeout_seconds=0.5)
        with pytest.raises(TrafficError, match=f"GET {slow.url}/admin/split failed: ReadTimeout"):
            traffic.get_split()
        url = slow.url
    gone = HttpTrafficController(url, TOKEN, timeout_seconds=2)  # the server has stopped
    with pytest.raises(TrafficError, match=f"PUT {url}/admin/split failed: ConnectError"):
        gone.set_split(Split(champion="1"))


def test_built_from_a_connections_file_with_the_token_as_a_reference(
    router: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", TOKEN)
    data = {
        "version": 1,
        "traffic": {"type": "http", "base_url": router.url, "token": {"env": "ROUTER_ADMIN_TOKEN"}},
    }
    connections = parse_connections(data, "connections.yaml")
    traffic = connections.build("traffic", SimpleNamespace())
    assert isinstance(traffic, HttpTrafficController)
    assert isinstance(traffic.get_split(), Split)  # authorised: the token from the environment reached it
    assert TOKEN not in repr(traffic)
    literal = {"version": 1, "traffic": {"type": "http", "base_url": router.url, "token": TOKEN}}
    with pytest.raises(Exception) as refused:
        parse_connections(literal, "connections.yaml")
    assert "traffic.token" in str(refused.value) and TOKEN not in str(refused.value)
