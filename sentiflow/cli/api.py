"""``sentiflow api``: the local API gateway (web page + ``POST /predict`` through the Lambda handler)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

_LOOPBACK_NAMES = ("localhost",)


def api(
    port: Annotated[
        int | None, typer.Option(help="Port (default: SENTIFLOW_API_PORT, else 8600); 0 picks a free one.")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (keep it on loopback).")] = "127.0.0.1",
) -> None:
    """Serve the page at / and POST /predict, pointed at the endpoint the last deploy chose."""
    from core.config import get_settings
    from serve.gateway import GatewayServer, api_state_path, read_api_target, run_gateway

    settings = get_settings()
    if not _is_loopback(host):
        typer.secho(f"warning: {host} is not a loopback address; the API is reachable from the network", err=True)

    def announce(server: GatewayServer) -> None:
        target = read_api_target(api_state_path(settings))
        typer.echo(f"sentiflow API gateway listening on {server.url} (Ctrl+C to stop)")
        typer.echo(f"  page: {server.url}/")
        example = f'curl -d \'{{"review": "A great film"}}\' {server.url}/predict'
        typer.echo(f"  api:  {server.url}/predict   e.g. {example}")
        if target.deployed:
            typer.echo(f"  model: endpoint {target.endpoint_name} (version {target.model_version or '?'})")
        else:
            typer.echo("  model: none deployed yet; /predict answers 503 until a deploy points the API at one")

    run_gateway(settings, host, port, announce=announce)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    app.command("api")(api)
