"""Polling helpers for tests against a real Prefect server (timeouts, never timing assertions)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from sentiflow.config import Settings
from tests.browser import CHROMIUM, CHROMIUM_ARGS

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PREFECT_FILE = Path(__file__).with_name("prefect.fixture.yaml")
IDLE_MINUTES = 0.25


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def real_deployments_available() -> list[str]:
    """Names of the ``prefect.yaml`` deployments whose flow file exists in the tree (the lead's flows land
    one by one)."""
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return [
        d["name"]
        for d in config.get("deployments") or []
        if (PROJECT_ROOT / d["entrypoint"].split(":", 1)[0]).is_file()
    ]


@dataclass
class Receiver:
    """A loopback HTTP endpoint that records POSTed JSON bodies."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)


@dataclass(frozen=True)
class PrefectStack:
    """What the session's server fixture provides."""

    api_url: str
    ui_url: str
    settings: Settings


@contextlib.contextmanager
def serve_directory(folder: Path, port: int = 0) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (``port`` 0 = any); yields the base URL."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 1.0) -> T:
    """Call ``check`` until it returns something truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def read_flow_run(flow_run_id: UUID) -> Any:
    """The flow run as the server has it now."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def wait_for_final_state(flow_run_id: UUID, timeout: float) -> Any:
    """Wait until the flow run is Completed, Failed, Crashed or Cancelled; returns the run."""

    def final() -> Any:
        run = read_flow_run(flow_run_id)
        return run if run.state is not None and run.state.type.value in FINAL_STATES else None

    return wait_until(final, timeout, f"flow run {flow_run_id} to finish")


def task_runs_of(flow_run_id: UUID) -> list[Any]:
    """Every task run of a flow run, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )


def run_deployment_now(name: str, parameters: dict[str, Any] | None = None) -> UUID:
    """Create a flow run of deployment ``flow/deployment`` (what the UI's Run button or the CLI do)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
        return client.create_flow_run_from_deployment(deployment.id, parameters=parameters or {}).id


def retry_like_the_ui(flow_run_id: UUID) -> None:
    """What the UI's Retry button does: force the run to Scheduled/AwaitingRetry so a worker runs it again."""
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)


def flow_run_ids_of(deployment_id: UUID) -> set[UUID]:
    """Ids of every flow run of a deployment."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    return {run.id for run in runs}


def quick_run_from_ui(ui_url: str, deployment_id: UUID, deployment_name: str) -> UUID:
    """Open the deployment's page in headless Chromium, press Run → Quick run; returns the new run's id."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    before = flow_run_ids_of(deployment_id)
    run_id: UUID | None = None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{ui_url}/deployments/deployment/{deployment_id}")
            expect(page).to_have_title(f"Deployment: {deployment_name} • Prefect Server", timeout=30_000)
            page.get_by_role("button", name="Run", exact=True).click()
            quick_run = page.get_by_text("Quick run", exact=True)
            quick_run.wait_for(state="visible", timeout=15_000)
            with page.expect_response(
                lambda response: "/create_flow_run" in response.url or response.url.endswith("/flow_runs"),
                timeout=30_000,
            ) as created_response:
                quick_run.click()
            response = created_response.value
            assert response.ok, response.text()
            run_id = UUID(response.json()["id"])
        finally:
            browser.close()
    assert run_id not in before
    assert read_flow_run(run_id).deployment_id == deployment_id
    return run_id
