"""Human-readable reports: the status of a model's promotions, the demo's closing table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def print_status(model: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from stagegate.registry import RegistryError
    from stagegate.runtime import Runtime

    rt = Runtime.from_env()
    console = Console()
    try:
        versions = rt.registry.versions(model)
    except RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        return
    table = Table(title=f"{model}: versions")
    for col in ("version", "aliases", "status", "stage", "reason"):
        table.add_column(col)
    for v in versions:
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            v.tags.get("stagegate.status", "registered"),
            v.tags.get("stagegate.stage", ""),
            v.tags.get("stagegate.reason", "")[:80],
        )
    console.print(table)
    try:
        split = rt.traffic.get_split()
    except Exception as exc:  # a truncated or hand-edited split file: say so, and show the ledger anyway
        console.print(f"[red]traffic: cannot read the split ({rt.workspace.traffic_path}): {exc}[/red]")
    else:
        console.print(
            f"traffic: champion v{split.champion}, candidate "
            f"{'v' + split.candidate if split.candidate else '-'} at {split.candidate_weight:.0%}, "
            f"shadow {'on' if split.shadow else 'off'}"
        )
    promos = Table(title="promotions")
    promos.add_column("id", no_wrap=True, min_width=36)  # whole, so that it can be copied
    for col in ("version", "state", "stage", "mlflow run", "reason"):
        promos.add_column(col, overflow="fold")
    for p in rt.events.promotions(model):
        promos.add_row(
            p["id"],
            p["version"],
            p["state"],
            p["stage"] or "",
            p["mlflow_run_id"] or "",
            (p["reason"] or "")[:80],
        )
    console.print(promos)


def status_data(model: str) -> dict[str, Any]:
    """What ``status`` shows, as JSON-ready data: versions with aliases and tags, the split, promotions."""
    from dataclasses import asdict

    from stagegate.cli_promotions import ROW_FIELDS, jsonable
    from stagegate.registry import RegistryError
    from stagegate.runtime import Runtime

    rt = Runtime.from_env()
    out: dict[str, Any] = {"model": model}
    try:
        out["versions"] = [asdict(v) for v in rt.registry.versions(model)]
    except RegistryError as exc:
        out["versions"], out["error"] = [], str(exc)
    try:
        out["split"] = rt.traffic.get_split().model_dump(mode="json")
    except Exception as exc:  # shown as an error, the ledger still listed
        out["split"], out["split_error"] = None, f"{type(exc).__name__}: {exc}"
    fields = (*ROW_FIELDS, "reason", "mlflow_run_id")
    out["promotions"] = [{k: p.get(k) for k in fields} for p in rt.events.promotions(model)]
    return jsonable(out)


def outcome_table(rows: Sequence[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=True, expand=True)
    for col in rows[0] if rows else ():
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table
