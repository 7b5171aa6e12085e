"""The simulator's commands on the ``stagegate`` command line: ``world init``, ``world oracle``,
``candidates register`` and ``demo``.

Registered in the ``stagegate.cli`` entry-point group; stagegate/cli.py lists the commands and groups of
:data:`app` with its own (loading this module only when it must), so the core never imports it. Heavy
imports happen inside the commands, as in the core's CLI. Exit code 2 is bad input (a recipe that does not
validate, a missing file, a workspace that is not set up).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stagegate.cli_ops import _with_interactive
from stagegate.offline_env import quiet_environment

BAD_INPUT = 2

app = typer.Typer(help="The simulator's commands.", no_args_is_help=True)
candidates_app = typer.Typer(
    help="Candidate models: train from a recipe, register in MLflow.", no_args_is_help=True
)
world_app = typer.Typer(
    help="The simulated live world (the embedded default traffic source).", no_args_is_help=True
)
app.add_typer(candidates_app, name="candidates")
app.add_typer(world_app, name="world")


def _fail(message: str) -> typer.Exit:
    from stagegate.redaction import redact_text

    typer.secho(redact_text(message), err=True, fg=typer.colors.RED)  # never a store's password
    return typer.Exit(BAD_INPUT)


@world_app.command("init")
def world_init(
    seed: int = typer.Option(7, help="world seed"),
    size: str = typer.Option("demo", help="world size preset: demo or small"),
    force: bool = typer.Option(False, "--force", help="replace a world the workspace already holds"),
) -> None:
    """Create the simulated world, bootstrap a champion and log its history into the workspace.

    Refuses (exit 2) a workspace that already holds a world unless --force: replacing it replaces its
    history and traffic split, which promotions of that workspace measure against."""
    from stagegate.workspace import Workspace

    workspace = Workspace.from_env()
    if workspace.world_path.exists() and not force:
        raise _fail(
            f"{workspace.root} already holds a simulated world ({workspace.world_path.name}); "
            "`stagegate world init --force` replaces it, with its history and traffic split"
        )
    quiet_environment()
    from simulator.setup import init_workspace
    from stagegate.progress import progress

    with progress(f"building the {size} world (seed {seed}), a champion and its logged history"):
        info = init_workspace(seed=seed, size=size)
    typer.echo(
        f"world ready in {info['workspace']}: champion v{info['champion_version']}, "
        f"{info['history_requests']} logged requests, hold-out from day {info['holdout_start_day']}"
    )


@world_app.command("oracle")
def world_oracle(
    recipe: Path = typer.Argument(..., help="recipe YAML, or a folder of recipes"),
    seeds: int = typer.Option(16, help="at most this many seeds (added 4 at a time until resolved)"),
    days: float = typer.Option(7.0, help="simulated days at 100% per arm"),
    size: str = typer.Option("small", help="world size preset: demo or small"),
    policy: Path = typer.Option(None, help="policy whose canary guardrails the labels protect"),
) -> None:
    """True effect of RECIPE at 100% against the champion in the live world (JSON; benchmarks only)."""
    quiet_environment()
    from simulator.models.recipe import RecipeError
    from simulator.oracle import oracle_command

    try:
        oracle_command(recipe, seeds, days, size, policy)
    except (RecipeError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None


@candidates_app.command("register")
def candidates_register(
    recipe: Path = typer.Argument(..., help="recipe YAML (family, knobs, training window)"),
    model: str = typer.Option("recsys-ranker", help="registered model name"),
) -> None:
    """Train a candidate from RECIPE on the workspace's logged history and register it in MLflow."""
    quiet_environment()
    from simulator.models.recipe import RecipeError
    from simulator.setup import register_candidate
    from stagegate.progress import progress
    from stagegate.runtime import WorkspaceNotReady
    from stagegate.workspace import StateFileRefused

    try:
        with progress(f"training {recipe} on the logged history and registering it as {model}"):
            version = register_candidate(recipe, model)
    except (RecipeError, WorkspaceNotReady, FileNotFoundError, StateFileRefused) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"registered {model} version {version} from {recipe}")


def demo(
    workdir: Path = typer.Option(Path(".stagegate/demo"), help="workspace for the demo (recreated)"),
) -> None:
    """Train a champion and two candidates, promote both, print what happened and where to look."""
    quiet_environment()
    from simulator.demo import run_demo

    run_demo(workdir)


# ``stagegate demo --interactive`` (on the stack, approval in the Prefect UI) is the core's wrapper
app.command("demo")(_with_interactive(demo))
