"""``sentiflow serve``: run the local endpoint server for one model in the foreground."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer


def serve(
    model: Annotated[str, typer.Option("--model", help="Model folder, model.tar.gz, file:// or store URI.")],
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8080,
    host: Annotated[
        str | None, typer.Option(help="Interface to bind: loopback only (default: SENTIFLOW_SERVE_HOST, 127.0.0.1).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Endpoint name; /endpoints/OTHER/invocations then answers 404.")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Model server workers (processes).")] = None,
    state_dir: Annotated[str | None, typer.Option(help="Keep the invocation counters in this folder.")] = None,
    access_log: Annotated[str, typer.Option(help="JSON-lines access log: a file path, '-' for stderr or 'off'.")] = "-",
    max_body_bytes: Annotated[int | None, typer.Option(min=1, help="Largest request body in bytes.")] = None,
) -> None:
    """Serve a model: GET /ping, GET /stats, POST /invocations, POST /endpoints/NAME/invocations.

    The model reference is resolved (a store URI is fetched, an archive unpacked) and the port bound; then this
    process becomes the endpoint server (``python -m serve.endpoint``), the very program a deploy runs."""
    from backends.models import resolve_model_dir
    from core.config import get_settings, refuse_open_host
    from core.processes import listening_socket

    if host is not None:
        refuse_open_host(host, "the endpoint server")
    settings = get_settings(serve_host=host)
    model_dir = resolve_model_dir(model, settings)
    sock = listening_socket(settings.serve_host, port)
    typer.echo(f"serving {model_dir} on http://{settings.serve_host}:{sock.getsockname()[1]} (Ctrl+C to stop)")
    options = {"--name": name, "--workers": workers, "--state-dir": state_dir, "--max-body-bytes": max_body_bytes}
    argv = [sys.executable, "-m", "serve.endpoint", str(model_dir), "--fd", str(sock.fileno())]
    argv += ["--access-log", access_log]
    argv += [item for flag, value in options.items() if value is not None for item in (flag, str(value))]
    sys.stdout.flush()
    os.set_inheritable(sock.fileno(), True)
    os.execv(sys.executable, argv)  # Ctrl+C and SIGTERM now reach the server itself


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
