"""Fault injection end to end (issue 11, item 10): each fault on real parts, and after each the champion
serves all the traffic it should, no alias is left on a rejected candidate and nothing recorded is lost.

- a gate plugin (a third party's, registered through an entry point) whose evaluate raises;
- rollback twice, or after the end (stagegate.rollback and `stagegate promotions abort`).

The faults that need real servers (the Prefect server restarted, the router killed, S3 down) are in
tests/e2e/test_server_faults.py.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from simulator.setup import MODEL
from tests.e2e.test_promotion import FAST_STAGES, _state

pytestmark = pytest.mark.slow

#: Canary and rollout only: the faults below are in the stages that move traffic.
LIVE_STAGES = {
    "canary": {"steps": [{"weight": 20, "min_users": 20}], "batch_hours": 6, "gates": []},
    "rollout": FAST_STAGES["rollout"],
}

PLUGIN = '''
"""A third party's gate type: its _evaluate raises on the looks its policy entry names (a bug)."""

from __future__ import annotations

from typing import ClassVar

from gates.base import Gate, GateConfig
from stagegate.verdict import Outcome, Verdict


class RaisingConfig(GateConfig):
    raise_on_looks: list[int] = []


class RaisingGate(Gate):
    type: ClassVar[str] = "raising"
    Config: ClassVar[type[GateConfig]] = RaisingConfig

    def _evaluate(self, evidence):
        if evidence.look in self.config.raise_on_looks:
            raise RuntimeError(f"plugin bug at look {evidence.look}")
        return Verdict(self.name, Outcome.PASS, "fine", metric=self.config.metric, n=1)
'''


def live_policy(path: Path, **stages: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump({"model": MODEL, "approvals": "auto", "stages": {**LIVE_STAGES, **stages}})
    )
    return path


@pytest.fixture
def raising_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Gate type ``raising`` installed as a package would be: a module and a dist-info whose
    entry_points.txt registers it in the ``stagegate.gates`` group (stagegate/plugins.py finds it there)."""
    from stagegate import plugins

    site = tmp_path / "site"
    site.mkdir()
    (site / "raising_gate_plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "raising_gate_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: raising-gate-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[stagegate.gates]\nraising = raising_gate_plugin:RaisingGate\n")
    monkeypatch.syspath_prepend(str(site))
    plugins._entry_points.cache_clear()
    plugins.gate_class.cache_clear()
    assert "raising" in plugins.gate_types()
    yield "raising"
    plugins._entry_points.cache_clear()
    plugins.gate_class.cache_clear()
    sys.modules.pop("raising_gate_plugin", None)


def _canary_verdicts(rt: Any, promotion_id: str, gate: str) -> list[tuple[int, str]]:
    v = rt.events.verdicts(promotion_id)
    v = v[(v["stage"] == "canary") & (v["gate"] == gate)]
    return sorted(zip(v["look"].astype(int), v["outcome"], strict=True))


def test_a_gate_plugin_that_raises_at_every_look_is_error_then_rolled_back(
    workspace: dict, tmp_path: Path, raising_gate: str
) -> None:
    """ERROR at each look (not a crashed stage), tolerated up to consecutive_error_limit (2), the third
    in a row rolls back: champion back on 100%, no candidate alias, every verdict in the ledger."""
    from flows.promote import promote

    version = workspace["versions"]["better"]
    champion = workspace["info"]["champion_version"]
    gate = {"type": raising_gate, "metric": "error_rate", "raise_on_looks": list(range(1, 50))}
    canary = {**LIVE_STAGES["canary"], "steps": [{"weight": 20, "min_users": 10**8}], "gates": [gate]}
    result = promote(
        model=MODEL, version=version, policy=str(live_policy(tmp_path / "p.yaml", canary=canary))
    )

    assert result.outcome == "rolled_back" and result.stage == "canary", result.reason
    assert "RuntimeError" in result.reason and "failed with an error" not in result.reason, result.reason
    state = _state(workspace["root"])
    assert state["split"].champion == champion and state["split"].is_all_champion
    assert state["aliases"] == {"champion": champion, "candidate": None, "previous": None}
    rt = state["rt"]
    assert rt.registry.get_version(MODEL, version).tags["stagegate.status"] == "rolled_back"
    assert rt.events.promotion(result.promotion_id)["state"] == "rolled_back"
    # Two ERROR looks tolerated, the third acts: exactly three looks, each recorded as ERROR.
    assert _canary_verdicts(rt, result.promotion_id, "raising:error_rate") == [
        (1, "ERROR"),
        (2, "ERROR"),
        (3, "ERROR"),
    ]
    messages = set(rt.events.verdicts(result.promotion_id)["message"])
    assert any("the gate raised RuntimeError: plugin bug at look 1" in m for m in messages), messages


def test_a_gate_plugin_that_raises_once_does_not_act(
    workspace: dict, tmp_path: Path, raising_gate: str
) -> None:
    """One raising look is one tolerated ERROR: the canary goes on and the candidate is promoted."""
    from flows.promote import promote

    version = workspace["versions"]["better"]
    gate = {"type": raising_gate, "metric": "error_rate", "raise_on_looks": [1]}
    canary = {**LIVE_STAGES["canary"], "gates": [gate]}
    result = promote(
        model=MODEL, version=version, policy=str(live_policy(tmp_path / "p.yaml", canary=canary))
    )

    assert result.outcome == "promoted", result.reason
    rt = _state(workspace["root"])["rt"]
    looks = _canary_verdicts(rt, result.promotion_id, "raising:error_rate")
    assert looks[0] == (1, "ERROR") and looks[1:] and all(o == "PASS" for _, o in looks[1:]), looks


def _snapshot(root: Path) -> dict[str, Any]:
    """Everything a rollback could write: the split file (bytes and mtime), aliases, every version's
    tags and last update, the ledger's transitions."""
    state = _state(root)
    rt = state["rt"]
    client = rt.registry.client
    versions = {
        v.version: (dict(v.tags), v.last_updated_timestamp)
        for v in client.search_model_versions(f"name = '{MODEL}'")
    }
    traffic = root / "traffic.json"
    return {
        "split": (traffic.read_bytes(), traffic.stat().st_mtime_ns),
        "aliases": state["aliases"],
        "model_updated": client.get_registered_model(MODEL).last_updated_timestamp,
        "versions": versions,
        "ledger": {
            p["id"]: (p["state"], len(rt.events.transitions(p["id"]))) for p in rt.events.promotions()
        },
    }


def test_rollback_twice_or_after_the_end_changes_nothing(workspace: dict, tmp_path: Path) -> None:
    """A promotion rolled back, then a later one promoted. Rolling either back again (the library call
    and `stagegate promotions abort`) writes nothing: the promoted version keeps serving, the earlier
    rollback cannot demote the later champion, no alias, tag, split or ledger row changes; each says so."""
    from flows.promote import promote
    from stagegate.cli import app
    from stagegate.rollback import PromotionEnded, RollbackTarget, roll_back_promotion

    champion = workspace["info"]["champion_version"]
    worse, better = workspace["versions"]["clickbait"], workspace["versions"]["better"]
    failing = {
        **LIVE_STAGES["canary"],
        "gates": [{"type": "threshold", "metric": "revenue_per_user", "max": -1.0, "on_fail": "rollback"}],
    }
    first = promote(model=MODEL, version=worse, policy=str(live_policy(tmp_path / "f.yaml", canary=failing)))
    assert first.outcome == "rolled_back", first.reason
    guard = {**LIVE_STAGES["canary"], "gates": [{"type": "guardrail", "metric": "error_rate", "max": 0.2}]}
    second = promote(model=MODEL, version=better, policy=str(live_policy(tmp_path / "s.yaml", canary=guard)))
    assert second.outcome == "promoted", second.reason
    before = _snapshot(workspace["root"])
    assert before["aliases"] == {"champion": better, "candidate": None, "previous": champion}

    rt = _state(workspace["root"])["rt"]
    ports = dict(traffic=rt.traffic, registry=rt.registry, events=rt.events, stage="canary", reason="again")
    # The promoted one: refused, nothing written.
    with pytest.raises(PromotionEnded, match=f"v{better} serves and keeps serving; nothing was changed"):
        roll_back_promotion(
            RollbackTarget(second.promotion_id, MODEL, better, champion), outcome="rolled_back", **ports
        )
    # The rolled-back one, after a later promotion: reported as ended, nothing written (its champion is
    # no longer the champion, which the read-back says).
    again = roll_back_promotion(
        RollbackTarget(first.promotion_id, MODEL, worse, champion), outcome="rolled_back", **ports
    )
    assert again.already_ended and again.ledger_closed and again.outcome == "rolled_back"
    assert again.rounds == 0 and not again.traffic_ok, again
    assert any("nothing changed" in p for p in again.problems), again.problems
    for pid, word in ((second.promotion_id, "promoted"), (first.promotion_id, "rolled back")):
        out = CliRunner().invoke(app, ["promotions", "abort", pid[:8], "--reason", "twice"])
        assert out.exit_code == 2, out.output
        assert f"promotion {pid} has ended" in out.output and "nothing changed" in out.output, out.output
        assert word in out.output, out.output
    assert _snapshot(workspace["root"]) == before
    split = _state(workspace["root"])["split"]
    assert split.champion == better and split.is_all_champion
