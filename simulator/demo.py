"""`stagegate demo`: a whole promotion story on the embedded default, with nothing started beforehand.

A champion is trained and registered; two candidates are trained from recipes: ``clickbait`` (learns from
clicks, so it wins offline NDCG, yet loses revenue live) and ``better`` (a better-fit, diversity- and
stock-aware ranker). Both go through policies/demo.yaml; the table shows where each one stopped and why.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from simulator.setup import MODEL, RECIPES, fresh_workspace, init_workspace, register_candidate

POLICY = Path(__file__).resolve().parents[1] / "policies" / "demo.yaml"
CANDIDATES = ("clickbait", "better")
# Two weeks of logged history, the last five days held out: enough for the demo world, and quick.
DEMO_HISTORY_DAYS = 14.0
DEMO_HOLDOUT_DAYS = 5.0


def _offline_ndcg_change(rt: Any, promotion_id: str) -> str:
    import pandas as pd

    verdicts = rt.events.verdicts(promotion_id, "offline")
    rows = verdicts[verdicts["gate"] == "relative:ndcg@10"]
    if rows.empty or pd.isna(rows.iloc[-1]["statistic"]):
        return "-"
    return f"{rows.iloc[-1]['statistic']:+.1%}"


def _start_prefect() -> None:
    """Make the first Prefect API call, which starts the temporary local server if none is configured."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.hello()


def run_demo(workdir: Path, policy: Path = POLICY) -> list[dict[str, Any]]:
    from rich.console import Console

    console = Console()
    started = time.perf_counter()
    root = fresh_workspace(workdir)
    console.print(f"[bold]stagegate demo[/bold] in {root}")
    # Prefect's temporary server takes ~10 s to start; let it start while the world is being built.
    warmup = threading.Thread(target=_start_prefect, daemon=True)
    warmup.start()
    with console.status("building the world, bootstrapping a champion, logging its history..."):
        info = init_workspace(root=root, history_days=DEMO_HISTORY_DAYS, holdout_days=DEMO_HOLDOUT_DAYS)
    console.print(f"champion v{info['champion_version']} serves; {info['history_requests']} logged requests")
    versions = {}
    for name in CANDIDATES:
        with console.status(f"training candidate {name}..."):
            versions[name] = register_candidate(RECIPES / f"{name}.yaml", MODEL, root=root)
        console.print(f"registered candidate {name} as v{versions[name]}")

    warmup.join()
    from flows.promote import promote
    from stagegate.report import outcome_table
    from stagegate.runtime import Runtime

    rt = Runtime.from_env()
    rows, runs = [], []
    for name, version in versions.items():
        console.rule(f"promoting {name} (v{version})")
        result = promote(model=MODEL, version=version, policy=str(policy))
        marks = {"advance": "ok", "rollback": "STOP", "hold": "HOLD"}
        stages = ", ".join(f"{s['stage']} {marks.get(s['decision'], s['decision'])}" for s in result.stages)
        rows.append(
            {
                "candidate": f"{name} v{version}",
                "NDCG@10 vs champion (offline)": _offline_ndcg_change(rt, result.promotion_id),
                "stages": stages,
                "outcome": result.outcome,
                "why": result.reason,
            }
        )
        runs.append((name, version, result))
    console.print(outcome_table(rows, "stagegate demo: promotions"))
    for name, version, result in runs:
        console.print(f"{name} v{version}: MLflow run {result.mlflow_run_id}, id {result.promotion_id}")
    champion = rt.registry.get_alias(MODEL, "champion")
    now = champion.version if champion else "-"
    console.print(f"champion now: v{now}; traffic: {rt.traffic.get_split()}")
    console.print(
        "\nWhere to look:\n"
        f"  MLflow UI:  mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'}\n"
        "              (then open http://127.0.0.1:5000)\n"
        f"  status:     STAGEGATE_HOME={root} stagegate status\n"
        "  Prefect:    these flow runs used Prefect's temporary local server; to keep them for the UI,\n"
        "              run `stagegate up` (or `prefect server start`) and set PREFECT_API_URL."
    )
    console.print(f"demo took {time.perf_counter() - started:.1f} s")
    return rows
