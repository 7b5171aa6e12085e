"""Approver identity (stagegate.identity): a token proves an approver, its digest alone does not, and
rotating or revoking it takes effect at once; on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from stagegate.events.store import EventStore, approver_tokens
from stagegate.identity import UnknownApprover, approvers, check_token, issue_token, revoke


@pytest.fixture(params=["sqlite", "postgresql"])
def events(request: pytest.FixtureRequest, tmp_path: Path) -> EventStore:
    if request.param == "sqlite":
        return EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    return EventStore(request.getfixturevalue("postgres_url"))


def test_only_the_issued_token_proves_the_approver(events: EventStore) -> None:
    token = issue_token(events, "alice")
    other = issue_token(events, "bob")
    assert check_token(events, "alice", token) is None
    assert check_token(events, "alice", f"  {token}\n") is None  # pasted with whitespace
    assert "does not match" in check_token(events, "alice", other)  # bob's token is not alice's
    assert "does not match" in check_token(events, "alice", token[:-1] + ("x" if token[-1] != "x" else "y"))
    assert "no token given" in check_token(events, "alice", "")
    assert "no token was issued" in check_token(events, "mallory", token)


def test_the_ledger_keeps_a_salted_digest_never_the_token(events: EventStore) -> None:
    token = issue_token(events, "alice")
    with events.engine.connect() as conn:
        row = conn.execute(select(approver_tokens).where(approver_tokens.c.name == "alice")).mappings().one()
    assert token not in str(dict(row)) and token.removeprefix("sgt_") not in str(dict(row))
    # the digest cannot be replayed as a token
    assert check_token(events, "alice", row["digest"]) is not None
    again = issue_token(events, "carol")
    with events.engine.connect() as conn:
        salts = conn.execute(select(approver_tokens.c.salt)).scalars().all()
    assert len(set(salts)) == len(salts) == 2 and again != token


def test_rotating_or_revoking_invalidates_the_old_token_at_once(events: EventStore) -> None:
    first = issue_token(events, "alice")
    second = issue_token(events, "alice")
    assert "does not match" in check_token(events, "alice", first)
    assert check_token(events, "alice", second) is None
    revoke(events, "alice")
    assert "revoked" in check_token(events, "alice", second)
    with pytest.raises(UnknownApprover, match="alice"):
        revoke(events, "alice")  # nothing active to revoke
    [alice] = approvers(events)
    assert alice.name == "alice" and not alice.active
    third = issue_token(events, "alice")  # re-issuing re-activates
    assert check_token(events, "alice", third) is None and approvers(events)[0].active


def test_approvers_cli_issues_lists_and_revokes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stagegate.cli import app

    monkeypatch.setenv("STAGEGATE_HOME", str(tmp_path))
    monkeypatch.delenv("STAGEGATE_EVENTS_URL", raising=False)
    runner = CliRunner()
    added = runner.invoke(app, ["approvers", "add", "release-manager"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[0]
    events = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    assert token.startswith("sgt_") and check_token(events, "release-manager", token) is None
    listed = runner.invoke(app, ["approvers", "list", "--json"])
    assert listed.exit_code == 0 and '"active": true' in listed.stdout and token not in listed.stdout
    assert runner.invoke(app, ["approvers", "revoke", "release-manager"]).exit_code == 0
    assert "revoked" in check_token(events, "release-manager", token)
    again = runner.invoke(app, ["approvers", "revoke", "release-manager"])
    assert again.exit_code == 2 and "no active token" in again.output
    assert runner.invoke(app, ["approvers", "add", "  "]).exit_code == 2


def test_approve_without_a_token_is_refused_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stagegate.cli import app

    monkeypatch.setenv("STAGEGATE_HOME", str(tmp_path))
    monkeypatch.delenv("STAGEGATE_APPROVER_TOKEN", raising=False)
    # no Prefect server at this address: had the answer been sent, the error would be a connection error
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    out = CliRunner().invoke(app, ["approve", "00000000-0000-0000-0000-000000000000", "--approver", "alice"])
    assert out.exit_code == 2 and "needs 'alice''s token" in out.output, out.output
