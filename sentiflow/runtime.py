"""Process-level set-up shared by the CLI and flow entry points."""

from __future__ import annotations

import os

from sentiflow.config import Settings


def configure_environment(settings: Settings) -> None:
    """Point Prefect at ``SENTIFLOW_HOME`` (absolute) unless the user chose otherwise; never phone home.

    Flows talk to ``PREFECT_API_URL`` if set, else to the server ``sentiflow prefect server`` started for this
    ``SENTIFLOW_HOME`` if it runs, else to a temporary server Prefect starts for the one command.
    Must run before ``prefect`` is imported for the first time in this process.
    """
    os.environ.setdefault("SENTIFLOW_HOME", str(settings.home))
    os.environ.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if not os.environ.get("PREFECT_API_URL"):
        from sentiflow.prefect_ops.server import read_server

        running = read_server(settings)
        if running is not None:
            os.environ["PREFECT_API_URL"] = running.api_url
            os.environ.setdefault("PREFECT_UI_URL", running.ui_url)
    settings.home.mkdir(parents=True, exist_ok=True)
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)


def configure_flow_run(settings: Settings) -> None:
    """Everything a CLI command needs before it runs a flow: the environment above, then the saved result-storage
    block (``<SENTIFLOW_HOME>/prefect-results``, or S3 on aws) that the worker's runs use too, so finished stages
    are reused across CLI and deployment runs alike."""
    configure_environment(settings)
    from sentiflow.prefect_ops.storage import ensure_result_storage

    ensure_result_storage(settings)
