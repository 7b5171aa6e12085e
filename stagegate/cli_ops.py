"""Operations commands: ``stagegate up``, ``down``, ``approve``, ``reject`` (and the interactive demo).

Registered on the main app by one line at the end of stagegate/cli.py::

    from stagegate.cli_ops import register as _register_ops; _register_ops(app)  # noqa: E702,I001

Heavy imports (Prefect, MLflow) happen inside the commands. ``approve`` and ``reject`` talk to the Prefect
API in ``PREFECT_API_URL``, or to the stack that ``stagegate up`` started for this workspace.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from stagegate.offline_env import quiet_environment

BAD_INPUT = 2


def use_stack_env() -> dict[str, str]:
    """Point this process at the workspace's running stack (what the CLI's callback does for every
    command), unless the environment already names the servers; returns what it set."""
    from stagegate.stack import bind_to_stack

    return bind_to_stack().applied


def up(
    prefect_port: int = typer.Option(
        4200, envvar="STAGEGATE_PREFECT_PORT", help="Prefect server (UI and API)"
    ),
    mlflow_port: int = typer.Option(5000, envvar="STAGEGATE_MLFLOW_PORT", help="MLflow server (UI and API)"),
    s3_port: int = typer.Option(8333, envvar="STAGEGATE_S3_PORT", help="S3 endpoint (SeaweedFS)"),
    postgres: str = typer.Option(
        None,
        envvar="STAGEGATE_POSTGRES_URL",
        help="PostgreSQL URL (postgresql://user@host:5432/postgres) for the Prefect server's database "
        "(SQLite locks under concurrent use); default $STAGEGATE_POSTGRES_URL, else "
        "postgresql://postgres@127.0.0.1:5432/postgres if it answers within 2 s, else SQLite",
        show_default=False,
    ),
    sqlite: bool = typer.Option(
        False, "--sqlite", help="the Prefect server on SQLite even when a PostgreSQL server answers"
    ),
    registry_on_postgres: bool = typer.Option(
        False,
        "--registry-on-postgres",
        help="MLflow's registry and the ledger on PostgreSQL too, instead of this workspace's own files "
        "(refused while those hold anything: nothing is moved)",
    ),
    only: list[str] = typer.Option(None, help="start only these components: s3, prefect, mlflow, worker"),
    deploy: bool = typer.Option(True, help="apply infra/prefect.yaml once the worker runs"),
    notify_url: str = typer.Option(None, help="announce pauses, rollbacks, promotions to this webhook URL"),
) -> None:
    """Start the local stack: Prefect server, MLflow server, S3 (SeaweedFS), a process worker, deployments."""
    quiet_environment()
    from stagegate.stack import (
        COMPONENTS,
        LOCAL_POSTGRES,
        Stack,
        StackConfig,
        StackError,
        describe,
        postgres_answers,
        shell_exports,
    )

    components = tuple(only) if only else COMPONENTS
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        typer.secho(f"unknown components {unknown}; choose from {list(COMPONENTS)}", err=True, fg="red")
        raise typer.Exit(BAD_INPUT)
    stack = Stack.from_env()
    if not postgres and not sqlite and "prefect" in components and postgres_answers(LOCAL_POSTGRES):
        # SQLite locks under concurrent writes (an approval fails with 503): PostgreSQL wherever one answers
        postgres = LOCAL_POSTGRES
        typer.echo(
            f"PostgreSQL answers at {LOCAL_POSTGRES}: the Prefect server's database goes there "
            "(--sqlite keeps it on SQLite)"
        )
    config = StackConfig(
        ports={"prefect": prefect_port, "mlflow": mlflow_port, "s3": s3_port},
        postgres_url=postgres or None,
        registry_on_postgres=registry_on_postgres,
        components=components,
        deploy=deploy,
        notify_url=notify_url,
    )
    from stagegate.progress import progress

    try:
        with progress(f"starting {', '.join(components)} (a minute or so the first time)"):
            state = stack.up(config)
    except StackError as exc:
        typer.secho(str(exc), err=True, fg="red")
        raise typer.Exit(1) from None
    typer.echo(describe(state))
    if not postgres and "prefect" in components:
        typer.secho(
            "the Prefect server is on SQLite, which locks under concurrent writes (an approval in the UI can "
            "fail with 503): pass --postgres URL or set STAGEGATE_POSTGRES_URL",
            err=True,
            fg="yellow",
        )
    typer.echo(
        f"\nlogs and pid files: {stack.root}\nevery stagegate command of this workspace uses the stack "
        "now (no exports needed); `stagegate down` stops it. For another shell tool (prefect, mlflow):\n"
    )
    typer.echo(shell_exports(state["env"]))


def down() -> None:
    """Stop the local stack started by `stagegate up` in this workspace."""
    from stagegate.stack import Stack

    stack = Stack.from_env()
    on_postgres = stack.state().get("registry") == "postgres"
    stopped = stack.down()
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    ws = stack.workspace
    typer.echo(
        f"embedded again: registry {ws.root / 'mlflow.db'}, ledger {ws.root / 'events.db'}"
        + (" (the stack's registry and ledger stay on PostgreSQL)" if on_postgres else "")
    )


def _flow_run_id(run: str) -> str:
    """RUN is a flow run id, or a promotion id whose ledger row knows its flow run."""
    from uuid import UUID

    try:
        UUID(run)
    except ValueError:
        raise typer.BadParameter(f"{run!r} is not a flow run id or promotion id") from None
    from stagegate.events.store import EventStore
    from stagegate.workspace import Workspace

    try:
        row = EventStore(Workspace.from_env().events_url).promotion(run)
    except KeyError:
        return run
    if not row.get("flow_run_id"):
        raise typer.BadParameter(f"promotion {run} has no flow run id in the ledger; pass the flow run id")
    return str(row["flow_run_id"])


def _answer(
    run: str, approve: bool, approver: str | None, reason: str, wait: float, token: str | None
) -> None:
    quiet_environment()
    use_stack_env()  # already done by the CLI's callback; kept for callers of _answer outside the CLI
    approver = approver or os.environ.get("STAGEGATE_APPROVER") or os.environ.get("USER") or ""
    if not approver:
        typer.secho("who answers? pass --approver NAME (or set STAGEGATE_APPROVER)", err=True, fg="red")
        raise typer.Exit(BAD_INPUT)
    token = token or os.environ.get("STAGEGATE_APPROVER_TOKEN") or ""
    if not token:  # the flow would refuse it: say so before anything is sent
        typer.secho(
            f"an answer needs {approver!r}'s token: pass --token or set STAGEGATE_APPROVER_TOKEN "
            f"(`stagegate approvers add {approver}` issues one)",
            err=True,
            fg="red",
        )
        raise typer.Exit(BAD_INPUT)
    flow_run_id = _flow_run_id(run)
    from uuid import UUID

    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    sent = time.time()
    try:
        resume_flow_run(
            UUID(flow_run_id),
            run_input={
                "decision": "approve" if approve else "reject",
                "approver": approver,
                "reason": reason,
                "token": token,
            },
        )
    except ObjectNotFound:
        typer.secho(f"no flow run {flow_run_id} at {os.environ.get('PREFECT_API_URL')}", err=True, fg="red")
        raise typer.Exit(BAD_INPUT) from None
    except NotPausedError:
        typer.secho(f"flow run {flow_run_id} is not waiting for approval", err=True, fg="red")
        raise typer.Exit(BAD_INPUT) from None
    except FlowPauseTimeout:
        typer.secho(f"flow run {flow_run_id}: the approval timed out already", err=True, fg="red")
        raise typer.Exit(BAD_INPUT) from None
    verb = "approval" if approve else "rejection"
    typer.echo(f"sent {verb} by {approver} to flow run {flow_run_id}")
    if wait <= 0:
        return
    outcome = wait_for_record(flow_run_id, sent, wait)
    if outcome is None:
        typer.echo(f"the flow has not recorded the answer within {wait:g}s; check the run in the UI")
        return
    typer.echo(f"recorded: {outcome}")
    if outcome.endswith(": refused"):
        typer.secho(
            f"{approver!r} was refused: not on the policy's approver list, or the token is not theirs "
            "(the ledger's reason says which: `stagegate promotions get`)",
            err=True,
            fg="red",
        )
        raise typer.Exit(1)


def wait_for_record(flow_run_id: str, since: float, timeout: float) -> str | None:
    """The description of the first approval artifact the flow run publishes after ``since``."""
    from datetime import UTC, datetime
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    after = datetime.fromtimestamp(since - 1, UTC)
    flt = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]),
        key=ArtifactFilterKey(like_="approval-"),
    )
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            found = [
                a for a in client.read_artifacts(artifact_filter=flt) if a.created and a.created >= after
            ]
            if found:
                return min(found, key=lambda a: a.created).description
            time.sleep(1.0)
    return None


TOKEN_OPTION = typer.Option(
    None, help="your approver token (default: $STAGEGATE_APPROVER_TOKEN); `stagegate approvers add` issues it"
)


def approve(
    run: str = typer.Argument(..., help="flow run id (or promotion id) waiting for approval"),
    approver: str = typer.Option(
        None, help="your name as listed in the policy (default: $STAGEGATE_APPROVER)"
    ),
    reason: str = typer.Option("", help="why"),
    wait: float = typer.Option(30.0, help="seconds to wait for the flow to record the answer (0: don't)"),
    token: str = TOKEN_OPTION,
) -> None:
    """Approve a promotion that waits at an approval point (same as the form in the Prefect UI)."""
    _answer(run, True, approver, reason, wait, token)


def reject(
    run: str = typer.Argument(..., help="flow run id (or promotion id) waiting for approval"),
    reason: str = typer.Option(..., help="why (recorded with the rejection)"),
    approver: str = typer.Option(
        None, help="your name as listed in the policy (default: $STAGEGATE_APPROVER)"
    ),
    wait: float = typer.Option(30.0, help="seconds to wait for the flow to record the answer (0: don't)"),
    token: str = TOKEN_OPTION,
) -> None:
    """Reject a promotion that waits at an approval point: it rolls back."""
    _answer(run, False, approver, reason, wait, token)


# -- the interactive demo ------------------------------------------------------------------------------------

INTERACTIVE_APPROVERS = ["release-manager"]


def interactive_policy(target: Path, approvers: list[str], timeout: str = "1h") -> Path:
    """policies/demo.yaml with human approval before rollout, written to ``target``."""
    import yaml

    from stagegate.extensions import SIMULATORS, load

    POLICY = load(SIMULATORS, "demo", needed_for="the demo").POLICY  # the simulator's, by entry point

    policy: dict[str, Any] = yaml.safe_load(POLICY.read_text(encoding="utf-8"))
    policy["approvals"] = {"approvers": approvers, "timeout": timeout, "on_timeout": "reject"}
    policy["stages"]["canary"]["approval"] = "before_rollout"
    offline = policy["stages"].get("offline") or {}
    if offline.get("expectations"):  # relative paths resolve against the policy file: keep them pointing home
        from stagegate.policy.load import resolve_relative

        offline["expectations"] = str(resolve_relative(POLICY, offline["expectations"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "# Generated by `stagegate demo --interactive`: policies/demo.yaml with approval before rollout.\n"
        + yaml.safe_dump(policy, sort_keys=False),
        encoding="utf-8",
    )
    return target


def run_interactive_demo(workdir: Path, approvers: list[str] | None = None) -> list[dict[str, Any]]:
    """The demo on the running stack: each promotion that reaches an approval point waits for the form."""
    quiet_environment()
    from stagegate.stack import Stack

    stack = Stack.from_env()
    state = stack.state()
    if not state or stack.pid("prefect") is None:
        typer.secho("the stack is not running here: `stagegate up` first", err=True, fg="red")
        raise typer.Exit(BAD_INPUT)
    for key, value in stack.client_env().items():
        if key != "STAGEGATE_HOME":  # the demo has its own workspace
            os.environ[key] = value
    names = approvers or [*INTERACTIVE_APPROVERS, os.environ.get("USER") or "admin"]
    policy = interactive_policy(stack.root / "policies" / "demo-interactive.yaml", names)
    # The demo's workspace is rebuilt from scratch: its ledger (which holds the approvers' token digests)
    # lives with the stack, so that the tokens issued here are the ones the flow checks.
    os.environ.setdefault("STAGEGATE_EVENTS_URL", f"sqlite:///{stack.root / 'demo-events.db'}")
    from stagegate.events.store import EventStore
    from stagegate.identity import issue_token

    events = EventStore(os.environ["STAGEGATE_EVENTS_URL"])
    tokens = {name: issue_token(events, name) for name in names}
    ui = state["urls"]["prefect_ui"]
    typer.echo(
        f"Promotions run on the stack. When one pauses for approval, open {ui}/runs, pick the paused "
        f"'promote' run, press Resume, and answer as one of {names} with that name's token "
        "(or `stagegate approve RUN --approver NAME --token TOKEN`). Tokens for this demo, shown once:"
    )
    for name, token in tokens.items():
        typer.echo(f"  {name}: {token}")
    from stagegate.extensions import SIMULATORS, load

    return load(SIMULATORS, "demo", needed_for="the demo").run_demo(workdir, policy=policy)


INTERACTIVE_OPTION = typer.Option(
    False, "--interactive", help="run on the stack (`stagegate up`) and wait for approval in the Prefect UI"
)


def _with_interactive(original: Any) -> Any:
    """``stagegate demo`` plus ``--interactive`` (the demo on the stack, waiting for approval in the UI)."""
    import inspect

    def demo(*args: Any, interactive: bool = False, **kwargs: Any) -> Any:
        if interactive:
            run_interactive_demo(Path(kwargs.get("workdir") or ".stagegate/demo"))
            return None
        return original(*args, **kwargs)

    params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(original).parameters.values()
    ]
    extra = inspect.Parameter(
        "interactive", inspect.Parameter.KEYWORD_ONLY, default=INTERACTIVE_OPTION, annotation=bool
    )
    demo.__signature__ = inspect.Signature([*params, extra])  # type: ignore[attr-defined]
    demo.__doc__ = (original.__doc__ or "") + " With --interactive: on the stack, approval in the UI."
    demo.__name__ = "demo"
    return demo


def register(app: typer.Typer) -> None:
    """Add up, down, approve and reject to the main ``stagegate`` app, and ``--interactive`` to its demo."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("approve")(approve)
    app.command("reject")(reject)
    for info in app.registered_commands:
        if (info.name or getattr(info.callback, "__name__", "")) == "demo" and info.callback is not None:
            info.callback = _with_interactive(info.callback)
