"""The local "Lambda/API update" stage: point the local API gateway (``serve.gateway``) at an endpoint.

Re-pointing is the local ``UpdateFunctionConfiguration``: one atomic write of ``<state_dir>/api.json``. The running
gateway notices it, starts fresh execution environments with the new configuration, switches new requests to them
and lets the old ones finish; :meth:`LocalApiGateway.point_to` returns once ``/healthz`` says the switch is complete
(the new revision serves and no request runs on the old one), so the caller may then delete the old endpoint without
failing a request. When no gateway runs, it is started through :mod:`core.processes` on ``SENTIFLOW_API_PORT``
(its record in ``<state_dir>/api-server.json``, its log in ``<state_dir>/api-server.log``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from backends.base import ApiInfo, EndpointInfo, LogLine
from core import processes
from core.config import Settings
from core.errors import SentiflowError
from core.processes import ProcessRecord
from serve.gateway import NO_TARGET, ApiTarget, api_state_path, read_api_target, write_api_target

API_SERVER_FILE = "api-server.json"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 40.0  # the gateway lets in-flight invocations finish (up to the function's 30 s timeout)
SWITCH_TIMEOUT_S = 60.0


def api_server_path(settings: Settings) -> Path:
    """Where the running gateway's process record is kept."""
    return settings.state_dir / API_SERVER_FILE


def _health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The gateway's ``/healthz`` answer, or None when nothing (or something else) answers."""
    try:
        response = httpx.get(f"{url}/healthz", timeout=timeout, trust_env=False)
        payload = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return payload if isinstance(payload, dict) and payload.get("status") == "ok" else None


class LocalApiGateway:
    """``backends.base.ApiGateway`` for the local backend."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_path = api_state_path(settings)
        self.server_path = api_server_path(settings)
        self.log_path = settings.state_dir / "api-server.log"

    # --- the interface -----------------------------------------------------------------------------------
    def point_to(self, endpoint: EndpointInfo, log: LogLine) -> ApiInfo:
        """Make the API serve ``endpoint``; returns once no request runs against the previous target any more."""
        if not endpoint.url:
            raise SentiflowError(f"endpoint {endpoint.name} has no URL; only a running local endpoint can be served")
        if endpoint.status != "InService":
            raise SentiflowError(f"endpoint {endpoint.name} is {endpoint.status}, not InService; deploy it first")
        previous = read_api_target(self.state_path)
        target = write_api_target(
            self.state_path, ApiTarget(endpoint.name, endpoint.url.rstrip("/"), str(endpoint.version))
        )
        if previous.deployed and previous.endpoint_name != endpoint.name:
            log(f"API switching from {previous.endpoint_name} to {endpoint.name} (version {endpoint.version})")
        else:
            log(f"API points at endpoint {endpoint.name} (version {endpoint.version})")
        url = self.ensure_running(log)
        self._wait_switched(url, target)
        return ApiInfo(url=url, page_url=f"{url}/", endpoint_name=endpoint.name)

    def current(self) -> ApiInfo | None:
        """What the API serves, or None when it points at nothing. ``url`` is the running gateway's (or, when
        none runs, where ``point_to`` would start it)."""
        target = read_api_target(self.state_path)
        if not target.deployed:
            return None
        url = self.running_url() or f"http://127.0.0.1:{self.settings.api_port}"
        return ApiInfo(url=url, page_url=f"{url}/", endpoint_name=target.endpoint_name)

    def clear(self, log: LogLine) -> None:
        """Point the API at nothing: ``/predict`` then answers 503 "no model is deployed"."""
        previous = read_api_target(self.state_path)
        target = write_api_target(self.state_path, NO_TARGET)
        url = self.running_url()
        if url is not None:
            self._wait_switched(url, target)
        if previous.deployed:
            log(f"API no longer serves {previous.endpoint_name}; it answers 503 until the next deploy")

    def target(self) -> ApiTarget:
        """The raw target (endpoint name, URL, model version) from the state file."""
        return read_api_target(self.state_path)

    # --- the gateway process -----------------------------------------------------------------------------
    def record(self) -> ProcessRecord | None:
        return ProcessRecord.load(self.server_path)

    def running_url(self) -> str | None:
        """The URL of the live gateway for this home: the one recorded in ``api-server.json``, else one that runs
        on ``SENTIFLOW_API_PORT`` serving this home's state file (a ``sentiflow api`` in a terminal); or None."""
        record = self.record()
        if record is not None and record.url is not None and processes.alive(record):
            health = _health(record.url)
            if health is not None and health.get("pid") == record.pid:
                return record.url
        if self.settings.api_port:
            url = f"http://127.0.0.1:{self.settings.api_port}"
            health = _health(url, timeout=1.0)
            if health is not None and health.get("state_file") == str(self.state_path):
                return url
        return None

    def ensure_running(self, log: LogLine) -> str:
        """The URL of a live gateway; start one first when none runs."""
        with self._lock():
            return self.running_url() or self._start(log)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the gateway this backend started (SIGTERM: in-flight requests finish; SIGKILL after ``timeout``);
        True if one ran. A ``sentiflow api`` started in a terminal is left to its user."""
        with self._lock():
            record = self.record()
            running = record is not None and processes.alive(record)
            if running:
                processes.stop(record, grace_s=timeout)
            self.server_path.unlink(missing_ok=True)
            return running

    def _start(self, log: LogLine) -> str:
        env = {**os.environ, "SENTIFLOW_HOME": str(self.settings.home), "PYTHONUNBUFFERED": "1"}
        home = self.settings.home if self.settings.home.is_dir() else None
        record = processes.start(
            [sys.executable, "-m", "serve.gateway", "--fd", processes.FD],
            log_path=self.log_path,
            env=env,
            cwd=home,
            host="127.0.0.1",
            port=self.settings.api_port,
            health_path="/healthz",
            timeout_s=START_TIMEOUT_S,
            name="the API gateway",
            on_spawn=lambda started: started.save(self.server_path),
        )
        log(f"API gateway started on {record.url} (pid {record.pid}, log {self.log_path})")
        return str(record.url)

    def _wait_switched(self, url: str, target: ApiTarget, timeout_s: float = SWITCH_TIMEOUT_S) -> None:
        """Until the gateway serves ``target``'s revision and its retired environments have finished."""
        deadline = time.monotonic() + timeout_s
        health: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            health = _health(url)
            done = health is not None and health.get("revision") == target.revision
            if done and not health.get("switching") and not health.get("retiring_in_flight"):
                return
            time.sleep(0.05)
        raise SentiflowError(
            f"the API gateway at {url} did not switch to {target.endpoint_name or 'no endpoint'} within "
            f"{timeout_s:.0f} s (last health: {health}); see {self.log_path}"
        )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise starts/stops across processes (two flows deploying at once start one gateway)."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.state_dir / ".api.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
