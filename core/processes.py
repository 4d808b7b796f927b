"""Detached child processes with pid files: start, liveness, graceful stop with a hard fallback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from core.io import atomic_write_json, read_json


def _restore_default_signals() -> None:
    """``preexec_fn``: undo the SIGINT/SIGTERM *ignore* a non-interactive shell gives ``&`` jobs.

    Prefect stops workers on SIGINT; a worker that inherited ``SIG_IGN`` for SIGINT would keep polling.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def spawn(command: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> int:
    """Start ``command`` detached (own session, default signal handlers), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_restore_default_signals,
        )
    return process.pid


def pid_alive(pid: int | None, started_at: float | None = None) -> bool:
    """True when ``pid`` runs and is not a zombie — and, given ``started_at`` (its creation time, as psutil reports
    it), is still the process started then rather than a later one that reused the pid."""
    if not pid or pid <= 0:
        return False
    # Reap it if it is our own exited child, so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_at is None or abs(process.create_time() - started_at) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def wait_exit(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` has exited; True if it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    return not pid_alive(pid)


def stop(pid: int, first_signal: int, timeout: float) -> bool:
    """Send ``first_signal`` to ``pid``; after ``timeout`` s SIGKILL its whole process group.

    Returns True when the process stopped on the graceful signal, False when it had to be killed.
    """
    if not pid_alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first_signal)
    if wait_exit(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_exit(pid, 10)
    return False


def write_state(path: Path, payload: dict[str, Any]) -> None:
    """Write a pid/state file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, payload)


def read_state(path: Path) -> dict[str, Any] | None:
    """The state file's content, or None when it is absent or unreadable."""
    try:
        payload = read_json(path)
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None
