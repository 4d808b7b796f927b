"""``sentiflow endpoints list|delete``, ``sentiflow rollback`` and ``sentiflow teardown``.

These call the stage functions directly (``tasks.deploy``, ``tasks.teardown``) — quick, with no Prefect server
needed — under the same endpoints lock the pipeline's deploy holds, so they never interleave with a deploy. The
scheduled / event-triggered teardown runs the Prefect flow ``flows.teardown``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from core.config import get_settings
from sentiflow.ops.runtime import configure_environment

if TYPE_CHECKING:
    from backends.base import EndpointInfo

endpoints_app = typer.Typer(help="List and delete model endpoints.", no_args_is_help=True)


def _echo(line: str) -> None:
    typer.echo(line)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with left-aligned columns (``-`` for empty cells)."""
    cells = [[("-" if value in (None, "") else str(value)) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _short_time(value: str | None) -> str | None:
    """``2025-01-31T12:00:00.123+00:00`` → ``2025-01-31 12:00:00Z``."""
    if not value:
        return None
    from backends.local.registry import parse_time

    parsed = parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%SZ") if parsed else value


def endpoint_rows(endpoints: Sequence[EndpointInfo], live_name: str | None) -> list[dict[str, Any]]:
    """The JSON form of ``endpoints list``: each endpoint's fields plus ``live`` (the API serves it)."""
    return [{**endpoint.to_dict(), "live": endpoint.name == live_name} for endpoint in endpoints]


@endpoints_app.command("list")
def list_endpoints(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List endpoints: name, model version, status, URL, created, last invoked (* = the API serves it)."""
    settings = get_settings()
    configure_environment(settings)
    from backends.base import get_backend

    backend = get_backend(settings)
    endpoints = backend.endpoints.list()
    current = backend.api.current()
    live = current.endpoint_name if current else None
    if as_json:
        typer.echo(json.dumps(endpoint_rows(endpoints, live), indent=2, default=str))
        return
    if not endpoints:
        typer.echo(f"no endpoints on the {backend.name} backend (SENTIFLOW_HOME={settings.home})")
        return
    rows = [
        [
            ("* " if e.name == live else "  ") + e.name,
            f"v{e.version}",
            e.status,
            e.url or e.instance_type,
            _short_time(e.created_at),
            _short_time(e.last_invoked_at),
            e.model_uri,
        ]
        for e in endpoints
    ]
    typer.echo(format_table(["  name", "version", "status", "url", "created", "last invoked", "model"], rows))
    typer.echo(f"* = served by the API ({current.url})" if current else "the API serves no endpoint")


@endpoints_app.command("delete")
def delete_endpoint(
    name: Annotated[str, typer.Argument(help="Endpoint name (see `endpoints list`).")],
) -> None:
    """Drain and delete one endpoint, keeping its model artifact. The API answers 503 if it served it."""
    settings = get_settings()
    configure_environment(settings)
    from tasks.deploy import delete_endpoint as delete
    from tasks.deploy import endpoints_lock

    with endpoints_lock(settings, _echo):
        deletion = delete(settings, name, _echo, reason="deleted by the user")
    if deletion.api_cleared:
        typer.echo("the API served this endpoint: it answers 503 until the next deploy (`sentiflow rollback`)")


def rollback() -> None:
    """Redeploy the model registry's previous approved version (blue/green) and point the API at it."""
    settings = get_settings()
    configure_environment(settings)
    from tasks.deploy import endpoints_lock
    from tasks.deploy import rollback as do_rollback

    with endpoints_lock(settings, _echo):
        promotion = do_rollback(settings, _echo)
    api = f" — API {promotion.api.url}" if promotion.api else ""
    typer.echo(f"rolled back to model v{promotion.version} on {promotion.endpoint.name}{api}")


def teardown(
    idle_minutes: Annotated[
        float | None,
        typer.Option(min=0, help="Delete endpoints idle this long [default: SENTIFLOW_IDLE_MINUTES, 60]."),
    ] = None,
    max_age_hours: Annotated[
        float | None,
        typer.Option(min=0, help="Also delete endpoints older than this [default: SENTIFLOW_MAX_AGE_HOURS]."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be deleted.")] = False,
    endpoint: Annotated[str | None, typer.Option(help="Only consider this endpoint.")] = None,
) -> None:
    """Delete idle or too-old endpoints and report what that saves (model artifacts are kept)."""
    settings = get_settings()
    configure_environment(settings)
    from tasks.deploy import endpoints_lock
    from tasks.teardown import run_teardown

    with endpoints_lock(settings, _echo):
        report = run_teardown(
            settings,
            lambda line: None,
            idle_minutes=idle_minutes,
            max_age_hours=max_age_hours,
            dry_run=dry_run,
            endpoint=endpoint,
        )
    if report.items:
        rows = [list(row.values()) for row in report.rows()]
        typer.echo(format_table(["endpoint", "version", "reason", "idle min", "age h", "saves", "action"], rows))
    typer.echo(report.summary())
    if any(item.error for item in report.items):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(endpoints_app, name="endpoints")
    app.command("rollback")(rollback)
    app.command("teardown")(teardown)
