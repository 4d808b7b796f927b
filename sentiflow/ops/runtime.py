"""Process-level set-up shared by the CLI and flow entry points."""

from __future__ import annotations

import os
from collections.abc import Callable

from core.config import Settings
from core.errors import SentiflowError

RESULT_SERIALIZER = "json"
"""Prefect's serializer for every result record (stage results are small dataclasses and dicts): a record in the
result storage is data to read, never code to run (pickle). Inherited by servers, workers and their flow runs."""


def configure_environment(settings: Settings) -> None:
    """Point Prefect at ``SENTIFLOW_HOME`` (absolute) unless the user chose otherwise; never phone home; results
    serialized as JSON (:data:`RESULT_SERIALIZER`).

    Talks to ``PREFECT_API_URL`` if set, else to the managed server of this ``SENTIFLOW_HOME`` when it runs
    (nothing is started here: see :func:`configure_flow_run`). Never a temporary ("ephemeral") server.
    Must run before ``prefect`` is imported for the first time in this process.
    """
    os.environ.setdefault("SENTIFLOW_HOME", str(settings.home))
    os.environ.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_RESULTS_DEFAULT_SERIALIZER", RESULT_SERIALIZER)  # no pickle in shared storage
    if not os.environ.get("PREFECT_API_URL"):
        from sentiflow.ops.server import read_server

        running = read_server(settings)
        if running is not None:
            _use_api(running.api_url, running.ui_url)
    settings.home.mkdir(parents=True, exist_ok=True)
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)


def _use_api(api_url: str, ui_url: str) -> None:
    os.environ["PREFECT_API_URL"] = api_url
    os.environ.setdefault("PREFECT_UI_URL", ui_url)


def configure_flow_run(settings: Settings, announce: Callable[[str], None] = print) -> None:
    """Everything a CLI command needs before it runs a flow.

    The environment above; then, when no Prefect API is configured, the managed local server of this
    ``SENTIFLOW_HOME`` — reused when it runs, started when it does not (``sentiflow.ops.server.ensure_server``) —
    and one line saying where its UI is; then the saved result-storage block (``<SENTIFLOW_HOME>/prefect-results``,
    or S3 on aws) that the worker's runs use too, so finished stages are reused across CLI and deployment runs.
    """
    configure_environment(settings)
    if not os.environ.get("PREFECT_API_URL"):
        from sentiflow.ops.server import ensure_server

        info = ensure_server(settings, announce)
        _use_api(info.api_url, info.ui_url)
        announce(f"Prefect UI  {info.ui_url}  (server of {settings.home}; stop it with `sentiflow prefect down`)")
    else:
        announce(
            f"Prefect UI  {os.environ.get('PREFECT_UI_URL') or os.environ['PREFECT_API_URL'].removesuffix('/api')}"
        )
    from sentiflow.ops.storage import ensure_result_storage

    ensure_result_storage(settings)
    quiet_user_error_tracebacks()


def quiet_user_error_tracebacks() -> None:
    """On the console, a :class:`SentiflowError` in Prefect's logs shows as its one-line message, not a traceback:
    it names the input and the fix already. The run's logs in the Prefect UI keep the full record.

    Prefect builds its console formatter with a ``()`` factory that ``PREFECT_LOGGING_*`` variables cannot replace,
    and rebuilds its handlers when a flow starts, so the formatter class itself is wrapped (in this process only).
    """
    import logging

    from prefect.logging.formatters import PrefectFormatter

    original = PrefectFormatter.format
    if getattr(original, "sentiflow_quiet", False):
        return

    def format_record(self: PrefectFormatter, record: logging.LogRecord) -> str:
        if not (record.exc_info and isinstance(record.exc_info[1], SentiflowError)):
            return original(self, record)
        saved = record.exc_info, record.exc_text  # the API handler formatted (and cached) the traceback already
        record.exc_info, record.exc_text = None, None
        try:
            return original(self, record)
        finally:
            record.exc_info, record.exc_text = saved

    format_record.sentiflow_quiet = True  # type: ignore[attr-defined]
    PrefectFormatter.format = format_record  # type: ignore[method-assign]
