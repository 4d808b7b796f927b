"""``sentiflow prefect up|down|server|deploy|worker|status``: run sentiflow on a local Prefect server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from core.config import get_settings, refuse_open_host

prefect_app = typer.Typer(
    name="prefect",
    help="Operate sentiflow on a local Prefect server: server, work pool, deployments, automations, worker.",
    no_args_is_help=True,
)

HostOption = Annotated[
    str,
    typer.Option(
        "--host",
        help="Address the Prefect server binds to (other than loopback only with PREFECT_SERVER_API_AUTH_STRING).",
    ),
]
PREFECT_AUTH_HINT = (
    "set PREFECT_SERVER_API_AUTH_STRING=user:password for the server (and PREFECT_API_AUTH_STRING for its clients) "
    "and put TLS in front of it: anyone who reaches an open Prefect server runs deployments and reads block secrets"
)


def check_server_host(host: str) -> None:
    """ConfigError unless ``host`` is loopback or the server will require Prefect's basic auth."""
    if not os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        refuse_open_host(host, "the Prefect server", PREFECT_AUTH_HINT)


PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        min=1,
        max=65535,
        help="Port of the Prefect server (API and UI). [default: SENTIFLOW_PREFECT_PORT, 4200]",
    ),
]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the server to be healthy.")]
ProjectOption = Annotated[
    Path | None,
    typer.Option("--project-dir", help="Folder holding prefect.yaml (default: here, or the checkout)."),
]
PrefectFileOption = Annotated[
    Path | None, typer.Option("--prefect-file", help="Deployment file (default: <project-dir>/prefect.yaml).")
]
LimitOption = Annotated[
    int | None, typer.Option("--limit", help="Maximum flow runs the worker runs at once (default: no limit).")
]


def _echo_server(api_url: str) -> None:
    from sentiflow.ops.server import ui_url_for

    typer.echo(f"Prefect API: {api_url}")
    typer.echo(f"Prefect UI:  {ui_url_for(api_url)}")
    typer.echo(f"Use it from a shell: export PREFECT_API_URL={api_url}")


@prefect_app.command("server")
def server_command(
    host: HostOption = "127.0.0.1",
    port: PortOption = None,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Serve the API only.")] = False,
    timeout: TimeoutOption = 180.0,
) -> None:
    """Start the Prefect server of this SENTIFLOW_HOME in the background (`prefect server start --background`;
    database and log under SENTIFLOW_HOME/prefect) and wait until it answers. Reused if it runs."""
    from sentiflow.ops.server import start_server

    check_server_host(host)
    settings = get_settings(prefect_port=port)
    info = start_server(settings, host=host, port=settings.prefect_port, ui=not no_ui, timeout=timeout)
    typer.echo(f"Prefect server running (pid {info.pid}, log {info.log_path})")
    _echo_server(info.api_url)


@prefect_app.command("deploy")
def deploy_command(
    project_dir: ProjectOption = None,
    prefect_file: PrefectFileOption = None,
    name: Annotated[
        list[str] | None, typer.Option("--name", help="Deploy only these deployments (repeatable).")
    ] = None,
) -> None:
    """Create or update the work pool, result storage, deployments, notification block and automations."""
    from sentiflow.ops.deploy import deploy_all

    report = deploy_all(get_settings(), project_dir=project_dir, prefect_file=prefect_file, names=name or ())
    typer.echo(f"work pool {report.work_pool} ({'created' if report.pool_created else 'exists'})")
    typer.echo(f"result storage {report.result_storage} (server default)")
    for deployment in report.deployments:
        typer.echo(f"deployment {deployment}")
    if report.notify_block_id is None:
        typer.echo("notifications: off (set SENTIFLOW_NOTIFY_URL to get failure messages)")
    for automation in report.automations:
        typer.echo(f"automation {automation}")
    for automation in report.removed_automations:
        typer.echo(f"automation {automation} removed (SENTIFLOW_NOTIFY_URL is not set)")
    _echo_server(report.api_url)


@prefect_app.command("worker")
def worker_command(limit: LimitOption = None) -> None:
    """Start a worker for the sentiflow-local process pool in the background."""
    from sentiflow.ops.worker import start_worker

    info = start_worker(get_settings(), limit=limit)
    typer.echo(f"worker {info.name} polling pool {info.pool} (pid {info.pid}, log {info.log_path})")


@prefect_app.command("up")
def up_command(
    host: HostOption = "127.0.0.1",
    port: PortOption = None,
    timeout: TimeoutOption = 180.0,
    project_dir: ProjectOption = None,
    limit: LimitOption = None,
) -> None:
    """Server, pool, deployments, notification block, automations and a worker — in one command."""
    from sentiflow.ops.deploy import deploy_all
    from sentiflow.ops.server import start_server
    from sentiflow.ops.worker import start_worker

    check_server_host(host)
    settings = get_settings(prefect_port=port)
    server = start_server(settings, host=host, port=settings.prefect_port, timeout=timeout)
    report = deploy_all(settings, project_dir=project_dir, api_url=server.api_url)
    worker = start_worker(settings, api_url=server.api_url, limit=limit)
    typer.echo(f"server pid {server.pid}, worker pid {worker.pid}; deployments: {', '.join(report.deployments)}")
    if report.notify_block_id is None:
        typer.echo("notifications: off (set SENTIFLOW_NOTIFY_URL and run `sentiflow prefect deploy`)")
    _echo_server(server.api_url)
    typer.echo("Stop everything with: sentiflow prefect down")


@prefect_app.command("down")
def down_command() -> None:
    """Stop the worker, then the server (`prefect server stop`; killed if it has not exited after 30 s)."""
    from sentiflow.ops.server import stop_server
    from sentiflow.ops.worker import stop_worker

    settings = get_settings()
    worker = stop_worker(settings)
    server = stop_server(settings)
    typer.echo(f"worker stopped (pid {worker.pid})" if worker else "worker was not running")
    typer.echo(f"server stopped (pid {server.pid})" if server else "server was not running")


@prefect_app.command("status")
def status_command() -> None:
    """Show whether the managed server and worker run, and where the UI is."""
    from sentiflow.ops.server import is_healthy, prefect_home, read_server
    from sentiflow.ops.worker import read_worker

    settings = get_settings()
    server = read_server(settings)
    worker = read_worker(settings)
    typer.echo(f"PREFECT_HOME {prefect_home(settings)}")
    if server is None:
        typer.echo("server: not running (start it with `sentiflow prefect up`)")
    else:
        health = "healthy" if is_healthy(server.api_url) else "NOT answering"
        typer.echo(f"server: pid {server.pid}, {health}")
        _echo_server(server.api_url)
    typer.echo(f"worker: pid {worker.pid} on pool {worker.pool}" if worker else "worker: not running")
    if server is None or worker is None:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``sentiflow prefect ...`` to the CLI."""
    app.add_typer(prefect_app, name="prefect")
