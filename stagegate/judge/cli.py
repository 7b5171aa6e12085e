"""``stagegate judge serve``: the judge as an HTTP service for Argo Rollouts and Flagger.

Registered on the main CLI (stagegate/cli.py) with one ``add_typer`` line. Exit 2 when the policy,
connections file or state database cannot be used: the server never starts half configured.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import typer

judge_app = typer.Typer(
    help="Judge Argo Rollouts analyses and Flagger canaries with a policy's gates.", no_args_is_help=True
)

BAD_INPUT = 2


@judge_app.command("serve")
def serve(
    policy: Path = typer.Option(..., "--policy", help="the stagegate policy whose stage's gates are applied"),
    stage: str = typer.Option("canary", "--stage", help="which stage of the policy (its gates and rule)"),
    connections: Path = typer.Option(
        ..., "--connections", help="connections file: its metrics adapter is where evidence is read"
    ),
    state: str | None = typer.Option(
        None, "--state", help="state database URL (default: sqlite:///$STAGEGATE_HOME/judge.db)"
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port", help="0 picks a free port"),
    look_every: float = typer.Option(
        60.0, "--look-every", help="seconds: a window ends at now rounded down to this grid"
    ),
) -> None:
    """Serve the judge until interrupted (GET /argo/v1/{namespace}/{rollout}, POST /flagger/...)."""
    import uvicorn

    from stagegate.judge.app import create_app
    from stagegate.judge.config import default_state_url, load_setup
    from stagegate.judge.looks import Judge
    from stagegate.judge.state import JudgeState
    from stagegate.problems import ProblemsError

    try:
        setup = load_setup(policy, stage, connections, look_every=timedelta(seconds=look_every))
    except ProblemsError as exc:
        for problem in exc.problems:
            typer.secho(str(problem), err=True, fg=typer.colors.RED)
        raise typer.Exit(BAD_INPUT) from exc
    url = state or default_state_url()
    try:
        store = JudgeState(url)
    except Exception as exc:  # a URL that does not connect: say which, without its password
        from sqlalchemy.engine import make_url

        shown = make_url(url).render_as_string(hide_password=True)
        typer.secho(f"--state {shown}: cannot open the state database: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(BAD_INPUT) from exc
    typer.echo(
        f"judging stage {setup.stage_name} of {setup.policy_file} ({setup.gates.rule}: "
        f"{', '.join(g.name for g in setup.gates)}); state {store!r}"
    )
    uvicorn.run(create_app(Judge(setup, store)), host=host, port=port, log_level="info")
