"""A local Prefect server whose database lives under ``SENTIFLOW_HOME``.

- ``PREFECT_HOME`` is ``<SENTIFLOW_HOME>/prefect`` (absolute: a relative one resolves per process and the
  worker's flow runs change directory). The default database is SQLite there; set
  ``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://...`` before starting for concurrent use.
- The port is passed through ``PREFECT_SERVER_API_PORT``/``PREFECT_API_URL``/``PREFECT_UI_API_URL``, not
  ``--port`` alone: the UI's own API calls would otherwise go to 4200.
- Telemetry is off (``PREFECT_SERVER_ANALYTICS_ENABLED=false``, ``DO_NOT_TRACK=1``): nothing leaves the host.
- The server runs detached; ``<PREFECT_HOME>/sentiflow-server.json`` records its pid, URL and log file.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from core import processes
from core.config import Settings
from core.errors import ConfigError, SentiflowError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200

QUIET_ENV: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
}
"""Environment that keeps Prefect (server and client) from calling the internet."""


@dataclass(frozen=True)
class ServerInfo:
    """A running (or just stopped) sentiflow-managed Prefect server."""

    pid: int
    host: str
    port: int
    api_url: str
    ui_url: str
    prefect_home: str
    log_path: str


def prefect_home(settings: Settings) -> Path:
    """``PREFECT_HOME`` for everything sentiflow starts: ``<SENTIFLOW_HOME>/prefect`` (absolute)."""
    return (settings.home / "prefect").resolve()


def state_file(settings: Settings) -> Path:
    """Where the managed server's pid, URL and log path are recorded."""
    return prefect_home(settings) / "sentiflow-server.json"


def api_url_for(host: str, port: int) -> str:
    """``http://host:port/api``."""
    return f"http://{host}:{port}/api"


def ui_url_for(api_url: str) -> str:
    """The UI's root URL for an API URL (the UI is served by the same server at ``/``)."""
    return api_url.rstrip("/").removesuffix("/api")


def client_env(settings: Settings, api_url: str) -> dict[str, str]:
    """Environment for Prefect *clients* sentiflow starts (deploy, worker): this server, quiet, same home."""
    return {
        "PREFECT_HOME": str(prefect_home(settings)),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_URL": ui_url_for(api_url),
        "SENTIFLOW_HOME": str(settings.home),
        **QUIET_ENV,
    }


def server_env(settings: Settings, host: str, port: int, ui: bool = True) -> dict[str, str]:
    """Environment for ``prefect server start`` (all server configuration must be set before it starts)."""
    api_url = api_url_for(host, port)
    return {
        **client_env(settings, api_url),
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
    }


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when ``GET <api>/health`` answers 200."""
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(api_url: str, timeout: float, pid: int | None = None, log_path: Path | None = None) -> None:
    """Poll the health endpoint until it answers; SentiflowError on timeout or when ``pid`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_healthy(api_url):
            return
        if pid is not None and not processes.pid_alive(pid):
            raise SentiflowError(
                f"the Prefect server exited before it became healthy at {api_url}; see {log_path} "
                "(is the port taken, or PREFECT_API_DATABASE_CONNECTION_URL wrong?)"
            )
        time.sleep(0.5)
    raise SentiflowError(
        f"the Prefect server at {api_url} was not healthy after {timeout:.0f} s; see {log_path or 'its log'}"
    )


def read_server(settings: Settings) -> ServerInfo | None:
    """The managed server recorded under ``SENTIFLOW_HOME`` if its process is still alive."""
    payload = processes.read_state(state_file(settings))
    if not payload:
        return None
    try:
        info = ServerInfo(**payload)
    except TypeError:
        return None
    return info if processes.pid_alive(info.pid) else None


def resolve_api_url(settings: Settings) -> str:
    """The Prefect API to talk to: ``PREFECT_API_URL`` if set, else the managed server's URL."""
    env_url = os.environ.get("PREFECT_API_URL")
    if env_url:
        return env_url.rstrip("/")
    info = read_server(settings)
    if info is not None:
        return info.api_url
    raise SentiflowError(
        f"no Prefect server: none is recorded under {prefect_home(settings)} and PREFECT_API_URL is not set; "
        "run `sentiflow prefect server` (or `sentiflow prefect up`) or export PREFECT_API_URL"
    )


def prefect_executable() -> str:
    """The ``prefect`` console script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "prefect"
    return str(candidate) if candidate.exists() else "prefect"


def start_server(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ui: bool = True,
    timeout: float = 120.0,
) -> ServerInfo:
    """Start a detached Prefect server (or return the running one) and wait until it is healthy.

    Idempotent: when the managed server for this ``SENTIFLOW_HOME`` is already running on the same address it
    is returned as is. Raises SentiflowError if the port is served by something else or start-up fails.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"Prefect server port {port} is out of range; pass --port 1..65535")
    running = read_server(settings)
    api_url = api_url_for(host, port)
    if running is not None:
        if running.api_url == api_url:
            wait_healthy(api_url, timeout, running.pid, Path(running.log_path))
            return running
        raise SentiflowError(
            f"a Prefect server for {settings.home} already runs at {running.api_url} (pid {running.pid}); "
            "stop it first with `sentiflow prefect down`"
        )
    if is_healthy(api_url, timeout=1.0):
        raise SentiflowError(
            f"port {port} already serves a Prefect API not started from {settings.home}; "
            "pick another with --port or stop that server"
        )
    home = prefect_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    env = {**os.environ, **server_env(settings, host, port, ui)}
    command = [prefect_executable(), "server", "start", "--host", host, "--port", str(port)]
    if not ui:
        command.append("--no-ui")
    pid = processes.spawn(command, env, log_path, cwd=home)
    info = ServerInfo(
        pid=pid,
        host=host,
        port=port,
        api_url=api_url,
        ui_url=ui_url_for(api_url),
        prefect_home=str(home),
        log_path=str(log_path),
    )
    processes.write_state(state_file(settings), asdict(info))
    try:
        wait_healthy(api_url, timeout, pid, log_path)
    except SentiflowError:
        processes.stop(pid, signal.SIGTERM, 10)
        state_file(settings).unlink(missing_ok=True)
        raise
    return info


def stop_server(settings: Settings, timeout: float = 30.0) -> ServerInfo | None:
    """Stop the managed server (SIGTERM, then SIGKILL of its group after ``timeout``); None if none ran."""
    payload = processes.read_state(state_file(settings)) or {}
    try:
        info: ServerInfo | None = ServerInfo(**payload) if payload else None
    except TypeError:
        info = None
    if info is not None:
        processes.stop(info.pid, signal.SIGTERM, timeout)
    state_file(settings).unlink(missing_ok=True)
    return info
