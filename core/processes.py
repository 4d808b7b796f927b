"""The one process helper: start a detached child server, wait until it is ready, know whether it lives, stop it.

Every long-running child the project starts (endpoint servers, the API gateway, the Prefect worker) goes through
:func:`start`:

* **detached** — its own session (a signal to the starting process group never reaches it, and it outlives the
  flow run that started it), stdin from ``/dev/null``, stdout and stderr appended to a log file, the given
  environment and working directory, and SIGINT/SIGTERM at their default dispositions (a shell's background job
  starts with SIGINT ignored, and an ignored signal survives ``exec``);
* **no port race, no log scraping** — with ``listen=True`` the parent binds and listens on ``host:port`` (port 0:
  the kernel picks a free one) and hands the socket to the child as an inherited file descriptor; the command
  names it with the :data:`FD` placeholder (uvicorn: ``--fd``). Connections made before the child accepts wait
  in the listen backlog instead of being refused;
* **ready means answering** — it returns once ``GET <url><health_path>`` answers 200; if the child exits first,
  :class:`SentiflowError` carries its exit code and the tail of its log; after ``timeout_s`` the child is stopped
  and the error says so.

The result is a :class:`ProcessRecord` (pid, the kernel's create time of that pid, port, URL, log path) that can
be saved as JSON and used from another process: :func:`alive` and :func:`stop` check the pid *and* its create
time before every signal, so a recycled pid is never signalled. :func:`stop` sends SIGTERM (the server drains),
waits ``grace_s``, then SIGKILLs the whole process group (workers included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from core.errors import SentiflowError
from core.io import atomic_write_json, read_json

FD = "{fd}"
"""Placeholder in a command for the number of the inherited listening socket (``["uvicorn", "--fd", FD, …]``)."""

DEFAULT_GRACE_S = 10.0
_CREATE_TIME_TOLERANCE_S = 0.05  # psutil derives it from clock ticks since boot: stable for one process
_POLL_S = 0.05
_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)


@dataclass(frozen=True)
class ProcessRecord:
    """A started child: enough to find it again (from any process) and to stop exactly it."""

    pid: int
    create_time: float  # psutil's create_time() of ``pid``: tells the process from a later one reusing the pid
    log_path: str
    port: int | None = None
    url: str | None = None
    command: tuple[str, ...] = ()
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["command"] = list(self.command)
        return payload

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> ProcessRecord:
        """The record saved by :meth:`to_json`; ValueError when ``payload`` is not one."""
        try:
            return cls(
                pid=int(payload["pid"]),
                create_time=float(payload["create_time"]),
                log_path=str(payload["log_path"]),
                port=None if payload.get("port") is None else int(payload["port"]),
                url=None if payload.get("url") is None else str(payload["url"]),
                command=tuple(str(part) for part in payload.get("command") or ()),
                started_at=str(payload.get("started_at") or ""),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a process record: {error}") from None

    def save(self, path: Path) -> None:
        """Write the record atomically (a reader never sees half of it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        """The record saved at ``path``; None when it is absent or is not a record."""
        try:
            return cls.from_json(read_json(path))
        except (OSError, ValueError, AttributeError):
            return None


# --- starting ------------------------------------------------------------------------------------------------


def listening_socket(host: str = "127.0.0.1", port: int = 0, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; SentiflowError naming the address when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a predecessor's TIME_WAIT does not block
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise SentiflowError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); choose another port (0 picks a free one)"
        ) from None
    return sock


def start(
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    listen: bool = True,
    host: str = "127.0.0.1",
    port: int = 0,
    health_path: str | None = "/ping",
    timeout_s: float = 60.0,
    name: str | None = None,
    on_spawn: Callable[[ProcessRecord], None] | None = None,
) -> ProcessRecord:
    """Start ``command`` detached and return its record once it is ready (see the module docstring).

    ``env`` is the child's whole environment (default: this process's). With ``listen`` the command must contain
    :data:`FD`; ``health_path`` (needs ``listen``) is polled until it answers 200 — without one the child counts as
    ready once started. ``name`` labels the child in messages (default: the command's first words). ``on_spawn``
    gets the record as soon as the child exists, before the readiness wait (to save it: a starter killed while
    waiting then leaves no unrecorded child).
    """
    label = name or " ".join(command[:3])
    if listen != (FD in command):
        raise ValueError(f"the command must contain processes.FD exactly when listen=True: {list(command)!r}")
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sock = listening_socket(host, port) if listen else None
    try:
        argv = [str(sock.fileno()) if part == FD else str(part) for part in command] if sock else list(command)
        bound_port = sock.getsockname()[1] if sock else None
        url = f"http://{_url_host(host)}:{bound_port}" if sock else None
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                argv,
                env=dict(os.environ if env is None else env),
                cwd=str(cwd) if cwd else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(sock.fileno(),) if sock else (),
                preexec_fn=_default_signals if _parent_ignores_signals() else None,
            )
    finally:
        if sock is not None:
            sock.close()  # the child holds its own copy
    try:
        create_time = psutil.Process(child.pid).create_time()
    except psutil.Error:
        create_time = 0.0  # it already exited: the readiness check below reports it
    record = ProcessRecord(child.pid, create_time, str(log_path), bound_port, url, tuple(argv))
    if on_spawn is not None:
        try:
            on_spawn(record)
        except BaseException:
            stop(record, grace_s=2.0)
            raise
    if health_path is not None and url is not None:
        try:
            _wait_ready(child, record, f"{url}{health_path}", timeout_s, label)
        except BaseException:  # not ready (or the starter was interrupted): no child is left behind
            stop(record, grace_s=2.0)
            raise
    elif child.poll() is not None:
        raise SentiflowError(f"{label} exited at once with code {child.returncode}; {_tail_note(log_path)}")
    return record


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _parent_ignores_signals() -> bool:
    return any(signal.getsignal(sig) == signal.SIG_IGN for sig in _DEFAULT_SIGNALS)


def _default_signals() -> None:
    """Runs in the child between fork and exec, only when this process ignores one of these signals (an ignored
    signal stays ignored across ``exec``; a handled one is reset anyway)."""
    for sig in _DEFAULT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _wait_ready(child: subprocess.Popen, record: ProcessRecord, health_url: str, timeout_s: float, label: str) -> None:
    deadline = time.monotonic() + timeout_s
    log_path = Path(record.log_path)
    with httpx.Client(trust_env=False) as client:  # loopback: never through a proxy from the environment
        while True:
            code = child.poll()
            if code is not None:
                raise SentiflowError(f"{label} exited while starting (code {code}); {_tail_note(log_path)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SentiflowError(
                    f"{label} did not answer GET {health_url} with 200 within {timeout_s:.0f} s and was stopped; "
                    f"{_tail_note(log_path)}"
                )
            try:
                if client.get(health_url, timeout=min(2.0, max(remaining, 0.1))).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not accepting yet (the connection waits in the backlog) or not ready
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))


# --- liveness and stopping -----------------------------------------------------------------------------------


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    """The live, non-zombie process ``pid`` if it is the one created at ``create_time``; reaps our own zombie."""
    if pid <= 0:
        return None
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # our own exited child: reap it, it is gone
        if done == pid:
            return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if abs(process.create_time() - create_time) >= _CREATE_TIME_TOLERANCE_S:
            return None  # the pid was reused by another process
        return process
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return None


def alive(record: ProcessRecord) -> bool:
    """True while the recorded process runs (same pid *and* create time, not a zombie)."""
    return _same_process(record.pid, record.create_time) is not None


def _signal_if_same(pid: int, create_time: float, sig: int, group: bool = False) -> bool:
    """Send ``sig`` to ``pid`` (or its process group) only if it is still the recorded process."""
    if _same_process(pid, create_time) is None:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)  # it leads its own session, so its group id is its pid
        else:
            os.kill(pid, sig)
    return True


def _wait_gone(pid: int, create_time: float, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _same_process(pid, create_time) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def stop(
    record: ProcessRecord | int,
    grace_s: float = DEFAULT_GRACE_S,
    legacy_timeout: float | None = None,
    *,
    first_signal: int = signal.SIGTERM,
) -> bool:
    """Stop the recorded process: ``first_signal`` (SIGTERM: drain and exit), wait up to ``grace_s``, then SIGKILL
    its process group; descendants left behind by a leader that exited are killed too (each checked by create
    time). True when it stopped on the first signal (or was not running), False when it had to be killed.

    ``stop(pid, first_signal, timeout)`` — a bare pid — is the older call sentiflow/ops still makes (see the end of
    this module); it goes once ops keeps records."""
    if not isinstance(record, ProcessRecord):
        signum = int(grace_s) if legacy_timeout is not None else first_signal
        return stop_pid(int(record), signum, DEFAULT_GRACE_S if legacy_timeout is None else legacy_timeout)
    leader = _same_process(record.pid, record.create_time)
    if leader is None:
        return True
    try:
        descendants = [(child.pid, child.create_time()) for child in leader.children(recursive=True)]
    except psutil.Error:
        descendants = []
    graceful = True
    if _signal_if_same(record.pid, record.create_time, first_signal):
        graceful = _wait_gone(record.pid, record.create_time, grace_s)
    if not graceful:
        _signal_if_same(record.pid, record.create_time, signal.SIGKILL, group=True)
        _wait_gone(record.pid, record.create_time, 10.0)
    for pid, create_time in descendants:  # workers orphaned by a leader that exited (or escaped the group)
        if _signal_if_same(pid, create_time, signal.SIGKILL):
            _wait_gone(pid, create_time, 5.0)
    return graceful


def resident_bytes(record: ProcessRecord) -> int:
    """Resident memory of the recorded process and its descendants, in bytes (0 when it is not running)."""
    leader = _same_process(record.pid, record.create_time)
    if leader is None:
        return 0
    total = 0
    try:
        processes = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        processes = [leader]
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


# --- logs ------------------------------------------------------------------------------------------------------


def log_tail(path: Path | str, lines: int = 30, max_chars: int = 4000) -> str:
    """The last ``lines`` lines of a text file (at most ``max_chars`` characters); "" if it is missing."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_chars * 2))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-max_chars:]


def _tail_note(log_path: Path) -> str:
    tail = log_tail(log_path, lines=15)
    return f"last lines of {log_path}:\n{tail}" if tail else f"its log {log_path} is empty"


# --- the pid-only calls sentiflow/ops makes today (engineer E moves it to the record API, then these go) --------


def spawn(command: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> int:
    """Start ``command`` detached without a socket or a readiness check; its pid. Prefer :func:`start`."""
    return start(command, log_path=log_path, env=env, cwd=cwd, listen=False, health_path=None).pid


def record_for(pid: int, log_path: Path | str = "") -> ProcessRecord | None:
    """A record for a running ``pid`` found some other way (its create time read now); None if it is gone."""
    try:
        return ProcessRecord(pid, psutil.Process(pid).create_time(), str(log_path))
    except (psutil.Error, ValueError):
        return None


def pid_alive(pid: int | None, started_at: float | None = None) -> bool:
    """True when ``pid`` runs (and, given ``started_at``, is the process created then). Prefer :func:`alive`."""
    if not pid:
        return False
    record = record_for(pid) if started_at is None else ProcessRecord(pid, started_at, "")
    return record is not None and alive(record)


def stop_pid(pid: int, first_signal: int, timeout: float) -> bool:
    """:func:`stop` for a bare pid (its create time read now). Prefer :func:`stop` with the saved record."""
    record = record_for(pid)
    return True if record is None else stop(record, timeout, first_signal=first_signal)


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
