"""The ``stagegate`` command line. Heavy libraries (Prefect, MLflow, Great Expectations) are imported
inside the commands that use them, so that ``stagegate --help`` starts in well under a second.

Exit codes: 0 done (whatever the promotion's outcome), 1 an unexpected failure, 2 bad input (a policy that
does not validate, a model or version that does not exist, a workspace that is not set up).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from stagegate.cli_approvers import approvers_app
from stagegate.cli_db import db_app
from stagegate.cli_ops import register as register_ops
from stagegate.cli_promotions import UnknownPromotion, _events, promotions_app, resolve_id
from stagegate.judge.cli import judge_app
from stagegate.offline_env import quiet_environment
from stagegate.router.cli import serve


class _WithExtensions(TyperGroup):
    """The core's commands plus those of every typer app in the ``stagegate.cli`` entry-point group (the
    simulator's: ``world init``, ``world oracle``, ``candidates register``, ``demo``). The extensions are
    loaded only when the commands are listed or a command is not the core's, so importing this module or
    running a core command never imports the simulator."""

    def list_commands(self, ctx: Any) -> list[str]:
        core = super().list_commands(ctx)
        return [*core, *(name for name in _extension_commands() if name not in core)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return super().get_command(ctx, cmd_name) or _extension_commands().get(cmd_name)


@cache
def _extension_commands() -> dict[str, Any]:
    """Name -> command of every command and group the ``stagegate.cli`` typer apps declare."""
    from stagegate.extensions import CLI, load_all

    commands: dict[str, Any] = {}
    for name, extension in load_all(CLI).items():
        group = typer.main.get_command(extension)
        commands.update(getattr(group, "commands", None) or {group.name or name: group})
    return commands


BAD_INPUT = 2
NOT_PROMOTED = 3  # `stagegate promote` ran to its end and the candidate was rejected or rolled back
DEFERRED = 4  # the next look is due later than the clock may wait: `stagegate resume ID` then

app = typer.Typer(
    cls=_WithExtensions,
    help="Staged model promotion: offline, simulation, shadow, canary, rollout.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
UNBOUND = {"up", "down", "demo"}  # start or stop the stack; the demo has its own workspace (--interactive
# binds to the stack itself)


@app.callback()
def _use_the_workspace_stack(ctx: typer.Context) -> None:
    """Every command of a workspace whose stack runs (`stagegate up`) uses that stack: no exports."""
    if ctx.invoked_subcommand in UNBOUND:
        return
    from stagegate.stack import bind_to_stack

    binding = bind_to_stack()
    if binding.state == "refused":
        typer.secho(binding.message, err=True, fg=typer.colors.RED)
        raise typer.Exit(BAD_INPUT)
    if binding.message:
        typer.secho(binding.message, err=True, fg=typer.colors.YELLOW)


policy_app = typer.Typer(help="Promotion policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(judge_app, name="judge")


def _fail(message: str) -> typer.Exit:
    from stagegate.redaction import redact_text

    # messages may quote a store's URL (an exception's text): never print its password
    typer.secho(redact_text(message), err=True, fg=typer.colors.RED)
    return typer.Exit(BAD_INPUT)


@policy_app.command("validate")
def policy_validate(files: list[Path] = typer.Argument(..., help="policy YAML files")) -> None:
    """Validate policies; print every problem (file, field, reason) and exit 2 if there is one."""
    from stagegate.policy import load_policy

    def describe(policy: Any) -> str:
        stages = ", ".join(name for name, _ in policy.stages.configured())
        return f"model {policy.model}; stages {stages}; {len(policy.gate_specs())} gates"

    _validate_files(files, load_policy, describe)


@policy_app.command("reference")
def policy_reference() -> None:
    """Print every policy field (type, default, constraints, meaning) as markdown: docs/policies.md."""
    from stagegate.policy.reference import policy_reference as generate

    typer.echo(generate(), nl=False)


def _validate_files(files: list[Path], load: Callable[[Path], Any], describe: Callable[[Any], str]) -> None:
    """``file: ok (...)`` per good file; every problem of a bad one (file, field, reason); exit 2 if any."""
    from stagegate.problems import ProblemsError

    bad = False
    for file in files:
        try:
            loaded = load(file)
        except ProblemsError as exc:
            bad = True
            for problem in exc.problems:
                typer.secho(str(problem), err=True, fg=typer.colors.RED)
            continue
        typer.echo(f"{file}: ok ({describe(loaded)})")
    if bad:
        raise typer.Exit(BAD_INPUT)


connections_app = typer.Typer(
    help="Connections: which adapter serves traffic, metrics, offline data and time.", no_args_is_help=True
)
app.add_typer(connections_app, name="connections")
app.add_typer(promotions_app, name="promotions")
app.add_typer(approvers_app, name="approvers")
app.add_typer(db_app, name="db")


@connections_app.command("validate")
def connections_validate(files: list[Path] = typer.Argument(..., help="connections YAML files")) -> None:
    """Validate connections files; print every problem (file, field, reason) and exit 2 if there is one."""
    from stagegate.connections import load_connections

    _validate_files(files, load_connections, lambda connections: connections.describe())


@connections_app.command("show")
def connections_show() -> None:
    """The adapters in force ($STAGEGATE_CONNECTIONS, else the workspace's connections.yaml, else the
    embedded default)."""
    from stagegate.connections import ConnectionsError, connections_path, resolve_connections
    from stagegate.workspace import Workspace

    root = Workspace.from_env().root
    try:
        connections = resolve_connections(root)
    except ConnectionsError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{connections_path(root) or connections.source}: {connections.describe()}")


@app.command()
def promote(
    model: str = typer.Option(..., help="registered model name"),
    version: str = typer.Option(..., help="model version to promote"),
    policy: Path = typer.Option(Path("policies/default.yaml"), help="promotion policy YAML"),
) -> None:
    """Run the promotion flow for one candidate version.

    Exit code: 0 promoted, 3 rejected or rolled back, 4 deferred (the next look is due later than the
    clock may wait: `stagegate resume ID` then), 2 bad input refused before anything moved (policy, model
    or version, connections file, another promotion of the model in progress).
    """
    from stagegate.policy import PolicyError, load_policy

    try:  # validate before anything starts, so that a bad policy costs nothing and moves nothing
        parsed = load_policy(policy)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    quiet_environment()
    from flows.context import check_metric_source
    from stagegate.connections import ConnectionsError
    from stagegate.ports import UnjudgeableGates
    from stagegate.registry import RegistryError
    from stagegate.runtime import Runtime
    from stagegate.workspace import StateFileRefused

    try:  # a bad connections file, a missing secret, gates the metric source cannot feed: bad input too,
        rt = Runtime.from_env()  # refused before Prefect starts
        rt.check_world_state()  # a world state file someone else wrote: refused before it is unpickled
        check_metric_source(rt, parsed)
        rt.registry.get_version(model, version)
    except (RegistryError, ConnectionsError, UnjudgeableGates, StateFileRefused) as exc:
        raise _fail(f"{policy}: {exc}" if isinstance(exc, UnjudgeableGates) else str(exc)) from None
    _reconcile(model, quiet=True)  # a crashed promotion of this model: rolled back, or resumed (on_crash)
    from flows.promote import promote as promote_flow
    from stagegate.events.store import PromotionInProgress

    try:
        with interrupted_exit():
            result = promote_flow(model=model, version=version, policy=str(policy))
    except PromotionInProgress as exc:  # refused before anything moved
        raise _fail(str(exc)) from None
    _report_result(result)


@promotions_app.command("retry")
def retry_promotion(
    promotion_id: str = typer.Argument(..., help="an ended promotion's id or a unique prefix"),
) -> None:
    """Promote the same version again under the same policy file, from the first stage: after it was
    rolled back, rejected or aborted, once the cause is fixed (as ``kubectl argo rollouts retry``).

    A new promotion with its own ledger row; the ended one stays as it was. Refused (exit 2) while the
    promotion is open (abort or resume it) or when it was promoted. Exit codes as ``stagegate promote``."""
    from stagegate.ledger_states import TERMINAL_STATES

    events = _events()
    try:
        full = resolve_id(events, promotion_id)
    except UnknownPromotion as exc:
        raise _fail(str(exc)) from None
    row = events.promotion(full)
    if row["state"] not in {s.value for s in TERMINAL_STATES}:
        raise _fail(f"promotion {full} is still open ({row['state']}): `promotions abort` or `resume` it")
    if row["state"] == "promoted":
        raise _fail(f"promotion {full} was promoted: v{row['version']} serves, nothing to retry")
    typer.echo(
        f"retrying {full} ({row['state']}): {row['model']} v{row['version']} under {row['policy_path']}"
    )
    promote(model=row["model"], version=str(row["version"]), policy=Path(row["policy_path"]))


@contextmanager
def interrupted_exit() -> Iterator[None]:
    """Ctrl-C or SIGTERM during a promotion: the flow has rolled it back (flows.promote); say so in one
    line and exit 130 or 143, as a shell expects of a process ended by SIGINT or SIGTERM."""
    from prefect.exceptions import TerminationSignal

    try:
        yield
    except (KeyboardInterrupt, TerminationSignal) as stop:
        code = 130 if isinstance(stop, KeyboardInterrupt) else 143
        typer.secho(
            "interrupted: the promotion was rolled back, the champion serves (`stagegate promotions list`)",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(code) from None


def _report_result(result: Any) -> None:
    """Print a promotion's outcome; exit 0 only when promoted (so that CI can gate on it)."""
    typer.echo(f"{result.model} v{result.version}: {result.outcome} at {result.stage}: {result.reason}")
    typer.echo(f"MLflow run {result.mlflow_run_id}; promotion id {result.promotion_id}")
    if result.outcome == "deferred":
        typer.echo(f"resume it at {result.resume_at}: stagegate resume {result.promotion_id}")
        raise typer.Exit(DEFERRED)
    if result.outcome != "promoted":
        raise typer.Exit(NOT_PROMOTED)


@app.command()
def resume(
    promotion_id: str = typer.Argument(..., help="the promotion's id (as `promote` printed it)"),
) -> None:
    """Continue a promotion from the ledger: a deferred look that is due, or one whose process died.

    Same exit codes as `promote` (0 promoted, 3 rejected or rolled back, 4 deferred again); 2 when it cannot
    be resumed (ended, held by a live process, or no checkpoint to resume from), before anything moved.
    """
    quiet_environment()
    from flows.resume import CannotResume, check_resumable, resume_promotion
    from stagegate.connections import ConnectionsError
    from stagegate.registry import RegistryError
    from stagegate.runtime import Runtime
    from stagegate.workspace import StateFileRefused

    try:  # refused from the ledger alone, before Prefect starts
        rt = Runtime.from_env()
        rt.check_world_state()
        events = rt.events
        promotion_id = resolve_id(events, promotion_id)
        check_resumable(events, promotion_id)
        with interrupted_exit():
            result = resume_promotion(promotion_id=promotion_id)
    except (CannotResume, ConnectionsError, RegistryError, UnknownPromotion, StateFileRefused) as exc:
        raise _fail(str(exc)) from None
    _report_result(result)


@app.command()
def status(
    model: str = typer.Option("recsys-ranker", help="registered model name"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
) -> None:
    """Aliases, versions and promotions of a model (after reconciling its abandoned promotions).

    Exit 2 when the workspace's world state file is refused (someone else wrote it: stagegate/workspace.py
    StateFileRefused), before anything reads it."""
    quiet_environment()
    from stagegate.report import print_status, status_data
    from stagegate.runtime import Runtime
    from stagegate.workspace import StateFileRefused, Workspace

    try:  # the workspace alone (no connections): status still shows what it can when those are broken
        Runtime(Workspace.from_env()).check_world_state()
    except StateFileRefused as exc:
        raise _fail(str(exc)) from None
    _reconcile(model, quiet=True)
    if as_json:
        typer.echo(json.dumps(status_data(model), indent=2))
    else:
        print_status(model)


@app.command()
def reconcile(
    model: str = typer.Option(None, help="only this registered model (default: every model)"),
) -> None:
    """Roll back promotions whose process died (lease expired, or its process gone), from the ledger.

    Traffic goes to the recorded champion first, then the aliases and tags; the ledger records the
    outcome with the reason "reconciled: ...". A promotion whose policy says `on_crash: resume` is resumed
    from its checkpoint instead, when it has one. Exit 1 if one could not be closed (run it again).
    """
    quiet_environment()
    results = _reconcile(model, quiet=False)
    if any(not r.done and r.skipped is None for r in results):
        raise typer.Exit(1)


def _reconcile(model: str | None, quiet: bool) -> list:
    from flows.resume import resume_outcome
    from stagegate.reconcile import reconcile as reconcile_ledger
    from stagegate.runtime import Runtime

    try:
        results = reconcile_ledger(Runtime.from_env(), model, resume=resume_outcome)
    except Exception as exc:  # a store that is down: status still shows what it can read
        from stagegate.redaction import redact_text

        message = redact_text(repr(exc))  # a driver's error may quote the database URL
        typer.secho(f"reconcile: could not run (run it again when it is back): {message}", err=True, fg="red")
        if not quiet:
            raise typer.Exit(1) from None
        return []
    for result in results:
        typer.secho(f"reconcile: {result.line()}", err=quiet, fg=None if result.done else typer.colors.RED)
    if not results and not quiet:
        typer.echo("nothing to reconcile: every open promotion holds a live lease")
    return results


register_ops(app)  # up, down, approve, reject, demo --interactive
app.command("serve")(serve)  # the router service (stagegate/router/)

if __name__ == "__main__":
    app()
