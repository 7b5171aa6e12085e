"""Credentials never reach what the stack writes or prints: stack.json, exports, logged command lines."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stagegate.events.store import EventStore
from stagegate.stack import Stack, _redact, shell_exports
from stagegate.workspace import Workspace

SECRET = "s3cr:et@pw"  # a colon and an at sign, as real passwords have


def test_a_postgres_password_goes_to_a_private_pgpass_file_not_to_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stagegate.stack as stack_module

    created: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(stack_module, "_create_databases", lambda url, names: created.append((url, names)))
    stack = Stack(Workspace.from_env(tmp_path / "ws"))
    quoted = SECRET.replace(":", "%3A").replace("@", "%40")
    dbs = stack._databases(f"postgresql://alice:{quoted}@db.example:6543/postgres", registry_on_postgres=True)
    assert created and quoted in created[0][0]  # the databases are created with the real credentials
    assert len(dbs) == 3
    for url in dbs.values():
        assert quoted not in url and SECRET not in url and "alice@db.example:6543" in url
    pgpass = stack.pgpass_path
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    lines = pgpass.read_text().splitlines()
    assert r"db.example:6543:stagegate_events:alice:s3cr\:et@pw" in lines
    assert stack._pg_env() == {"PGPASSFILE": str(pgpass)}
    # without a password the file goes away, so no stale secret lingers
    stack._databases("postgresql://alice@db.example:6543/postgres")
    assert not pgpass.exists() and stack._pg_env() == {}


def test_exports_redact_any_url_with_a_password() -> None:
    env = {"STAGEGATE_EVENTS_URL": "postgresql+psycopg://bob:hunter2@h:5432/e", "X": "plain value"}
    out = shell_exports(env)
    assert "hunter2" not in out and "postgresql+psycopg://bob@h:5432/e" in out and "plain value" in out
    assert _redact("mlflow server --backend-store-uri") == "mlflow server --backend-store-uri"


def test_the_store_never_shows_its_password(postgres_url: str) -> None:
    """The machine's PostgreSQL trusts local connections, so a password in the URL is accepted and unused."""
    url = postgres_url.replace("postgres@", "postgres:topsecret@", 1)
    store = EventStore(url)
    assert "topsecret" not in repr(store) and "***" in repr(store)
    store.engine.dispose()
