"""``stagegate promotions``: the operator's view of the ledger, as `kubectl argo rollouts` gives one.

``list`` (every promotion, or a model's, or the open ones), ``get ID`` (one promotion with its history:
transitions, verdicts per look, the checkpoint its look loop stands at) and ``abort ID`` (roll it back
now, traffic first, with the flow's own procedure). ``resume ID`` is ``stagegate resume``. Every ID may be
a unique prefix of a promotion id (as ``status`` and ``list`` print them in full); ``--json`` gives the
same data to scripts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer

promotions_app = typer.Typer(help="Promotions in the ledger: list, get (with history), abort, retry.")

BAD_INPUT = 2


class UnknownPromotion(LookupError):
    """No promotion, or more than one, matches the id given."""


def resolve_id(events: Any, given: str) -> str:
    """The full id of the promotion ``given`` names: its id, or a unique prefix of one."""
    ids = [p["id"] for p in events.promotions()]
    if given in ids:
        return given
    matches = [i for i in ids if i.startswith(given)] if len(given) >= 4 else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownPromotion(f"promotion id prefix {given!r} is ambiguous: {', '.join(sorted(matches))}")
    raise UnknownPromotion(f"no promotion {given!r} in the ledger (ids or unique prefixes of 4+ characters)")


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _events() -> Any:
    from stagegate.runtime import Runtime

    return Runtime.from_env().events


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(BAD_INPUT)


ROW_FIELDS = ("id", "model", "version", "state", "stage", "champion_version", "started_at", "updated_at")


@promotions_app.command("list")
def list_promotions(
    model: str = typer.Option(None, help="only this registered model"),
    open_only: bool = typer.Option(False, "--open", help="only promotions that have not ended"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """Promotions in the ledger, oldest first, with full ids."""
    rows = _events().promotions(model, open_only=open_only)
    if as_json:
        fields = (*ROW_FIELDS, "reason")
        typer.echo(json.dumps([jsonable({k: r.get(k) for k in fields}) for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="promotions")
    table.add_column("id", no_wrap=True, min_width=36)  # whole, so that it can be copied
    for col in ("model", "version", "state", "stage", "started", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        started = r["started_at"].isoformat(timespec="seconds") if r.get("started_at") else ""
        table.add_row(
            r["id"], r["model"], r["version"], r["state"], r["stage"] or "", started, (r["reason"] or "")[:80]
        )
    Console().print(table)


def promotion_history(events: Any, promotion_id: str) -> dict[str, Any]:
    """One promotion as ``get`` shows it: the ledger row, its transitions, its verdicts by look."""
    row = events.promotion(promotion_id)
    verdicts = events.verdicts(promotion_id)
    looks = []
    if not verdicts.empty:
        for (stage, step, look), group in verdicts.groupby(["stage", "step", "look"], sort=False):
            looks.append(
                {
                    "stage": stage,
                    "step": int(step),
                    "look": int(look),
                    "gates": [
                        {
                            "gate": g["gate"],
                            "outcome": g["outcome"],
                            "action": g["action"],
                            "statistic": g["statistic"],
                            "ci_low": g["ci_low"],
                            "ci_high": g["ci_high"],
                            "n": int(g["n"]),
                            "message": g["message"],
                        }
                        for g in group.to_dict("records")
                    ],
                }
            )
    keep = (*ROW_FIELDS, "reason", "policy_path", "mlflow_run_id", "flow_run_id", "owner", "lease_expires_at")
    return jsonable(
        {
            "promotion": {k: row.get(k) for k in keep},
            "checkpoint": row.get("checkpoint"),
            "transitions": [
                {k: t.get(k) for k in ("at", "from_state", "to_state", "reason")}
                for t in events.transitions(promotion_id)
            ],
            "looks": looks,
        }
    )


@promotions_app.command("get")
def get_promotion(
    promotion_id: str = typer.Argument(..., help="promotion id or a unique prefix"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """One promotion with its history: transitions, the verdicts of every look, its checkpoint."""
    events = _events()
    try:
        full = resolve_id(events, promotion_id)
    except UnknownPromotion as exc:
        raise _fail(str(exc)) from None
    history = promotion_history(events, full)
    if as_json:
        typer.echo(json.dumps(history, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    p = history["promotion"]
    console.print(
        f"[bold]{p['id']}[/bold]: {p['model']} v{p['version']} (champion "
        f"{'v' + p['champion_version'] if p['champion_version'] else '-'}): {p['state']} at {p['stage']}"
    )
    console.print(f"reason: {p['reason']}")
    console.print(f"policy {p['policy_path']}; MLflow run {p['mlflow_run_id']}; flow run {p['flow_run_id']}")
    if (cp := history["checkpoint"]) is not None:
        where = f"{cp['stage']} step {cp['step_index'] + 1}, {cp['total_looks']} looks"
        console.print(
            f"checkpoint: {where}" + (f", deferred until {cp['resume_at']}" if cp["resume_at"] else "")
        )
    moves = Table(title="transitions")
    for col in ("at", "from", "to", "reason"):
        moves.add_column(col, overflow="fold")
    for t in history["transitions"]:
        moves.add_row(t["at"], t["from_state"] or "", t["to_state"], t["reason"] or "")
    console.print(moves)
    looks = Table(title="verdicts by look")
    for col in ("stage", "step", "look", "gate", "outcome", "effect", "interval", "n"):
        looks.add_column(col, overflow="fold")
    for look in history["looks"]:
        for g in look["gates"]:
            interval = "" if g["ci_low"] is None else f"[{g['ci_low']:+.4g}, {g['ci_high']:+.4g}]"
            effect = "" if g["statistic"] is None else f"{g['statistic']:+.4g}"
            where = (look["stage"], str(look["step"]), str(look["look"]))
            looks.add_row(*where, g["gate"], g["outcome"], effect, interval, str(g["n"]))
    console.print(looks)


@promotions_app.command("abort")
def abort_promotion(
    promotion_id: str = typer.Argument(..., help="promotion id or a unique prefix"),
    reason: str = typer.Option(..., help="why (recorded in the ledger)"),
) -> None:
    """Roll a promotion back now: traffic to its champion first, then the ledger and the aliases, read back.

    The flow's own procedure (stagegate.rollback); the flow run, if it still runs, finds its promotion
    ended and stops. Exit 1 if the rollback could not be completed (run it again, or `stagegate
    reconcile`), 2 if the promotion is unknown or has ended."""
    from stagegate.ledger_states import TERMINAL_STATES, failure_outcome
    from stagegate.rollback import (
        PromotionEnded,
        RollbackIncomplete,
        RollbackTarget,
        roll_back_promotion,
    )
    from stagegate.runtime import Runtime

    rt = Runtime.from_env()
    try:
        full = resolve_id(rt.events, promotion_id)
    except UnknownPromotion as exc:
        raise _fail(str(exc)) from None
    row = rt.events.promotion(full)
    if row["state"] in {s.value for s in TERMINAL_STATES}:  # refused before anything is written
        serving = (
            f"v{row['version']} was promoted and keeps serving (to go back, promote the earlier version)"
            if row["state"] == "promoted"
            else f"it was {row['state'].replace('_', ' ')} earlier"
        )
        raise _fail(
            f"promotion {full} has ended ({row['state']}): nothing to abort, nothing changed; {serving}"
        )
    stage = row["stage"] or "registered"
    target = RollbackTarget(full, row["model"], row["version"], row["champion_version"])
    try:
        report = roll_back_promotion(
            target,
            traffic=rt.traffic,
            registry=rt.registry,
            events=rt.events,
            stage=stage,
            reason=f"aborted by the operator: {reason}",
            outcome=failure_outcome(stage).value,
        )
    except PromotionEnded as exc:  # promoted between the read above and the rollback's own read
        raise _fail(str(exc)) from None
    except RollbackIncomplete as exc:
        typer.secho(f"abort of {full} incomplete: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    typer.echo(f"{full}: {report.outcome} (traffic on the champion, v{row['champion_version'] or '-'})")
