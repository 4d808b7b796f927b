"""A real Prefect server and worker for the session, started and stopped by sentiflow's own operations code.

Fixtures (hoistable into ``tests/conftest.py``):

- ``prefect_settings``: Settings with a session SENTIFLOW_HOME, ``notify_url`` = the local receiver and a
  15 s idle window; ``notify_receiver``: an HTTP server on 127.0.0.1 recording every POST.
- ``prefect_server``: ``sentiflow.prefect_ops.server.start_server`` on a free port (UI on); this process's
  Prefect client points at it for the whole session (also for threads).
- ``prefect_deployed``: ``deploy_all`` of ``tests/prefect_ops/prefect.fixture.yaml`` and of the
  ``prefect.yaml`` deployments whose flow files exist; ``prefect_worker``: ``start_worker`` on the
  ``sentiflow-local`` pool.

Set ``SENTIFLOW_TEST_PREFECT_API_URL`` to reuse a server ``.ci/run`` started (it is then not stopped).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sentiflow.config import Settings
from tests.prefect_ops.helpers import (
    FIXTURE_PREFECT_FILE,
    IDLE_MINUTES,
    PROJECT_ROOT,
    PrefectStack,
    Receiver,
    free_port,
    real_deployments_available,
)


def _start_receiver() -> tuple[ThreadingHTTPServer, Receiver]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                payload: Any = json.loads(body)
            except ValueError:
                payload = body.decode("utf-8", "replace")
            with receiver.lock:
                receiver.requests.append({"path": self.path, "json": payload})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, receiver


@pytest.fixture(scope="session")
def notify_receiver() -> Iterator[Receiver]:
    """The generic-webhook target of ``SENTIFLOW_NOTIFY_URL`` in these tests."""
    server, receiver = _start_receiver()
    yield receiver
    server.shutdown()


@pytest.fixture(scope="session")
def prefect_settings(tmp_path_factory: pytest.TempPathFactory, notify_receiver: Receiver) -> Settings:
    """Settings of the session's Prefect stack (home, notify URL, short idle window)."""
    return Settings(
        home=tmp_path_factory.mktemp("prefect-ops") / "home",
        notify_url=notify_receiver.url,
        idle_minutes=IDLE_MINUTES,
    )


@pytest.fixture(scope="session")
def prefect_server(prefect_settings: Settings) -> Iterator[PrefectStack]:
    """A real Prefect server for the session; this process's Prefect client talks to it."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from sentiflow.prefect_ops.server import start_server, stop_server, ui_url_for

    reused = os.environ.get("SENTIFLOW_TEST_PREFECT_API_URL")
    if reused:
        api_url = reused.rstrip("/")
    else:
        api_url = start_server(prefect_settings, port=free_port(), ui=True, timeout=180).api_url
    saved_env = {name: os.environ.get(name) for name in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    os.environ["PREFECT_API_URL"] = api_url
    os.environ["PREFECT_UI_URL"] = ui_url_for(api_url)
    try:
        with (
            temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url_for(api_url)}),
            prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()),
        ):
            yield PrefectStack(api_url=api_url, ui_url=ui_url_for(api_url), settings=prefect_settings)
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not reused:
            stop_server(prefect_settings)


@pytest.fixture(scope="session")
def prefect_deployed(prefect_server: PrefectStack) -> list[str]:
    """Deploy the fixture deployments (and the real ones once their flows exist); returns deployment names."""
    from sentiflow.prefect_ops.deploy import deploy_all

    report = deploy_all(prefect_server.settings, project_dir=PROJECT_ROOT, prefect_file=FIXTURE_PREFECT_FILE)
    available = real_deployments_available()
    if available:
        report = deploy_all(prefect_server.settings, project_dir=PROJECT_ROOT, names=available)
    return report.deployments


def small_pipeline_env(archive: Path) -> dict[str, str]:
    """Worker environment that makes a default ``train-and-deploy`` run small (synthetic data, one epoch)."""
    from sentiflow.io import sha256_file
    from tests.conftest import NLTK_DATA

    env = {
        "SENTIFLOW_DATA_URL": str(archive),
        "SENTIFLOW_DATA_SHA256": sha256_file(archive),
        "SENTIFLOW_EXPECTED_ROWS_PER_SPLIT": "200",
        "SENTIFLOW_VOCAB_SIZE": "60",
        "SENTIFLOW_MAX_LEN": "80",
        "SENTIFLOW_EPOCHS": "1",
        "SENTIFLOW_MIN_ACCURACY": "0",
        "SENTIFLOW_MAX_REGRESSION": "1",
        "SENTIFLOW_PARITY_SAMPLE": "20",
        "SENTIFLOW_API_PORT": str(free_port()),
        "SENTIFLOW_IDLE_MINUTES": str(IDLE_MINUTES),  # same window as the deployed idle trigger
    }
    if NLTK_DATA.is_dir():
        env["NLTK_DATA"] = str(NLTK_DATA)
    return env


@pytest.fixture(scope="session")
def prefect_worker(prefect_server: PrefectStack, prefect_deployed: list[str], synthetic_archive: Path) -> Iterator[int]:
    """A worker on the ``sentiflow-local`` pool for the session (small-pipeline env); yields its pid."""
    from sentiflow.prefect_ops.worker import start_worker, stop_worker

    info = start_worker(
        prefect_server.settings,
        api_url=prefect_server.api_url,
        extra_env=small_pipeline_env(synthetic_archive),
    )
    try:
        yield info.pid
    finally:
        stop_worker(prefect_server.settings)
        _stop_what_runs_left(prefect_server.settings)


def _stop_what_runs_left(settings: Settings) -> None:
    """The worker's pipeline runs deploy endpoints and start the API gateway under this home: stop them."""
    from backends.local.api import LocalApiGateway
    from backends.local.endpoints import LocalEndpointManager

    endpoints = LocalEndpointManager(settings)
    for endpoint in endpoints.list():
        endpoints.delete(endpoint.name, drain_timeout_s=2)
    LocalApiGateway(settings).stop()
