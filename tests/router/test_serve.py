"""``stagegate serve`` as a real process: it refuses to start without an admin token, keeps every user on
the same arm across a restart (the split persists, the hash is stable), flushes its request log on a clean
shutdown, and never writes the token to its output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from stagegate.ports import Split
from tests.router.conftest import TOKEN, Registry, RunningRouter, ask, auth

STAGEGATE = str(Path(sys.executable).with_name("stagegate"))
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class ServeProcess:
    """``stagegate serve`` in a subprocess on port 0; its address read from the line it prints."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [STAGEGATE, "serve", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.output: list[str] = []
        self.url: str | None = None
        found = threading.Event()

        def drain() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                match = LISTENING.search(line)
                if match:
                    self.url = match.group(1)
                    found.set()
            found.set()

        self.reader = threading.Thread(target=drain, daemon=True)
        self.reader.start()
        found.wait(90)
        if self.url is None:
            self.proc.kill()
            raise AssertionError("stagegate serve did not start:\n" + "".join(self.output))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the socket is bound before uvicorn serves on it
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("stagegate serve never answered /healthz")

    def stop(self) -> None:
        """SIGTERM: uvicorn shuts down cleanly (the lifespan flushes the log), then re-raises the signal,
        so the process ends by SIGTERM rather than exit code 0; anything else is a crash."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.reader.join(5)
        assert code in (0, -signal.SIGTERM), "".join(self.output)
        assert "Traceback" not in "".join(self.output), "".join(self.output)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STAGEGATE_ROUTER_TOKEN"}
    env.update(extra)
    return env


def _args(registry: Any, state: Path) -> list[str]:
    """``registry``: a Registry or a RouterConfig (both name the model and the tracking URI)."""
    return [
        "--model",
        registry.model,
        "--tracking-uri",
        registry.tracking_uri,
        "--state",
        str(state),
        "--port",
        "0",
        "--timeout",
        "2",
    ]


def test_refuses_to_start_without_a_token(registry: Registry, tmp_path: Path) -> None:
    env = _env()
    done = subprocess.run(
        [STAGEGATE, "serve", *_args(registry, tmp_path / "split.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "STAGEGATE_ROUTER_TOKEN" in done.stderr
    assert not (tmp_path / "split.json").exists()  # nothing was set up


@pytest.mark.parametrize("token", [None, "", "tiny-tok"])
def test_load_token_refuses_a_missing_or_short_token(
    monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    from stagegate.router.config import TOKEN_ENV, TokenError, load_token

    if token is None:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(TOKEN_ENV, token)
    with pytest.raises(TokenError, match=TOKEN_ENV) as caught:
        load_token()
    assert not token or token not in str(caught.value)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert load_token() == TOKEN


def test_split_sticky_across_restart_and_every_request_recorded(router_config: Any, tmp_path: Path) -> None:
    """A router in this process sets the split and serves 60 users, then shuts down; ``stagegate serve``
    started as another process on the same state serves every user from the same arm."""
    state = tmp_path / "split.json"
    split = Split(champion="1", candidate="2", candidate_weight=0.5, shadow=True)
    config = router_config(state=str(state), queue_size=1000)
    first = RunningRouter(config)
    answers: dict[str, dict] = {}
    try:
        with httpx.Client(base_url=first.url, timeout=10) as client:
            response = client.put("/admin/split", json=split.model_dump(), headers=auth())
            assert response.json() == split.model_dump()
            for user in range(60):
                answers[f"a-{user}"] = ask(client, f"a-{user}", user).json()
    finally:
        first.stop()
    arms = {body["request_id"]: body["arm"] for body in answers.values()}
    assert 10 < sum(a == "candidate" for a in arms.values()) < 50

    # the clean shutdown flushed the log: one row per request, as answered, plus the shadow mirrors
    engine = create_engine(config.events_url)
    with engine.connect() as conn:
        query = "SELECT request_id, arm, version, served_version, items, error FROM router_requests"
        rows = conn.execute(text(query)).all()
    engine.dispose()
    served = [r for r in rows if r.arm != "shadow"]
    assert sorted(r.request_id for r in served) == sorted(answers)
    for r in served:
        body = answers[r.request_id]
        assert (r.arm, r.version, r.served_version) == (body["arm"], body["version"], body["served_by"])
        assert r.error is None
        assert [int(i) for i in json.loads(r.items)] == body["item_ids"]
    shadow = [r for r in rows if r.arm == "shadow"]
    assert {r.request_id for r in shadow} == {k for k, a in arms.items() if a == "champion"}
    assert all(r.version == "2" and r.error is None for r in shadow)

    server = ServeProcess(_args(router_config(), state), _env(STAGEGATE_ROUTER_TOKEN=TOKEN))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/admin/split", headers=auth()).json() == split.model_dump()
            for user in range(60):
                assert ask(client, f"b-{user}", user).json()["arm"] == arms[f"a-{user}"], user
    finally:
        server.stop()
    assert TOKEN not in "".join(server.output)


def test_refuses_to_build_without_a_champion(router_config: Any, tmp_path: Path) -> None:
    from stagegate.router.app import RouterStartError, build_router

    with pytest.raises(RouterStartError, match="no 'champion' alias"):
        build_router(router_config(model="router-test-unknown-model"), TOKEN)
    assert not (tmp_path / "split.json").exists()
