"""The managed local Prefect server of a ``SENTIFLOW_HOME``, run with Prefect's own commands.

- Start: ``prefect server start --background``; wait: ``prefect server status --wait``; stop: ``prefect server
  stop`` (then a bounded wait for the process to exit, and SIGKILL if it does not). Prefect keeps the server's pid
  in ``<PREFECT_HOME>/server.pid``; sentiflow records its URL, pid, the pid's start time and the log file in
  ``<PREFECT_HOME>/sentiflow-server.json``.
- ``PREFECT_HOME`` is ``<SENTIFLOW_HOME>/prefect`` (absolute: a relative one resolves per process and the
  worker's flow runs change directory). The default database is SQLite there; set
  ``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://...`` before starting for concurrent use.
- A background server's stdout and stderr are pipes that only the starting command reads, and it exits at once:
  the first line the server wrote there would kill it (``BrokenPipeError``). So its logging is pointed at
  ``<PREFECT_HOME>/server.log`` with Prefect's own logging settings (``PREFECT_LOGGING_SETTINGS_PATH``, for the
  Prefect loggers and the root logger) and uvicorn's (``UVICORN_LOG_CONFIG``, for uvicorn's); nothing is written
  to the pipes.
- The port is passed through ``PREFECT_SERVER_API_PORT``/``PREFECT_API_URL``/``PREFECT_UI_API_URL``, not
  ``--port`` alone: the UI's own API calls would otherwise go to 4200.
- Telemetry is off (``PREFECT_SERVER_ANALYTICS_ENABLED=false``, ``DO_NOT_TRACK=1``): nothing leaves the host.

:func:`ensure_server` is what a CLI command that runs a flow calls when no Prefect API is configured: it reuses the
running server (a health check, no subprocess) or starts one, on ``SENTIFLOW_PREFECT_PORT`` if that is free.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from core import processes
from core.config import Settings
from core.errors import ConfigError, SentiflowError
from core.io import atomic_write_json, atomic_write_text, read_json

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
PID_FILE = "server.pid"  # Prefect's own (prefect.cli._server_utils.SERVER_PID_FILE_NAME)
COMMAND_TIMEOUT_S = 120

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
    pid_started_at: float | None = None


def prefect_home(settings: Settings) -> Path:
    """``PREFECT_HOME`` for everything sentiflow starts: ``<SENTIFLOW_HOME>/prefect`` (absolute)."""
    return (settings.home / "prefect").resolve()


def state_file(settings: Settings) -> Path:
    """Where the managed server's URL, pid and log path are recorded."""
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
    home = prefect_home(settings)
    return {
        **client_env(settings, api_url),
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": api_url,
        # Prefect's default is "*": any web page the user opens could drive the API from the browser. The UI is
        # served from this origin, so nothing else needs it (export the variable to widen it on purpose).
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": os.environ.get(
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS", api_url.removesuffix("/api")
        ),
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_LOGGING_SETTINGS_PATH": str(home / "server-logging.yml"),
        "UVICORN_LOG_CONFIG": str(home / "server-uvicorn-logging.json"),
    }


def write_logging_configs(settings: Settings, log_path: Path) -> None:
    """Prefect's default logging settings with every console handler replaced by ``log_path``, and the same for
    uvicorn: what the background server logs goes to the file, never to its unread pipes."""
    import importlib.util

    import yaml

    # Found, not imported: importing Prefect here would fix its settings before the caller exported the API URL.
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None
    home = prefect_home(settings)
    default = Path(spec.origin).parent / "logging" / "logging.yml"
    config = yaml.safe_load(default.read_text(encoding="utf-8"))
    to_file = {"level": 0, "class": "logging.FileHandler", "filename": str(log_path), "encoding": "utf-8"}
    config["handlers"]["console"] = {**to_file, "formatter": "standard"}
    config["handlers"]["debug"] = {**to_file, "formatter": "debug"}
    atomic_write_text(home / "server-logging.yml", yaml.safe_dump(config, sort_keys=False))
    uvicorn = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"}},
        "handlers": {"file": {**to_file, "formatter": "plain"}},
        "loggers": {
            "uvicorn": {"handlers": ["file"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["file"], "level": "WARNING", "propagate": False},
        },
    }
    atomic_write_json(home / "server-uvicorn-logging.json", uvicorn)


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when ``GET <api>/health`` answers 200."""
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (as ``prefect server start`` checks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _record(info: ServerInfo) -> processes.ProcessRecord:
    return processes.ProcessRecord(info.pid, info.pid_started_at or 0.0, info.log_path)


def read_server(settings: Settings) -> ServerInfo | None:
    """The managed server recorded under ``SENTIFLOW_HOME`` if its process (the same one: pid and start time)
    still runs."""
    try:
        info = ServerInfo(**read_json(state_file(settings)))
    except (OSError, ValueError, TypeError):
        return None
    return info if info.pid_started_at is not None and processes.alive(_record(info)) else None


def running_server(settings: Settings) -> ServerInfo | None:
    """The managed server if it runs and answers its health check."""
    info = read_server(settings)
    return info if info is not None and is_healthy(info.api_url) else None


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


def log_tail(path: Path | str, lines: int = 12) -> str:
    """The last ``lines`` lines of a log file on one line (for an error message)."""
    tail = [line.strip() for line in processes.log_tail(path, lines=lines).splitlines() if line.strip()]
    return " | ".join(tail) or f"(no log lines in {path})"


def run_prefect(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``prefect ARGS`` with ``env`` added to this environment, output captured; one line if it runs too long."""
    try:
        return subprocess.run(
            [prefect_executable(), *args],
            env={**os.environ, **env},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise SentiflowError(f"`prefect {' '.join(args)}` did not finish within {timeout:.0f} s") from error


def start_server(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ui: bool = True,
    timeout: float = 120.0,
) -> ServerInfo:
    """Start the managed server with ``prefect server start --background`` (or return the running one) and wait
    for it with ``prefect server status --wait``.

    Idempotent: when the managed server for this ``SENTIFLOW_HOME`` already runs on the same address it is returned
    as is. SentiflowError (one line, with the log's last lines) if the port is taken or start-up fails.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"Prefect server port {port} is out of range; pass --port 1..65535")
    api_url = api_url_for(host, port)
    running = read_server(settings)
    if running is not None:
        if running.api_url != api_url:
            raise SentiflowError(
                f"a Prefect server for {settings.home} already runs at {running.api_url} (pid {running.pid}); "
                "stop it first with `sentiflow prefect down`"
            )
        _wait(settings, running, timeout)
        return running
    if not port_is_free(host, port):
        raise SentiflowError(
            f"port {port} on {host} is taken by another program (or another project's Prefect server); "
            "pick another with --port or SENTIFLOW_PREFECT_PORT"
        )
    home = prefect_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    (home / PID_FILE).unlink(missing_ok=True)  # a stale one (its server is gone) would make Prefect refuse
    log_path = home / "server.log"
    write_logging_configs(settings, log_path)
    env = server_env(settings, host, port, ui)
    args = ["server", "start", "--background", "--host", host, "--port", str(port)]
    started = run_prefect([*args, *([] if ui else ["--no-ui"])], env, home, COMMAND_TIMEOUT_S)
    pid_text = (home / PID_FILE).read_text().strip() if (home / PID_FILE).is_file() else ""
    if started.returncode != 0 or not pid_text.isdigit():
        output = " | ".join(line.strip() for line in (started.stdout + started.stderr).splitlines() if line.strip())
        raise SentiflowError(f"`prefect server start --background` failed (exit {started.returncode}): {output[-800:]}")
    record = processes.record_for(int(pid_text), log_path)
    if record is None:
        raise SentiflowError(
            f"the Prefect server started by `prefect server start --background` exited at once; last lines of "
            f"{log_path}: {log_tail(log_path)}"
        )
    info = ServerInfo(
        pid=record.pid,
        host=host,
        port=port,
        api_url=api_url,
        ui_url=ui_url_for(api_url),
        prefect_home=str(home),
        log_path=str(log_path),
        pid_started_at=record.create_time,
    )
    atomic_write_json(state_file(settings), asdict(info))
    try:
        _wait(settings, info, timeout)
    except SentiflowError:
        stop_server(settings, timeout=10)
        raise
    return info


def _wait(settings: Settings, info: ServerInfo, timeout: float) -> None:
    """``prefect server status --wait``; SentiflowError naming the log when the server does not come up."""
    if is_healthy(info.api_url, timeout=1.0):
        return
    env = {**client_env(settings, info.api_url)}
    done = run_prefect(
        ["server", "status", "--wait", "--timeout", str(max(1, int(timeout)))],
        env,
        Path(info.prefect_home),
        timeout + 30,
    )
    if done.returncode != 0:
        state = "is running but" if processes.alive(_record(info)) else "exited and"
        raise SentiflowError(
            f"the Prefect server at {info.api_url} {state} did not become healthy within {timeout:.0f} s; "
            f"last lines of {info.log_path}: {log_tail(info.log_path)}"
        )


def ensure_server(settings: Settings, announce: Callable[[str], None], timeout: float = 180.0) -> ServerInfo:
    """The managed server of this ``SENTIFLOW_HOME``: reused when it runs (one health check), else started —
    on ``settings.prefect_port``, or on a free port when another program holds that one."""
    running = running_server(settings)
    if running is not None:
        return running
    stale = read_server(settings)
    if stale is not None:  # its process runs but does not answer: start afresh
        stop_server(settings, timeout=15)
    port = settings.prefect_port
    if not port_is_free(DEFAULT_HOST, port):
        port = free_port()
        announce(f"port {settings.prefect_port} is taken; the Prefect server of this SENTIFLOW_HOME uses {port}")
    announce(f"starting the Prefect server of {settings.home} (UI {ui_url_for(api_url_for(DEFAULT_HOST, port))}) …")
    return start_server(settings, DEFAULT_HOST, port, ui=True, timeout=timeout)


def stop_server(settings: Settings, timeout: float = 30.0) -> ServerInfo | None:
    """``prefect server stop``, then wait up to ``timeout`` s for the process to exit (then SIGKILL its group; each
    signal only after checking the pid is still that server); None when no managed server ran."""
    info = read_server(settings)
    home = prefect_home(settings)
    if (home / PID_FILE).exists():
        run_prefect(["server", "stop"], {"PREFECT_HOME": str(home), **QUIET_ENV}, home, COMMAND_TIMEOUT_S)
    if info is not None:  # `prefect server stop` does not wait; SIGTERM again, wait, then kill its group
        processes.stop(_record(info), grace_s=timeout)
    (home / PID_FILE).unlink(missing_ok=True)
    state_file(settings).unlink(missing_ok=True)
    return info


def describe(info: ServerInfo) -> str:
    """One line for the user: where the UI is."""
    return f"Prefect UI {info.ui_url} (API {info.api_url}; server log {info.log_path})"
