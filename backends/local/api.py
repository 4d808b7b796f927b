"""The local "Lambda/API update" stage: point the local API gateway (``sentiflow api``) at an endpoint.

The gateway reads its target from ``<state_dir>/api.json`` on every request, so re-pointing is one atomic
file write; no restart, no dropped request. When no gateway is running, :meth:`LocalApiGateway.point_to`
starts a detached ``sentiflow api`` (its pid/port/url land in ``<state_dir>/api-server.json``, its log in
``<state_dir>/api-server.log``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.base import ApiInfo, EndpointInfo, LogLine
from core.config import Settings
from core.errors import SentiflowError
from core.io import read_json
from core.processes import pid_alive
from serve.gateway import (
    NO_TARGET,
    ApiTarget,
    api_server_path,
    api_state_path,
    read_api_target,
    write_api_target,
)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LAUNCH = "import sys; sys.argv[0] = 'sentiflow'; from sentiflow.cli import main; main()"


def _health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The gateway's ``/healthz`` answer, or None when nothing (or something else) answers."""
    try:
        with _NO_PROXY.open(f"{url}/healthz", timeout=timeout) as response:
            payload = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return payload if isinstance(payload, dict) and payload.get("status") == "ok" else None


def _is_gateway_process(pid: int) -> bool:
    """True when ``pid`` is alive and runs ``sentiflow api`` (guards against a recycled pid)."""
    if pid <= 0 or not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"api" in argv and any(b"sentiflow" in part for part in argv)


class LocalApiGateway:
    """``backends.base.ApiGateway`` for the local backend."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_path = api_state_path(settings)
        self.server_path = api_server_path(settings)
        self.log_path = settings.state_dir / "api-server.log"

    # --- the interface -----------------------------------------------------------------------------------
    def point_to(self, endpoint: EndpointInfo, log: LogLine) -> ApiInfo:
        """Make the API serve ``endpoint`` (atomically; requests in flight finish on the old one)."""
        if not endpoint.url:
            raise SentiflowError(f"endpoint {endpoint.name} has no URL; only a running local endpoint can be served")
        if endpoint.status != "InService":
            raise SentiflowError(f"endpoint {endpoint.name} is {endpoint.status}, not InService; deploy it first")
        previous = read_api_target(self.state_path)
        target = write_api_target(
            self.state_path, ApiTarget(endpoint.name, endpoint.url.rstrip("/"), str(endpoint.version))
        )
        if previous.deployed and previous.endpoint_name != endpoint.name:
            log(f"API switched from {previous.endpoint_name} to {endpoint.name} (version {endpoint.version})")
        else:
            log(f"API points at endpoint {endpoint.name} (version {endpoint.version})")
        url = self.ensure_running(log)
        health = _health(url)
        if health is None or health.get("endpoint_name") != target.endpoint_name:
            raise SentiflowError(
                f"the API gateway at {url} does not serve endpoint {endpoint.name}; see {self.log_path}"
            )
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
        write_api_target(self.state_path, NO_TARGET)
        if previous.deployed:
            log(f"API no longer serves {previous.endpoint_name}; it answers 503 until the next deploy")

    def target(self) -> ApiTarget:
        """The raw target (endpoint name, URL, model version) from the state file."""
        return read_api_target(self.state_path)

    # --- the gateway process -----------------------------------------------------------------------------
    def running_url(self) -> str | None:
        """The URL of the live gateway recorded in ``api-server.json``, or None."""
        record = self._record()
        if record is None:
            return None
        health = _health(str(record.get("url")))
        if health is None or health.get("pid") != record.get("pid"):
            return None
        return str(record["url"])

    def ensure_running(self, log: LogLine) -> str:
        """The URL of a live gateway; start a detached ``sentiflow api`` first when none runs."""
        with self._lock():
            url = self.running_url()
            if url is not None:
                return url
            return self._start(log)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the detached gateway (SIGTERM, then SIGKILL); True when one was running."""
        with self._lock():
            record = self._record()
            pid = int(record["pid"]) if record is not None else 0
            if record is None or (self.running_url() is None and not _is_gateway_process(pid)):
                self.server_path.unlink(missing_ok=True)
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 5.0)
            self.server_path.unlink(missing_ok=True)
            return True

    def _start(self, log: LogLine) -> str:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.server_path.unlink(missing_ok=True)
        port = self.settings.api_port
        env = {**os.environ, "SENTIFLOW_HOME": str(self.settings.home), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-c", _LAUNCH, "api", "--port", str(port), "--host", "127.0.0.1"]
        with open(self.log_path, "ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the flow run that started it
                close_fds=True,
                cwd=str(self.settings.home) if self.settings.home.is_dir() else None,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SentiflowError(
                    f"the API gateway (sentiflow api --port {port}) exited with code {process.returncode}: "
                    f"{self._log_tail()}"
                )
            record = self._record()
            if record is not None and record.get("pid") == process.pid:
                health = _health(str(record.get("url")), timeout=1.0)
                if health is not None and health.get("pid") == process.pid:
                    log(f"API gateway started on {record['url']} (pid {process.pid}, log {self.log_path})")
                    return str(record["url"])
            time.sleep(0.1)
        process.kill()
        process.wait(timeout=5)
        raise SentiflowError(f"the API gateway did not answer within {START_TIMEOUT_S:.0f} s: {self._log_tail()}")

    def _record(self) -> dict[str, Any] | None:
        try:
            record = read_json(self.server_path)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and "pid" in record and "url" in record else None

    def _log_tail(self, lines: int = 8) -> str:
        try:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return f"no log at {self.log_path}"
        return " | ".join(tail) or f"empty log at {self.log_path}"

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        return not pid_alive(pid)

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
