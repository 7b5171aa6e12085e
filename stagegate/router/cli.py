"""``stagegate serve``: run the router (registered on the main CLI by one line in stagegate/cli.py)."""

from __future__ import annotations

import socket

import typer

BAD_INPUT = 2


def serve(
    model: str = typer.Option(..., "--model", help="registered MLflow model to serve"),
    tracking_uri: str | None = typer.Option(None, help="MLflow tracking and registry URI"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, help="port to listen on (0: any free port, printed at start)"),
    state: str = typer.Option(..., help="where the split persists: a JSON file or a SQLAlchemy URL"),
    events: str | None = typer.Option(
        None, help="SQLAlchemy URL of the request log (default: a SQLite file beside the state)"
    ),
    shadow_share: float = typer.Option(1.0, help="share of champion-served requests mirrored in shadow"),
    queue_size: int = typer.Option(1000, help="shadow queue length; a mirror beyond it is dropped"),
    timeout: float = typer.Option(0.5, help="seconds a model may take before its answer is abandoned"),
    max_body_bytes: int = typer.Option(64 * 1024, help="largest request body accepted (413 beyond)"),
    token_secret: str | None = typer.Option(
        None, help="Prefect Secret block holding the admin token (default: $STAGEGATE_ROUTER_TOKEN)"
    ),
) -> None:
    """Serve the champion and candidate of MODEL over HTTP: /recommend, /admin, /healthz, /metrics."""
    import logging

    import uvicorn
    from pydantic import ValidationError

    from stagegate.offline_env import quiet_environment
    from stagegate.router.app import RouterStartError, build_router, create_app
    from stagegate.router.config import RouterConfig, TokenError, load_token

    quiet_environment()
    try:
        token = load_token(token_secret)
        config = RouterConfig(
            model=model,
            tracking_uri=tracking_uri,
            host=host,
            port=port,
            state=state,
            events=events,
            shadow_share=shadow_share,
            queue_size=queue_size,
            timeout_seconds=timeout,
            max_body_bytes=max_body_bytes,
        )
        router = build_router(config, token)
    except (TokenError, RouterStartError, ValidationError) as exc:
        typer.secho(f"stagegate serve: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(BAD_INPUT) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # bind here so that port 0 is resolved before the line that announces it
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    typer.echo(
        f"stagegate router: model {model!r}, champion {router.champion_version}, "
        f"candidate {router.split.candidate}, split at {router.store.describe()}, "
        f"listening on http://{host}:{bound}",
        err=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(router), log_level="warning", access_log=False, lifespan="on")
    )
    server.run(sockets=[sock])
