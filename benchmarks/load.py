"""Benchmark: N promotions of N models at once on one Prefect server and one process worker.

1. A stack (``stagegate up``'s Stack: Prefect server and MLflow server on PostgreSQL databases made for
   this run, SeaweedFS, one process worker, the deployments of infra/prefect.yaml) on free ports.
2. N workspaces, each a small simulated world with its own champion, model name (``load-<i>``), ledger,
   MLflow file and traffic split; even ones get the ``better`` candidate with a policy that promotes it,
   odd ones ``clickbait`` with a canary gate that must fail on its first look (revenue per user below
   zero), so the right outcome of each is known before it runs: promoted, or rolled back at the canary.
3. All N ``promote/promote`` runs are submitted at once (``run_deployment(..., timeout=0)``), each with
   its workspace in the run's job variables; the worker runs them side by side. Each flow process carries
   benchmarks/load_probe (sitecustomize), which sums the wall time spent waiting on the Prefect API and
   in MLflow client calls.
4. Reported: each run's outcome against the expected one, the wall time from submission to the last
   terminal state, each run's own duration, and the Prefect and MLflow shares of the flow processes'
   summed wall time. Baseline in the same run: one promotion alone, before the N.

Usage: ``python benchmarks/load.py [--n 10] [--json out.json]`` (``make bench-load``). Takes minutes on
2 cores: N flow processes share them with the servers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "benchmarks" / "load_probe"
PG = os.environ.get("STAGEGATE_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
sys.path.insert(0, str(REPO))  # for tests/ (the policy below) when run as `python benchmarks/load.py`

# the end-to-end tests' fast policy: each stage decides within a few simulated hours
from tests.e2e.test_promotion import FAST_STAGES as STAGES  # noqa: E402

FAILING_CANARY = {
    **STAGES["canary"],
    "gates": [{"type": "threshold", "metric": "revenue_per_user", "max": -1.0, "on_fail": "rollback"}],
}


def make_workspace(base: Path, i: int) -> dict[str, Any]:
    """World, champion and candidate of model ``load-<i>``, its policy and the outcome it must reach."""
    from simulator.setup import RECIPES, init_workspace, register_candidate

    model, root = f"load-{i}", base / f"ws{i}"
    info = init_workspace(size="small", root=root, seed=11 + i, model=model)
    good = i % 2 == 0
    version = register_candidate(RECIPES / ("better.yaml" if good else "clickbait.yaml"), model, root=root)
    stages = STAGES if good else {**STAGES, "canary": FAILING_CANARY}
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump({"model": model, "approvals": "auto", "stages": stages}))
    env = {
        "STAGEGATE_HOME": str(root),
        "STAGEGATE_MLFLOW_URI": f"sqlite:///{root / 'mlflow.db'}",
        "STAGEGATE_EVENTS_URL": f"sqlite:///{root / 'events.db'}",
    }
    return {
        "model": model,
        "version": version,
        "champion": info["champion_version"],
        "policy": str(policy),
        "env": env,
        "expected": "promoted" if good else "rolled_back",
    }


def submit(api: str, ws: dict[str, Any], probe_dir: Path) -> str:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {**ws["env"], "PYTHONPATH": str(PROBE), "STAGEGATE_PROBE_DIR": str(probe_dir)}
    with temporary_settings({PREFECT_API_URL: api}):
        run = run_deployment(
            "promote/promote",
            parameters={"model": ws["model"], "version": ws["version"], "policy": ws["policy"]},
            job_variables={"env": env},
            timeout=0,
        )
    return str(run.id)


def wait_all(api: str, run_ids: list[str], timeout: float) -> dict[str, Any]:
    """Poll until every run is terminal; the final FlowRun of each."""
    from uuid import UUID

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while True:
            runs = {rid: client.read_flow_run(UUID(rid)) for rid in run_ids}
            if all(r.state and r.state.is_final() for r in runs.values()):
                return runs
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"runs not final after {timeout:.0f}s: {[r.state_name for r in runs.values()]}"
                )
            time.sleep(1.0)


def outcome_of(ws: dict[str, Any]) -> dict[str, Any]:
    """What the ledger and the registry say after the run (the right outcome, checked from the stores)."""
    from simulator.traffic import FileTrafficController
    from stagegate.events.store import EventStore
    from stagegate.registry import Registry

    [row] = EventStore(ws["env"]["STAGEGATE_EVENTS_URL"]).promotions(ws["model"])
    registry = Registry(ws["env"]["STAGEGATE_MLFLOW_URI"])
    champion = registry.get_alias(ws["model"], "champion")
    split = FileTrafficController(Path(ws["env"]["STAGEGATE_HOME"]) / "traffic.json").get_split()
    serving = ws["version"] if ws["expected"] == "promoted" else ws["champion"]
    right = (
        row["state"] == ws["expected"]
        and champion is not None
        and champion.version == serving
        and split.champion == serving
        and split.is_all_champion
        and registry.get_alias(ws["model"], "candidate") is None
    )
    return {"state": row["state"], "stage": row["stage"], "right": right}


def probe_totals(probe_dir: Path) -> dict[str, float]:
    files = [json.loads(p.read_text()) for p in probe_dir.glob("*.json")]
    keys = ("wall_s", "prefect_s", "mlflow_s", "prefect_calls", "mlflow_calls")
    totals = {k: float(sum(f[k] for f in files)) for k in keys}
    totals["processes"] = len(files)
    return totals


def run_batch(api: str, workspaces: list[dict[str, Any]], probe_dir: Path, timeout: float) -> dict[str, Any]:
    probe_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(workspaces)) as pool:  # submitted at once, not one by one
        run_ids = list(pool.map(lambda ws: submit(api, ws, probe_dir), workspaces))
    runs = wait_all(api, run_ids, timeout)
    wall = time.monotonic() - started
    rows = []
    for ws, rid in zip(workspaces, run_ids, strict=True):
        run = runs[rid]
        seconds = (run.end_time - run.start_time).total_seconds() if run.start_time and run.end_time else None
        rows.append(
            {
                "model": ws["model"],
                "expected": ws["expected"],
                "run": run.state_name,
                "seconds": seconds,
                **outcome_of(ws),
            }
        )
    probe = probe_totals(probe_dir)
    return {
        "n": len(workspaces),
        "wall_s": round(wall, 1),
        "all_right": all(r["right"] for r in rows),
        "runs": rows,
        "probe": probe,
        "prefect_share": probe["prefect_s"] / probe["wall_s"] if probe["wall_s"] else None,
        "mlflow_share": probe["mlflow_s"] / probe["wall_s"] if probe["wall_s"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from stagegate.stack import Stack, StackConfig, free_port
    from stagegate.workspace import Workspace

    base = Path(tempfile.mkdtemp(prefix="stagegate-load-"))
    prefix = f"sgload_{uuid.uuid4().hex[:8]}"
    stack = Stack(Workspace.from_env(base / "stack-ws"))
    ports = {"prefect": free_port(), "mlflow": free_port(), "s3": free_port(grpc_too=True)}
    try:
        started = time.monotonic()
        state = stack.up(StackConfig(ports=ports, postgres_url=PG, db_prefix=prefix))
        api = state["urls"]["prefect_api"]
        print(f"stack up in {time.monotonic() - started:.1f}s: {api}", flush=True)
        started = time.monotonic()
        workspaces = [make_workspace(base, i) for i in range(args.n + 1)]
        print(f"{args.n + 1} workspaces in {time.monotonic() - started:.1f}s", flush=True)
        alone = run_batch(api, workspaces[:1], base / "probe-alone", args.timeout)
        print(f"one promotion alone: {alone['wall_s']}s, right: {alone['all_right']}", flush=True)
        batch = run_batch(api, workspaces[1:], base / "probe-batch", args.timeout)
        for row in batch["runs"]:
            print(
                f"  {row['model']}: {row['state']} at {row['stage']} (expected {row['expected']}; "
                f"{'right' if row['right'] else 'WRONG'}), {row['seconds']:.1f}s"
            )
        per_run = [r["seconds"] for r in batch["runs"] if r["seconds"]]
        print(
            f"{args.n} at once: {batch['wall_s']}s wall "
            f"({batch['wall_s'] / alone['wall_s']:.1f}x one alone), "
            f"runs {min(per_run):.1f}-{max(per_run):.1f}s; all right: {batch['all_right']}; of the flow "
            f"processes' summed wall time {batch['probe']['wall_s']:.0f}s, Prefect API "
            f"{batch['prefect_share']:.1%} ({batch['probe']['prefect_calls']:.0f} requests), MLflow "
            f"{batch['mlflow_share']:.1%} ({batch['probe']['mlflow_calls']:.0f} calls)",
            flush=True,
        )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"alone": alone, "batch": batch}, indent=2, default=str))
        if not (alone["all_right"] and batch["all_right"]):
            sys.exit(1)
    finally:
        stack.down()
        drop_databases(prefix)
        shutil.rmtree(base, ignore_errors=True)


def drop_databases(prefix: str) -> None:
    """The PostgreSQL databases the stack made for this run."""
    from sqlalchemy import create_engine, text

    engine = create_engine(
        PG.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        for name in (f"{prefix}_prefect", f"{prefix}_mlflow", f"{prefix}_events"):
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


if __name__ == "__main__":
    main()
