"""``sentiflow api``: the local API gateway (web page + ``POST /predict`` through the Lambda handler)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from core.config import Settings


def api(
    port: Annotated[
        int | None, typer.Option(help="Port (default: SENTIFLOW_API_PORT, else 8600); 0 picks a free one.")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind: loopback only (the gateway has no auth).")
    ] = "127.0.0.1",
    environments: Annotated[int, typer.Option(min=1, help="Execution environments (worker processes).")] = 4,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the gateway a deploy started in the background, then exit.")
    ] = False,
) -> None:
    """Serve the page at / and POST /predict, pointed at the endpoint the last deploy chose.

    Deploys re-point a running gateway through ``<state_dir>/api.json``; one started here is found and re-pointed
    too. This process binds the port, then becomes the gateway (``python -m serve.gateway``). ``--stop`` stops the
    gateway a deploy started (teardown leaves it running: it answers 503 once no endpoint is live)."""
    from core.config import get_settings, refuse_open_host
    from core.processes import listening_socket
    from serve.gateway import api_state_path, read_api_target

    settings = get_settings()
    if stop:
        _stop_background_gateway(settings)
        return
    refuse_open_host(host, "the API gateway")
    sock = listening_socket(host, settings.api_port if port is None else port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    target = read_api_target(api_state_path(settings))
    typer.echo(f"sentiflow API gateway listening on {url} (Ctrl+C to stop)")
    typer.echo(f"  page: {url}/")
    example = f'curl -d \'{{"review": "A great film"}}\' {url}/predict'
    typer.echo(f"  api:  {url}/predict   e.g. {example}")
    if target.deployed:
        typer.echo(f"  model: endpoint {target.endpoint_name} (version {target.model_version or '?'})")
    else:
        typer.echo("  model: none deployed yet; /predict answers 503 until a deploy points the API at one")
    sys.stdout.flush()
    os.set_inheritable(sock.fileno(), True)
    argv = [sys.executable, "-m", "serve.gateway", "--fd", str(sock.fileno()), "--environments", str(environments)]
    os.execv(sys.executable, argv)  # Ctrl+C and SIGTERM now reach the gateway itself


def _stop_background_gateway(settings: Settings) -> None:
    from backends.local.api import LocalApiGateway
    from core.errors import SentiflowError

    if settings.backend != "local":
        raise SentiflowError(
            f"--stop is for the local gateway; with SENTIFLOW_BACKEND={settings.backend} the API is AWS API Gateway "
            "(sentiflow teardown retires its endpoint)"
        )
    gateway = LocalApiGateway(settings)
    url = gateway.running_url()
    if gateway.stop():
        typer.echo(f"stopped the API gateway{f' on {url}' if url else ''}")
    else:
        typer.echo("no API gateway started by a deploy is running (one started with `sentiflow api` stops with Ctrl+C)")


def register(app: typer.Typer) -> None:
    app.command("api")(api)
