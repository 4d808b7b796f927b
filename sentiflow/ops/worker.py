"""A detached ``prefect worker`` for the ``sentiflow-local`` process pool.

The worker is started with SIGINT/SIGTERM restored to their defaults (a worker launched with ``&`` from a
script inherits SIGINT *ignored* and would not stop on the first signal) and stopped with SIGINT, which
Prefect
treats as a graceful shutdown; after a grace period its process group is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from core import processes
from core.config import Settings
from core.errors import SentiflowError
from sentiflow.ops import WORK_POOL
from sentiflow.ops.server import client_env, prefect_executable, prefect_home, resolve_api_url


@dataclass(frozen=True)
class WorkerInfo:
    """A running (or just stopped) sentiflow-managed worker."""

    pid: int
    name: str
    pool: str
    api_url: str
    log_path: str


def state_file(settings: Settings) -> Path:
    """Where the managed worker's pid, pool and log path are recorded."""
    return prefect_home(settings) / "sentiflow-worker.json"


def read_worker(settings: Settings) -> WorkerInfo | None:
    """The managed worker for this ``SENTIFLOW_HOME`` if its process is alive."""
    payload = processes.read_state(state_file(settings))
    if not payload:
        return None
    try:
        info = WorkerInfo(**payload)
    except TypeError:
        return None
    return info if processes.pid_alive(info.pid) else None


def start_worker(
    settings: Settings,
    pool: str = WORK_POOL,
    api_url: str | None = None,
    name: str | None = None,
    limit: int | None = None,
    startup_seconds: float = 3.0,
    extra_env: Mapping[str, str] | None = None,
) -> WorkerInfo:
    """Start ``prefect worker start --pool <pool>`` detached, or return the running managed worker.

    The worker (and so every flow run it starts) inherits this process's environment plus ``extra_env``.
    ``startup_seconds`` is how long to watch the new process for an immediate exit (bad URL, missing pool).
    """
    running = read_worker(settings)
    if running is not None:
        return running
    api_url = api_url or resolve_api_url(settings)
    name = name or f"sentiflow-{socket.gethostname()}-{os.getpid()}"
    log_path = prefect_home(settings) / "worker.log"
    command = [prefect_executable(), "worker", "start", "--pool", pool, "--type", "process", "--name", name]
    if limit is not None:
        command += ["--limit", str(limit)]
    env = {**os.environ, **(extra_env or {}), **client_env(settings, api_url)}
    pid = processes.spawn(command, env, log_path, cwd=prefect_home(settings))
    info = WorkerInfo(pid=pid, name=name, pool=pool, api_url=api_url, log_path=str(log_path))
    processes.write_state(state_file(settings), asdict(info))
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline:
        if not processes.pid_alive(pid):
            state_file(settings).unlink(missing_ok=True)
            raise SentiflowError(f"the Prefect worker for pool {pool!r} exited at start; see {log_path}")
        time.sleep(0.25)
    return info


def stop_worker(settings: Settings, timeout: float = 30.0) -> WorkerInfo | None:
    """Stop the managed worker gracefully (SIGINT), killing its process group after ``timeout``."""
    payload = processes.read_state(state_file(settings)) or {}
    try:
        info: WorkerInfo | None = WorkerInfo(**payload) if payload else None
    except TypeError:
        info = None
    if info is not None:
        processes.stop(info.pid, signal.SIGINT, timeout)
    state_file(settings).unlink(missing_ok=True)
    return info
