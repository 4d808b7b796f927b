"""Local endpoints: each one is a detached ``sentiflow serve`` process on a free loopback port.

Life cycle of ``deploy(name, ...)``:

1. a registry row is written with status ``Creating``;
2. the model artifact is copied from the store into ``<home>/endpoints/<name>/`` (a plain path is used as is);
3. ``sentiflow serve --model … --port 0 --name NAME`` is started detached — in its own session, through a
   short-lived launcher so it is not a child of the flow process, output to
   ``<home>/endpoints/<name>/server.log`` — and survives the process that deployed it;
4. the port is read from the server's ``listening on http://127.0.0.1:PORT`` line (port 0: the OS picks a free
   one, so two deploys never race for a port), and the endpoint becomes ``InService`` once ``GET /ping``
   answers 200.

A server that exits or does not answer within ``start_timeout_s`` is killed, its row marked deleted, and a
:class:`SentiflowError` carries the tail of its log. ``delete`` drains: SIGTERM (the server finishes in-flight
requests), a bounded wait, then SIGKILL. Liveness is re-checked on every ``get``/``list``: a dead process
turns the endpoint ``Failed``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx
import psutil

from backends.base import EndpointInfo, LogLine, TeardownDecision
from backends.local.registry import EndpointRecord, Registry, parse_time, utc_now
from core.errors import SentiflowError
from core.io import local_path
from core.processes import pid_alive

if TYPE_CHECKING:
    from backends.base import ArtifactStore
    from core.config import Settings

BACKEND = "local"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
LISTENING = re.compile(r"listening on (http://[^\s/]+)")
SERVE_COMMAND: tuple[str, ...] = (sys.executable, "-c", "from sentiflow.cli import main; main()", "serve")

# Starts argv[2:] in a new session with stdio on the log file argv[1], prints its pid and exits, so the
# server is re-parented away from the deploying process (no zombie there, no signal from its process group).
_LAUNCHER = """
import subprocess, sys
with open(sys.argv[1], "ab", buffering=0) as log:
    proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True)
print(proc.pid, flush=True)
"""


def log_tail(path: Path, lines: int = 30, max_chars: int = 4000) -> str:
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


def process_rss(pid: int | None) -> int:
    """Resident memory in bytes of ``pid`` and its descendants (0 if it is gone)."""
    if not pid:
        return 0
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for item in procs:
        try:
            total += item.memory_info().rss
        except psutil.Error:
            continue
    return total


def _format_bytes(count: int) -> str:
    return f"{count / (1 << 20):.0f} MiB"


class LocalEndpointManager:
    """:class:`backends.base.EndpointManager` for the local backend, state in the endpoint registry."""

    def __init__(
        self,
        settings: Settings,
        store: ArtifactStore | None = None,
        *,
        serve_command: Sequence[str] | None = None,
        start_timeout_s: float = 60.0,
        drain_timeout_s: float = 30.0,
    ) -> None:
        """``serve_command`` is the argv prefix that ``--model M --port 0 --name N`` is appended to."""
        self.settings = settings
        self.store = store
        self.serve_command = tuple(serve_command or SERVE_COMMAND)
        self.start_timeout_s = start_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.registry = Registry.for_settings(settings)
        self.root = settings.home / "endpoints"

    # --- paths and helpers ----------------------------------------------------------------------------

    def endpoint_dir(self, name: str) -> Path:
        return self.root / name

    def log_path(self, name: str) -> Path:
        return self.endpoint_dir(name) / "server.log"

    def _resolve_model(self, name: str, model_uri: str) -> str:
        """A local path ``sentiflow serve`` can load: a copy of the store object, or the path itself."""
        path = local_path(model_uri)
        if path is not None:
            if path.exists():
                return str(path.resolve())
            raise SentiflowError(
                f"model artifact {model_uri!r} does not exist; pass a model.tar.gz, a model folder "
                "or a store URI from a training run"
            )
        if self.store is None:
            raise SentiflowError(f"cannot fetch {model_uri!r}: this endpoint manager has no artifact store")
        try:
            key = self.store.key_from_uri(model_uri)
            target = self.endpoint_dir(name) / "model" / (Path(key).name or "model.tar.gz")
            return str(self.store.get_file(key, target))
        except SentiflowError:
            raise
        except Exception as error:  # noqa: BLE001 - any store failure becomes a user-facing message
            raise SentiflowError(
                f"cannot fetch model artifact {model_uri!r} from the store: {error}; check the URI "
                "(see the training run's output) and SENTIFLOW_HOME"
            ) from error

    def _spawn(self, argv: Sequence[str], log_path: Path) -> tuple[int, float | None]:
        env = {**os.environ, "SENTIFLOW_HOME": str(self.settings.home), "PYTHONUNBUFFERED": "1"}
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(log_path), *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0 or not done.stdout.strip().isdigit():
            raise SentiflowError(
                f"could not start the endpoint server {' '.join(argv)!r}: {done.stderr.strip()[-2000:]}"
            )
        pid = int(done.stdout.strip())
        try:
            started_at: float | None = psutil.Process(pid).create_time()
        except psutil.Error:
            started_at = None
        return pid, started_at

    @staticmethod
    def _signal(pid: int, started_at: float | None, sig: signal.Signals) -> None:
        """Send ``sig`` to the server's process group (it leads its own session), or to the pid alone."""
        if not pid_alive(pid, started_at):
            return
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _stop(self, pid: int | None, started_at: float | None, drain_timeout_s: float) -> bool:
        """SIGTERM, wait up to ``drain_timeout_s`` for exit, then SIGKILL; True if it stopped gracefully."""
        if not pid_alive(pid, started_at):
            return True
        assert pid is not None
        self._signal(pid, started_at, signal.SIGTERM)
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid, started_at):
                return True
            time.sleep(0.1)
        self._signal(pid, started_at, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid, started_at) and time.monotonic() < deadline:
            time.sleep(0.05)
        return False

    @staticmethod
    def _ping(url: str) -> bool:
        try:
            return httpx.get(f"{url}/ping", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _info(self, record: EndpointRecord) -> EndpointInfo:
        return record.to_info(log=str(self.log_path(record.name)))

    def _refresh(self, record: EndpointRecord) -> EndpointRecord:
        """Turn an InService/Creating endpoint whose process died into Failed."""
        if record.status in ("InService", "Creating", "Deleting") and not pid_alive(record.pid, record.pid_started_at):
            if record.status == "Creating" and record.pid is None:
                return record  # still being launched
            return self.registry.update_endpoint(record.name, status="Failed")
        return record

    # --- EndpointManager ----------------------------------------------------------------------------

    def deploy(self, name: str, model_uri: str, version: int, log: LogLine) -> EndpointInfo:
        """Start endpoint ``name`` serving ``model_uri`` and return it once ``/ping`` answers (InService)."""
        if not NAME_PATTERN.match(name):
            raise SentiflowError(
                f"invalid endpoint name {name!r}: use 1-63 letters, digits and dashes, starting and ending "
                "with a letter or digit"
            )
        self.registry.add_endpoint(
            EndpointRecord(name=name, backend=BACKEND, model_uri=model_uri, version=version, status="Creating")
        )
        folder = self.endpoint_dir(name)
        pid: int | None = None
        started_at: float | None = None
        try:
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            model_path = self._resolve_model(name, model_uri)
            argv = [*self.serve_command, "--model", model_path, "--port", "0", "--name", name]
            log(f"starting endpoint {name} (model v{version}: {model_uri})")
            pid, started_at = self._spawn(argv, self.log_path(name))
            self.registry.update_endpoint(name, pid=pid, pid_started_at=started_at)
            url = self._wait_ready(name, pid, started_at)
        except BaseException as error:
            if pid is not None:
                self._stop(pid, started_at, drain_timeout_s=2.0)
            self.registry.update_endpoint(name, status="Failed", deleted_at=utc_now())
            shutil.rmtree(folder / "model", ignore_errors=True)
            if isinstance(error, SentiflowError | KeyboardInterrupt):
                raise
            raise SentiflowError(f"endpoint {name} failed to start: {error}") from error
        port = urlparse(url).port
        record = self.registry.update_endpoint(name, status="InService", url=url, port=port)
        log(f"endpoint {name} is InService at {url} (pid {pid})")
        return self._info(record)

    def _wait_ready(self, name: str, pid: int, started_at: float | None) -> str:
        log_file = self.log_path(name)
        deadline = time.monotonic() + self.start_timeout_s
        url: str | None = None
        while True:
            if not pid_alive(pid, started_at):
                raise SentiflowError(
                    f"endpoint {name} exited while starting; last lines of {log_file}:\n{log_tail(log_file)}"
                )
            if url is None:
                try:
                    match = LISTENING.search(log_file.read_text(encoding="utf-8", errors="replace"))
                except OSError:
                    match = None
                url = match.group(1) if match else None
            if url is not None and self._ping(url):
                return url
            if time.monotonic() > deadline:
                what = "did not answer GET /ping" if url else "did not report its port"
                raise SentiflowError(
                    f"endpoint {name} {what} within {self.start_timeout_s:.0f} s; it was stopped. "
                    f"Last lines of {log_file}:\n{log_tail(log_file)}"
                )
            time.sleep(0.2)

    def delete(self, name: str, drain_timeout_s: float | None = None) -> None:
        """Drain and stop endpoint ``name`` (SIGTERM → wait → SIGKILL) and mark it deleted."""
        record = self.registry.get_endpoint(name)
        if record is None or record.backend != BACKEND:
            raise SentiflowError(f"no local endpoint named {name!r}; see `sentiflow endpoints list`")
        self.registry.update_endpoint(name, status="Deleting")
        timeout = self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self._stop(record.pid, record.pid_started_at, timeout)
        self.registry.mark_deleted(name)
        shutil.rmtree(self.endpoint_dir(name) / "model", ignore_errors=True)

    def list(self) -> list[EndpointInfo]:
        """Live (not deleted) local endpoints, liveness refreshed."""
        return [self._info(self._refresh(r)) for r in self.registry.list_endpoints(backend=BACKEND)]

    def get(self, name: str) -> EndpointInfo | None:
        record = self.registry.get_endpoint(name)
        if record is None or record.backend != BACKEND:
            return None
        return self._info(self._refresh(record))

    def invoke(self, name: str, body: bytes, content_type: str, accept: str = "application/json") -> bytes:
        """POST ``body`` to the endpoint's ``/invocations`` and return the response body."""
        info = self.get(name)
        if info is None or info.status != "InService" or not info.url:
            state = "does not exist" if info is None else f"is {info.status}"
            raise SentiflowError(f"endpoint {name!r} {state}; see `sentiflow endpoints list`")
        try:
            response = httpx.post(
                f"{info.url}/invocations",
                content=body,
                headers={"Content-Type": content_type, "Accept": accept},
                timeout=60.0,
            )
        except httpx.HTTPError as error:
            raise SentiflowError(f"endpoint {name} at {info.url} did not answer: {error}") from error
        if response.status_code >= 400:
            raise SentiflowError(f"endpoint {name} answered HTTP {response.status_code}: {response.text[:500]}")
        self.registry.touch_invoked(name)
        return response.content

    def stats(self, name: str) -> dict[str, Any] | None:
        """The server's ``GET /stats`` JSON, or None if it does not answer."""
        record = self.registry.get_endpoint(name)
        if record is None or not record.url:
            return None
        try:
            response = httpx.get(f"{record.url}/stats", timeout=3.0)
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, json.JSONDecodeError, ValueError):
            return None

    def teardown_candidates(self, idle_minutes: float, max_age_hours: float | None) -> list[TeardownDecision]:
        """Endpoints idle for ``idle_minutes`` (last call, else creation) or older than ``max_age_hours``.

        ``saved`` names the process and its resident memory; ``endpoint.extra`` carries ``rss_bytes`` and
        ``processes`` for totals.
        """
        now = datetime.now(UTC)
        decisions: list[TeardownDecision] = []
        for record in self.registry.list_endpoints(backend=BACKEND):
            record = self._refresh(record)
            if record.status in ("Creating", "Deleting"):
                continue
            stats = self.stats(record.name) if record.status == "InService" else None
            if stats and stats.get("last_invoked_at") is not None:
                self.registry.touch_invoked(record.name, _stats_time(stats["last_invoked_at"]))
                record = self.registry.get_endpoint(record.name) or record
            created = parse_time(record.created_at) or now
            last = parse_time(record.last_invoked_at) or created
            age_hours = max(0.0, (now - created).total_seconds() / 3600)
            idle = max(0.0, (now - last).total_seconds() / 60)
            if max_age_hours is not None and age_hours >= max_age_hours:
                reason = "max-age"
            elif idle >= idle_minutes:
                reason = "idle"
            else:
                continue
            alive = pid_alive(record.pid, record.pid_started_at)
            rss = process_rss(record.pid) if alive else 0
            saved = f"1 process (pid {record.pid}), {_format_bytes(rss)} RSS" if alive else "no process (already dead)"
            info = record.to_info(log=str(self.log_path(record.name)), rss_bytes=rss, processes=1 if alive else 0)
            decisions.append(
                TeardownDecision(
                    endpoint=info,
                    reason=reason,
                    idle_minutes=round(idle, 2),
                    age_hours=round(age_hours, 4),
                    saved=saved,
                )
            )
        return decisions


def _stats_time(value: Any) -> str | None:
    parsed = parse_time(value)
    return parsed.isoformat() if parsed else None
