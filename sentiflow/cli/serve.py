"""``sentiflow serve``: run the local endpoint server for one model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def serve(
    model: Annotated[str, typer.Option("--model", help="Model folder, model.tar.gz, file:// or store URI.")],
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (announced on stdout).")] = 8080,
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default: SENTIFLOW_SERVE_HOST, 127.0.0.1).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Endpoint name; /endpoints/OTHER/invocations then answers 404.")
    ] = None,
    port_file: Annotated[Path | None, typer.Option(help="Write the bound port here once listening.")] = None,
    state_file: Annotated[
        Path | None, typer.Option(help="Keep invocation count and last_invoked_at in this JSON file.")
    ] = None,
    access_log: Annotated[str, typer.Option(help="JSON-lines access log: a file path, '-' for stderr or 'off'.")] = "-",
    max_body_bytes: Annotated[
        int | None, typer.Option(help="Body limit in bytes (default: SENTIFLOW_SERVE_MAX_BODY_BYTES, 1 MiB).")
    ] = None,
    max_reviews: Annotated[
        int | None, typer.Option(help="Reviews per request (default: SENTIFLOW_SERVE_MAX_REVIEWS, 256).")
    ] = None,
    torch_threads: Annotated[
        int, typer.Option(min=1, help="Torch threads per request; concurrency comes from parallel requests.")
    ] = 1,
) -> None:
    """Serve a model: GET /ping, GET /stats, POST /invocations, POST /endpoints/NAME/invocations."""
    import torch

    from backends.models import resolve_model_dir
    from core.config import get_settings
    from core.errors import SentiflowError
    from model.inference import model_fn
    from serve.server import EndpointServer, run

    torch.set_num_threads(torch_threads)  # one OpenMP team per handler thread would oversubscribe the cores
    settings = get_settings(serve_host=host, serve_max_body_bytes=max_body_bytes, serve_max_reviews=max_reviews)
    model_dir = resolve_model_dir(model, settings)
    try:
        loaded = model_fn(str(model_dir))
    except (OSError, ValueError, KeyError) as error:
        reason = " ".join(str(error).split())  # one line, even for torch's multi-line state_dict errors
        raise SentiflowError(
            f"model {model} could not be loaded ({reason}); pass a model trained by this version of sentiflow"
        ) from None
    log_stream = None if access_log == "off" else sys.stderr if access_log == "-" else _open_log(Path(access_log))
    try:
        server = EndpointServer(
            loaded,
            settings.serve_host,
            port,
            name=name,
            max_body_bytes=settings.serve_max_body_bytes,
            max_reviews=settings.serve_max_reviews,
            access_log=log_stream,
            state_file=state_file,
        )
    except OSError as error:
        raise SentiflowError(
            f"cannot listen on {settings.serve_host}:{port} ({error.strerror}); pick another --port or 0"
        ) from None
    run(server, port_file=port_file, announce=lambda line: print(line, flush=True))


def _open_log(path: Path):  # noqa: ANN202 - a text stream that lives as long as the process
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed at process exit


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
