"""The proof of issue 8: promotions run with adapters that are not the simulator.

- traffic: the ``http`` controller against a router admin API served by a separate process
  (tests/proof/fake_router.py, a real HTTP server on loopback);
- metrics: the ``events`` source on a fresh PostgreSQL database that another separate process
  (tests/proof/event_filler.py) fills with per-user events according to the split it reads from the router;
- clock: ``wall``, with looks a few seconds apart (the waits block in-process, within max_block_seconds);
- the promotions run in their own process (tests/proof/drive_promotions.py), which reports every module it
  imported.

Policy: shadow, a two-step canary, a short rollout bake; no offline or simulation stage. The clearly worse
candidate is rolled back at the canary (and the router reads all-champion afterwards); the better one is
promoted (everyone on it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.proof.fake_router import REPO, running

#: What must not be imported in the flow's process (the simulator, today and after its move).
SIMULATOR_MODULES = ("stagegate.world", "stagegate.oracle", "stagegate.setup", "stagegate.demo", "simulator")

MODEL = "proof-ranker"
TOKEN = "proof-admin-token"
BATCH = 2 / 3600  # two seconds, in hours
CANARY_WEIGHTS = (20, 50)
HOLDBACK = 0.2
POLICY = {
    "model": MODEL,
    "approvals": "auto",
    "stages": {
        "shadow": {
            "min_requests": 40,
            "batch_hours": BATCH,
            "max_hours": 4 * BATCH,
            "gates": [{"type": "threshold", "metric": "out_of_stock_share", "max": 0.5}],
        },
        "canary": {
            "steps": [{"weight": w, "min_users": 10} for w in CANARY_WEIGHTS],
            "batch_hours": BATCH,
            "max_hours_per_step": BATCH,
            "gates": [
                {"type": "guardrail", "metric": "error_rate", "max": 0.1, "on_inconclusive": "record"},
                {
                    "type": "relative",
                    "metric": "revenue_per_user",
                    "min_change": -0.3,
                    "on_inconclusive": "record",
                },
            ],
        },
        "rollout": {
            "bake": "4s",
            "batch_hours": BATCH,
            "holdback": HOLDBACK,
            "gates": [{"type": "guardrail", "metric": "error_rate", "max": 0.1, "on_inconclusive": "record"}],
        },
    },
}


def _database() -> Iterator[str]:
    """A fresh PostgreSQL database for the module (the conftest fixture is per test), dropped after."""
    from sqlalchemy import create_engine, text

    from tests.conftest import PG_ADMIN_URL

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"stagegate_proof_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _register_models(home: Path) -> None:
    """Four versions of a contract-conforming pyfunc model in the workspace's MLflow; v1 is champion.

    The flow never loads them (the router serves), but open-promotion checks each version's signature."""
    import mlflow

    from examples.sklearn_ranker.train import MODEL_FILE
    from stagegate.contract import contract_signature
    from stagegate.registry import Registry

    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("proof-models", artifact_location=(home / "artifacts").as_uri())
    state = home / "state.pkl"
    state.write_bytes(b"not loaded: the router serves the models")
    with mlflow.start_run(experiment_id=experiment, run_name="proof model"):
        info = mlflow.pyfunc.log_model(
            name="ranker",
            python_model=str(MODEL_FILE),
            artifacts={"state": str(state)},
            signature=contract_signature(),
            pip_requirements=["mlflow"],
        )
    for _ in range(4):
        mlflow.register_model(info.model_uri, MODEL)
    Registry(uri).set_alias(MODEL, "champion", "1")


@pytest.fixture(scope="module")
def proof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Router, event filler and the promotions' process; what they reported."""
    home = tmp_path_factory.mktemp("proof")
    database = _database()
    events_url = next(database)
    started = time.monotonic()
    _register_models(home)
    registered = time.monotonic() - started
    policy = home / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    with running(TOKEN) as router:
        connections = home / "connections.yaml"
        adapters = {
            "version": 1,
            "traffic": {
                "type": "http",
                "base_url": router.url,
                "token": {"env": "ROUTER_ADMIN_TOKEN"},
                "timeout_seconds": 5,
            },
            "metrics": {"type": "events", "url": events_url},
            "clock": {"type": "wall", "max_block_seconds": 30},
        }
        connections.write_text(yaml.safe_dump(adapters))
        # The same adapters on a wall clock that never blocks: every look is deferred and resumed.
        deferring = home / "connections-deferring.yaml"
        deferring.write_text(yaml.safe_dump({**adapters, "clock": {"type": "wall", "max_block_seconds": 0}}))
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "STAGEGATE_HOME": str(home),
            "STAGEGATE_CONNECTIONS": str(connections),
            "STAGEGATE_EVENTS_URL": events_url,  # the ledger in the same database as the events
            "ROUTER_ADMIN_TOKEN": TOKEN,
            "ROUTER_TOKEN": TOKEN,
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
        filler_log = (home / "filler.log").open("w")
        filler = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.proof.event_filler",
                "--events-url",
                events_url,
                "--router-url",
                router.url,
                "--better",
                "3,4",
                "--worse",
                "2",
                "--canary-weights",
                ",".join(str(w / 100) for w in CANARY_WEIGHTS),
                "--rollout-weight",
                str(1 - HOLDBACK),
            ],
            env=env,
            cwd=REPO,
            stdout=filler_log,
            stderr=subprocess.STDOUT,
        )
        try:
            driver = subprocess.run(
                [
                    *(sys.executable, "-m", "tests.proof.drive_promotions", MODEL, str(policy), "2", "3"),
                    *("--deferring", str(deferring), "4"),
                ],
                env=env,
                cwd=home,
                capture_output=True,
                text=True,
                timeout=360,
            )
        finally:
            filler.terminate()
            filler.wait(timeout=10)
            filler_log.close()
    took = time.monotonic() - started
    line = next((x for x in driver.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert driver.returncode == 0 and line, (driver.stdout[-3000:], driver.stderr[-5000:])
    report = json.loads(line[len("RESULT ") :])
    report.update(
        events_url=events_url,
        splits=router.splits(),
        filler=(home / "filler.log").read_text(),
        seconds=took,
        setup_seconds=registered,
    )
    yield report
    next(database, None)


def _ledger(events_url: str, promotion_id: str) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    from stagegate.events.store import EventStore

    store = EventStore(events_url)
    return store.promotion(promotion_id), store.transitions(promotion_id), store.verdicts(promotion_id)


def test_promotions_run_on_an_http_router_postgres_events_and_the_wall_clock(proof: dict) -> None:
    worse, better, _ = proof["runs"]
    # The clearly worse candidate (v2) is rolled back in the canary; the router reads all-champion.
    assert worse["result"]["outcome"] == "rolled_back", worse["result"]
    assert worse["result"]["stage"] == "canary" and "error_rate" in worse["result"]["reason"]
    assert worse["split"] == {"champion": "1", "candidate": None, "candidate_weight": 0.0, "shadow": False}
    # The better one (v3) goes through shadow, both canary steps and the bake, then everyone is on it.
    assert better["result"]["outcome"] == "promoted", better["result"]
    assert [s["stage"] for s in better["result"]["stages"]] == ["shadow", "canary", "rollout"]
    assert better["split"] == {"champion": "3", "candidate": None, "candidate_weight": 0.0, "shadow": False}

    # The router was asked for exactly the ramp of the policy, in order.
    moves = [(s["candidate"], s["candidate_weight"], s["shadow"]) for s in proof["splits"]]
    assert moves[:2] == [("2", 0.0, True), ("2", 0.2, False)]
    assert moves[2] == (None, 0.0, False)  # the rollback
    ramp = [
        ("3", 0.0, True),
        ("3", 0.2, False),
        ("3", 0.5, False),
        ("3", 1 - HOLDBACK, False),
        (None, 0.0, False),
    ]
    assert moves[3 : 3 + len(ramp)] == ramp

    # The ledger (PostgreSQL) holds the verdicts, judged on the filler's events of each step.
    row, transitions, verdicts = _ledger(proof["events_url"], better["result"]["promotion_id"])
    assert row["state"] == "promoted"
    assert {"shadow", "canary", "rollout"} <= set(verdicts["stage"])
    assert set(verdicts[verdicts["stage"] == "canary"]["step"]) == {1, 2}
    assert not (verdicts["outcome"] == "ERROR").any()
    assert any("canary step 2" in (t["reason"] or "") for t in transitions)
    row, _, verdicts = _ledger(proof["events_url"], worse["result"]["promotion_id"])
    assert row["state"] == "rolled_back"
    failed = verdicts[verdicts["outcome"] == "FAIL"]
    assert not failed.empty and set(failed["stage"]) == {"canary"}
    print(
        f"proof: {proof['seconds']:.1f}s in all, model set-up {proof['setup_seconds']:.1f}s, promotions "
        f"{worse['seconds']}s (rolled back) and {better['seconds']}s (promoted)"
    )


def test_a_promotion_deferred_at_every_look_is_resumed_from_the_ledger_to_promotion(proof: dict) -> None:
    """v4 on a wall clock that never blocks: each look ends the run as deferred, and each resume rebuilds
    the loop from the ledger's checkpoint (flows.resume) and judges the next look, through every stage."""
    run = proof["runs"][2]
    assert run["result"]["outcome"] == "promoted", run["result"]
    assert run["split"] == {"champion": "4", "candidate": None, "candidate_weight": 0.0, "shadow": False}
    deferred_at = [d["stage"] for d in run["deferrals"]]
    assert {"shadow", "canary", "rollout"} <= set(deferred_at), deferred_at
    row, transitions, verdicts = _ledger(proof["events_url"], run["result"]["promotion_id"])
    assert row["state"] == "promoted" and row["checkpoint"]["stage"] == "rollout"
    resumed = [t for t in transitions if (t["reason"] or "").startswith("resumed from the ledger")]
    assert len(resumed) == len(run["deferrals"])
    # Every look judged once, numbered on from where the ledger stood (no look repeated, none skipped;
    # shadow judges only once it has its requests, so its first looks have no verdicts).
    looks = verdicts[verdicts["stage"] != "shadow"].drop_duplicates(["stage", "step", "look"])
    for (stage, step), group in looks.groupby(["stage", "step"]):
        assert sorted(group["look"]) == list(range(1, len(group) + 1)), (stage, step, list(group["look"]))
    assert not verdicts.duplicated(["stage", "step", "look", "gate"]).any()
    assert set(verdicts[verdicts["stage"] == "canary"]["step"]) == {1, 2}
    assert not (verdicts["outcome"] == "ERROR").any()
    print(f"deferred and resumed {len(deferred_at)} times ({deferred_at}) in {run['seconds']}s")


def test_flow_process_imports_no_simulator(proof: dict) -> None:
    imported = [
        m for m in proof["modules"] if any(m == s or m.startswith(f"{s}.") for s in SIMULATOR_MODULES)
    ]
    assert imported == [], f"simulator modules imported in the flow's process: {imported}"
