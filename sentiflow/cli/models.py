"""``sentiflow models list``: the model registry — versions, accuracy, approval status, which one is live.

Local backend: the ``models`` table of ``<SENTIFLOW_HOME>/state/endpoints.db``; aws backend: the SageMaker Model
Registry group ``<SENTIFLOW_AWS_PREFIX>-models`` (the same list on every machine, and in SageMaker Studio).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from core.config import get_settings
from sentiflow.cli.endpoints import _short_time, format_table
from sentiflow.ops.runtime import configure_environment

models_app = typer.Typer(help="The model registry: versions, metrics, approval status.", no_args_is_help=True)


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List model versions: status (PendingManualApproval / Approved / Rejected), accuracy, report (* = live)."""
    settings = get_settings()
    configure_environment(settings)
    from backends.base import get_backend, get_registry

    models = get_registry(settings).list()
    backend = get_backend(settings)
    api = backend.api.current()
    serving = backend.endpoints.get(api.endpoint_name) if api is not None and api.endpoint_name else None
    if as_json:
        rows = [{**model.to_dict(), "endpoint": serving.name if serving and model.live else None} for model in models]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    where = f"SENTIFLOW_HOME={settings.home}" if settings.backend == "local" else "SageMaker Model Registry"
    if not models:
        typer.echo(f"no model versions on the {settings.backend} backend ({where}); run the pipeline first")
        return
    rows = [
        [
            ("* " if model.live else "  ") + f"v{model.version}",
            model.status,
            None if model.accuracy is None else f"{model.accuracy:.4f}",
            _short_time(model.registered_at),
            _short_time(model.promoted_at),
            model.reason,
            model.metrics_uri,
            model.model_uri,
        ]
        for model in models
    ]
    headers = ["  version", "status", "accuracy", "registered", "promoted", "reason", "report", "model"]
    typer.echo(format_table(headers, rows))
    live = next((model for model in models if model.live), None)
    if live is None:
        typer.echo("* = live: no version was promoted yet")
    elif serving is not None:
        typer.echo(
            f"* = live: v{live.version}, served by endpoint {serving.name} (v{serving.version}) behind {api.url}"
        )
    else:
        typer.echo(
            f"* = live: v{live.version}, but the API serves no endpoint now (torn down?); `sentiflow rollback` "
            "or the pipeline deploys again"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
