"""Local endpoints: each one is an endpoint server process (``python -m serve.endpoint``) on a free loopback port.

Life cycle of ``deploy(name, ...)``, like ``CreateEndpoint``:

1. a registry row is written with status ``Creating``;
2. the model artifact is unpacked into ``<home>/endpoints/<name>/model/`` (the container's ``/opt/ml/model``);
3. the server is started through :mod:`core.processes` — detached in its own session (it outlives the flow run that
   deployed it), on a socket the helper bound (no port race), its log in ``<home>/endpoints/<name>/server.log`` —
   and its pid and create time land in the registry at once;
4. it is ``InService`` once ``GET /ping`` answers 200 (the model is loaded).

A server that exits or does not answer within ``start_timeout_s`` is stopped, its row marked deleted, and a
:class:`SentiflowError` carries the tail of its log. ``delete`` drains: SIGTERM (the server finishes in-flight
requests), a bounded wait, then SIGKILL of its process group. Liveness (pid *and* create time) is re-checked on every
``get``/``list``: a dead process turns the endpoint ``Failed``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from backends.base import EndpointInfo, LogLine, TeardownDecision
from backends.local.registry import EndpointRecord, Registry, parse_time, utc_now
from core import processes
from core.errors import SentiflowError
from core.io import local_path
from core.processes import ProcessRecord

if TYPE_CHECKING:
    from backends.base import ArtifactStore
    from core.config import Settings

BACKEND = "local"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ENDPOINT_MODULE = "serve.endpoint"
MODEL_WEIGHTS = "model.pth"


def endpoint_command(
    model_dir: Path,
    *,
    name: str,
    state_dir: Path,
    access_log: Path | str = "-",
    extra: tuple[str, ...] = (),
    module: str | None = None,
) -> list[str]:
    """The endpoint server's command on the helper's inherited socket (the shared contract of ``serve.endpoint``)."""
    command = [sys.executable, "-m", module or ENDPOINT_MODULE, str(model_dir), "--fd", processes.FD, "--name", name]
    return [*command, "--state-dir", str(state_dir), "--access-log", str(access_log), *extra]


def start_endpoint_server(
    settings: Settings,
    model_dir: Path,
    folder: Path,
    name: str,
    *,
    timeout_s: float = 60.0,
    extra: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    module: str | None = None,
    on_spawn: Callable[[ProcessRecord], None] | None = None,
) -> ProcessRecord:
    """Start an endpoint server for ``model_dir`` (state and logs under ``folder``); its record once ``/ping`` is 200.

    The one way the local backend starts a model server: deploys and batch transforms alike. ``env`` adds to the
    model's environment (a transform job's ``Environment``)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = endpoint_command(
        model_dir, name=name, state_dir=folder, access_log=folder / "access.log", extra=extra, module=module
    )
    environment = {**os.environ, "SENTIFLOW_HOME": str(settings.home), "PYTHONUNBUFFERED": "1", **(env or {})}
    return processes.start(
        command,
        log_path=folder / "server.log",
        env=environment,
        cwd=folder,
        host=settings.serve_host,
        port=0,
        health_path="/ping",
        timeout_s=timeout_s,
        name=f"endpoint {name}",
        on_spawn=on_spawn,
    )


def unpack_model_into(artifact: Path, target: Path) -> Path:
    """``target`` holding the model of ``artifact`` (a model folder is used as it is; a ``.tar.gz`` is unpacked)."""
    from model.artifact import ArtifactError, unpack_model

    if artifact.is_dir():
        if not (artifact / MODEL_WEIGHTS).is_file():
            raise SentiflowError(f"model folder {artifact} holds no {MODEL_WEIGHTS}; pass a trained model folder")
        return artifact
    try:
        return unpack_model(artifact, target)
    except ArtifactError as error:
        raise SentiflowError(f"model {artifact} cannot be served: {error}") from None


class LocalEndpointManager:
    """:class:`backends.base.EndpointManager` for the local backend, state in the endpoint registry."""

    def __init__(
        self,
        settings: Settings,
        store: ArtifactStore | None = None,
        *,
        start_timeout_s: float = 60.0,
        drain_timeout_s: float = 30.0,
        server_module: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.start_timeout_s = start_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.server_module = server_module
        self.registry = Registry.for_settings(settings)
        self.root = settings.home / "endpoints"

    # --- paths and helpers ----------------------------------------------------------------------------

    def endpoint_dir(self, name: str) -> Path:
        return self.root / name

    def log_path(self, name: str) -> Path:
        return self.endpoint_dir(name) / "server.log"

    def _process(self, record: EndpointRecord) -> ProcessRecord | None:
        if record.pid is None or record.pid_started_at is None:
            return None
        return ProcessRecord(
            record.pid, record.pid_started_at, str(self.log_path(record.name)), record.port, record.url
        )

    def _alive(self, record: EndpointRecord) -> bool:
        process = self._process(record)
        return process is not None and processes.alive(process)

    def _model_dir(self, name: str, model_uri: str) -> Path:
        """The unpacked model for ``model_uri`` (a path, ``file://`` URI or store URI) under the endpoint's folder."""
        target = self.endpoint_dir(name) / "model"
        path = local_path(model_uri)
        if path is not None:
            if not path.exists():
                raise SentiflowError(
                    f"model artifact {model_uri!r} does not exist; pass a model.tar.gz, a model folder "
                    "or a store URI from a training run"
                )
            return unpack_model_into(path.resolve(), target)
        if self.store is None:
            raise SentiflowError(f"cannot fetch {model_uri!r}: this endpoint manager has no artifact store")
        try:
            key = self.store.key_from_uri(model_uri)
            tar_path = self.store.get_file(key, self.endpoint_dir(name) / "model.tar.gz")
        except SentiflowError:
            raise
        except Exception as error:  # noqa: BLE001 - any store failure becomes a user-facing message
            raise SentiflowError(
                f"cannot fetch model artifact {model_uri!r} from the store: {error}; check the URI "
                "(see the training run's output) and SENTIFLOW_HOME"
            ) from error
        try:
            return unpack_model_into(tar_path, target)
        finally:
            tar_path.unlink(missing_ok=True)

    def _info(self, record: EndpointRecord) -> EndpointInfo:
        return record.to_info(log=str(self.log_path(record.name)))

    def _refresh(self, record: EndpointRecord) -> EndpointRecord:
        """Turn an InService/Creating/Deleting endpoint whose process died into Failed."""
        if record.status in ("InService", "Creating", "Deleting") and not self._alive(record):
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

        def remember(process: ProcessRecord) -> None:
            self.registry.update_endpoint(
                name, pid=process.pid, pid_started_at=process.create_time, port=process.port, url=process.url
            )

        try:
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            model_dir = self._model_dir(name, model_uri)
            log(f"starting endpoint {name} (model v{version}: {model_uri})")
            process = start_endpoint_server(
                self.settings,
                model_dir,
                folder,
                name,
                timeout_s=self.start_timeout_s,
                module=self.server_module,
                on_spawn=remember,
            )
        except BaseException as error:
            self.registry.update_endpoint(name, status="Failed", deleted_at=utc_now())
            shutil.rmtree(folder / "model", ignore_errors=True)
            if isinstance(error, SentiflowError | KeyboardInterrupt):
                raise
            raise SentiflowError(f"endpoint {name} failed to start: {error}") from error
        record = self.registry.update_endpoint(name, status="InService")
        log(f"endpoint {name} is InService at {process.url} (pid {process.pid})")
        return self._info(record)

    def delete(self, name: str, drain_timeout_s: float | None = None) -> None:
        """Drain and stop endpoint ``name`` (SIGTERM → wait → SIGKILL) and mark it deleted."""
        record = self.registry.get_endpoint(name)
        if record is None or record.backend != BACKEND:
            raise SentiflowError(f"no local endpoint named {name!r}; see `sentiflow endpoints list`")
        self.registry.update_endpoint(name, status="Deleting")
        process = self._process(record)
        if process is not None:
            processes.stop(process, self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s)
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
                trust_env=False,
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
            response = httpx.get(f"{record.url}/stats", timeout=3.0, trust_env=False)
            payload = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return payload if isinstance(payload, dict) else None

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
            process = self._process(record)
            rss = processes.resident_bytes(process) if process is not None else 0
            alive = process is not None and processes.alive(process)
            saved = (
                f"1 process (pid {record.pid}), {rss / (1 << 20):.0f} MiB RSS" if alive else "no process (already dead)"
            )
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
