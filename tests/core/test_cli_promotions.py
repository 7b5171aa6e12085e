"""``stagegate promotions list | get | abort`` and ``status --json`` on a real SQLite ledger and the real
file traffic controller (the registry is test_reconcile's stand-in with MLflow's alias semantics)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from simulator.traffic import FileTrafficController
from stagegate import rollback
from stagegate.cli import app
from stagegate.cli_promotions import UnknownPromotion, resolve_id
from stagegate.events.store import EventStore
from stagegate.runtime import Runtime
from stagegate.traffic import Split
from stagegate.verdict import Outcome, Verdict
from tests.core.test_reconcile import CANDIDATE, CHAMPION, MODEL, FakeRegistry


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Mid-canary: the candidate on 20%, one look judged; every command's Runtime is this one."""
    monkeypatch.setattr(rollback, "RETRY_DELAY", 0.01)
    events = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    traffic = FileTrafficController(tmp_path / "traffic.json")
    traffic.set_split(Split(champion=CHAMPION, candidate=CANDIDATE, candidate_weight=0.2))
    registry = FakeRegistry(aliases={"champion": CHAMPION, "candidate": CANDIDATE})
    pid = events.open_promotion(
        model=MODEL, version=CANDIDATE, policy_path="p.yaml", policy={}, champion_version=CHAMPION
    )
    events.transition(pid, "canary", "canary step 1: 20% of users", stage="canary")
    verdict = Verdict(
        "sequential:revenue", Outcome.INCONCLUSIVE, "not yet", statistic=0.01, ci_low=-0.2, ci_high=0.3, n=40
    )
    events.record_verdicts(pid, "canary", 1, 1, [(verdict, None)])
    rt = SimpleNamespace(events=events, traffic=traffic, registry=registry)
    monkeypatch.setattr(Runtime, "from_env", classmethod(lambda cls: rt))
    return SimpleNamespace(rt=rt, pid=pid)


def run(*args: str) -> object:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "160"})


def test_list_and_get_show_full_ids_history_and_json(host: SimpleNamespace) -> None:
    listed = run("promotions", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["id"], r["state"], r["stage"]) for r in rows] == [(host.pid, "canary", "canary")]
    assert host.pid in run("promotions", "list", "--open").output

    got = run("promotions", "get", host.pid[:8], "--json")  # a unique prefix is enough
    assert got.exit_code == 0, got.output
    history = json.loads(got.output)
    assert history["promotion"]["id"] == host.pid
    assert [t["to_state"] for t in history["transitions"]] == ["registered", "canary"]
    (look,) = history["looks"]
    assert (look["stage"], look["step"], look["look"]) == ("canary", 1, 1)
    assert look["gates"][0] | {"message": None} == {
        "gate": "sequential:revenue",
        "outcome": "INCONCLUSIVE",
        "action": None,
        "statistic": 0.01,
        "ci_low": -0.2,
        "ci_high": 0.3,
        "n": 40,
        "message": None,
    }
    text = run("promotions", "get", host.pid)
    assert "verdicts by look" in text.output and "[-0.2, +0.3]" in text.output


def test_abort_rolls_back_traffic_first_and_closes_the_ledger(host: SimpleNamespace) -> None:
    done = run("promotions", "abort", host.pid[:6], "--reason", "wrong candidate")
    assert done.exit_code == 0, done.output
    split = host.rt.traffic.get_split()
    assert (split.champion, split.candidate, split.candidate_weight) == (CHAMPION, None, 0.0)
    row = host.rt.events.promotion(host.pid)
    assert row["state"] == "rolled_back" and "aborted by the operator: wrong candidate" in row["reason"]
    assert "candidate" not in host.rt.registry.aliases and host.rt.registry.aliases["champion"] == CHAMPION
    again = run("promotions", "abort", host.pid, "--reason", "twice")
    assert again.exit_code == 2 and "has ended (rolled_back)" in again.output


def test_unknown_and_ambiguous_ids_are_refused(host: SimpleNamespace) -> None:
    unknown = run("promotions", "get", "ffffffff")
    assert unknown.exit_code == 2 and "no promotion 'ffffffff'" in unknown.output
    events = SimpleNamespace(promotions=lambda: [{"id": "abcd-1"}, {"id": "abcd-2"}, {"id": "b"}])
    with pytest.raises(UnknownPromotion, match="ambiguous: abcd-1, abcd-2"):
        resolve_id(events, "abcd")
    with pytest.raises(UnknownPromotion, match="4\\+ characters"):
        resolve_id(events, "abc")  # too short to be a prefix
    assert resolve_id(events, "b") == "b"  # an exact id, however short


def test_status_json_lists_the_split_and_full_promotion_ids(
    host: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeRegistry, "versions", lambda self, model: [self._info(CHAMPION)], raising=False)
    monkeypatch.setattr("stagegate.cli._reconcile", lambda model, quiet: [])
    out = run("status", "--model", MODEL, "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["versions"][0]["aliases"] == ["champion"]
    assert data["split"]["candidate_weight"] == 0.2
    assert [p["id"] for p in data["promotions"]] == [host.pid]


def test_retry_promotes_the_same_version_again_only_after_it_ended(
    host: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`promotions retry ID` (as `kubectl argo rollouts retry`): refused while open, and for a promoted one;
    after a rollback it runs `stagegate promote` with the recorded model, version and policy file (here a
    policy file that is gone, so promote refuses it by name before anything moves)."""
    monkeypatch.chdir(tmp_path)
    still_open = run("promotions", "retry", host.pid[:8])
    assert still_open.exit_code == 2 and "still open (canary)" in still_open.output, still_open.output
    assert run("promotions", "abort", host.pid, "--reason", "bad look").exit_code == 0
    retried = run("promotions", "retry", host.pid[:8])
    assert f"retrying {host.pid} (rolled_back): {MODEL} v{CANDIDATE} under p.yaml" in retried.output
    assert retried.exit_code == 2 and "p.yaml" in retried.output.splitlines()[-1], retried.output
    assert host.rt.traffic.get_split().is_all_champion  # nothing moved
    assert [r["id"] for r in host.rt.events.promotions(MODEL)] == [host.pid]  # no new promotion opened

    events = host.rt.events
    done = events.open_promotion(
        model=MODEL, version=CANDIDATE, policy_path="p.yaml", policy={}, champion_version=CHAMPION
    )
    for state in ("canary", "rollout", "promoted"):
        events.transition(done, state, state, stage="rollout" if state != "canary" else "canary")
    promoted = run("promotions", "retry", done)
    assert promoted.exit_code == 2 and "was promoted" in promoted.output, promoted.output
