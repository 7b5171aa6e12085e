"""``stagegate approvers``: issue, list and revoke the tokens that prove an approver's identity.

A token is printed once, by ``add``, and kept in the ledger only as a digest (stagegate.identity). Give it
to the approver as you would a password; they answer with ``stagegate approve RUN --approver NAME --token
...`` (or ``$STAGEGATE_APPROVER_TOKEN``) or in the Prefect UI form's token field. ``add`` for a name that
has a token replaces it: the old one stops working at once.
"""

from __future__ import annotations

import json

import typer

from stagegate.cli_promotions import _events, _fail

approvers_app = typer.Typer(help="Approvers' tokens: add (issue or rotate), list, revoke.")


@approvers_app.command("add")
def add(name: str = typer.Argument(..., help="the approver's name, as the policy lists it")) -> None:
    """Issue a token for NAME (replacing any earlier one) and print it, once."""
    from stagegate.identity import issue_token

    try:
        token = issue_token(_events(), name)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(token)
    typer.secho(
        f"token for {name.strip()!r}: shown once; the ledger keeps only its digest. Any earlier token of "
        f"{name.strip()!r} no longer works.",
        err=True,
    )


@approvers_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="JSON on stdout")) -> None:
    """Approvers with a token: name, when issued, whether revoked (never the token)."""
    from stagegate.identity import approvers

    rows = [
        {"name": a.name, "issued_at": a.issued_at.isoformat(), "active": a.active}
        for a in approvers(_events())
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['name']}\tissued {row['issued_at']}\t{'active' if row['active'] else 'revoked'}")


@approvers_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="the approver whose token stops working")) -> None:
    """NAME's token proves nothing from now on (answers with it are refused and recorded)."""
    from stagegate.identity import UnknownApprover
    from stagegate.identity import revoke as revoke_token

    try:
        revoke_token(_events(), name)
    except UnknownApprover as exc:
        raise _fail(exc.args[0]) from None
    typer.echo(f"revoked the token of {name!r}")
