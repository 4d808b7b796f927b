"""A detached ``prefect worker`` for the ``sentiflow-local`` process pool, run through the one process helper
(``core.processes``).

The worker is started detached (its own session; SIGINT/SIGTERM at their default dispositions even when this
process was started as a shell's background job) with its output in ``<PREFECT_HOME>/worker.log``, and its record
(pid *and* the pid's create time) saved the moment it exists. It is stopped with SIGINT, which Prefect treats as a
graceful shutdown; after a grace period its process group is killed. Every signal is sent only after checking that
the recorded pid is still the same process.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core import processes
from core.config import Settings
from core.errors import SentiflowError
from core.io import atomic_write_json, read_json
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
    record: processes.ProcessRecord


def state_file(settings: Settings) -> Path:
    """Where the managed worker's process record, pool and log path are recorded."""
    return prefect_home(settings) / "sentiflow-worker.json"


def _save(settings: Settings, record: processes.ProcessRecord, name: str, pool: str, api_url: str) -> None:
    atomic_write_json(state_file(settings), {"name": name, "pool": pool, "api_url": api_url, **record.to_json()})


def _load(settings: Settings) -> WorkerInfo | None:
    try:
        payload = read_json(state_file(settings))
        record = processes.ProcessRecord.from_json(payload)
        return WorkerInfo(record.pid, payload["name"], payload["pool"], payload["api_url"], record.log_path, record)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_worker(settings: Settings) -> WorkerInfo | None:
    """The managed worker for this ``SENTIFLOW_HOME`` if its process (same pid and create time) is alive."""
    info = _load(settings)
    return info if info is not None and processes.alive(info.record) else None


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
    record = processes.start(
        command,
        log_path=log_path,
        env=env,
        cwd=prefect_home(settings),
        listen=False,
        health_path=None,
        name=f"the Prefect worker for pool {pool!r}",
        on_spawn=lambda started: _save(settings, started, name, pool, api_url),
    )
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline:
        if not processes.alive(record):
            state_file(settings).unlink(missing_ok=True)
            raise SentiflowError(
                f"the Prefect worker for pool {pool!r} exited at start; last lines of {log_path}: "
                + " | ".join(processes.log_tail(log_path, lines=8).splitlines())
            )
        time.sleep(0.25)
    return WorkerInfo(record.pid, name, pool, api_url, str(log_path), record)


def stop_worker(settings: Settings, timeout: float = 30.0) -> WorkerInfo | None:
    """Stop the managed worker gracefully (SIGINT), killing its process group after ``timeout``."""
    info = _load(settings)
    if info is not None:
        processes.stop(info.record, grace_s=timeout, first_signal=signal.SIGINT)
    state_file(settings).unlink(missing_ok=True)
    return info
