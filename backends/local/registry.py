"""The endpoint registry: which endpoints exist, what they serve, and which model versions were promoted.

One SQLite file, ``<settings.state_dir>/endpoints.db`` (stdlib :mod:`sqlite3`, WAL journal). Every call
opens a short-lived connection and a short transaction (writes take ``BEGIN IMMEDIATE``), so the flow process,
the CLI and a Prefect worker can use it at the same time.

Two tables:

* ``endpoints`` — one row per endpoint name: backend, model URI and version, status, port, pid, URL, instance
  type, created / last invoked / deleted timestamps. A deleted endpoint keeps its row (``deleted_at`` set)
  until the name is reused.
* ``models`` — the local side of the model registry seam (:class:`LocalModelRegistry`, the twin of SageMaker
  Model Registry): every evaluated or deployed model gets a version (``INTEGER PRIMARY KEY AUTOINCREMENT``), an
  approval status (``PendingManualApproval`` → ``Approved`` when promoted, ``Rejected`` by the gate, a reviewer
  or a failed parity check), its evaluation report URI and tags; the row is stamped ``promoted_at`` when the
  API switches to it. ``sentiflow rollback`` redeploys the previously promoted, approved one.

Timestamps are ISO-8601 strings in UTC (``2025-01-31T12:00:00.123456+00:00``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.base import APPROVAL_STATUSES, APPROVED, PENDING, REJECTED, EndpointInfo, RegisteredModel
from core.errors import SentiflowError

if TYPE_CHECKING:
    from core.config import Settings

DB_NAME = "endpoints.db"
DELETED = "Deleted"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    name            TEXT PRIMARY KEY,
    backend         TEXT NOT NULL,
    model_uri       TEXT NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT NOT NULL,
    port            INTEGER,
    pid             INTEGER,
    pid_started_at  REAL,
    url             TEXT,
    instance_type   TEXT,
    created_at      TEXT NOT NULL,
    last_invoked_at TEXT,
    deleted_at      TEXT
);
CREATE TABLE IF NOT EXISTS models (
    version       INTEGER PRIMARY KEY AUTOINCREMENT,
    model_uri     TEXT NOT NULL UNIQUE,
    accuracy      REAL,
    registered_at TEXT NOT NULL,
    promoted_at   TEXT,
    promoted_seq  INTEGER,
    status        TEXT NOT NULL DEFAULT 'PendingManualApproval',
    metrics_uri   TEXT,
    tags          TEXT NOT NULL DEFAULT '{}',
    reason        TEXT
);
"""

_ADDED_MODEL_COLUMNS = {  # columns newer than the first schema: added to an older endpoints.db on open
    "status": "TEXT NOT NULL DEFAULT 'PendingManualApproval'",
    "metrics_uri": "TEXT",
    "tags": "TEXT NOT NULL DEFAULT '{}'",
    "reason": "TEXT",
}

_ENDPOINT_COLUMNS = (
    "name",
    "backend",
    "model_uri",
    "version",
    "status",
    "port",
    "pid",
    "pid_started_at",
    "url",
    "instance_type",
    "created_at",
    "last_invoked_at",
    "deleted_at",
)


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string (the registry's timestamp format)."""
    return datetime.now(UTC).isoformat()


def parse_time(value: str | float | int | None) -> datetime | None:
    """An aware UTC datetime from an ISO-8601 string or epoch seconds; None for None or unparsable input."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class EndpointRecord:
    """One row of the ``endpoints`` table."""

    name: str
    backend: str
    model_uri: str
    version: int
    status: str
    created_at: str = field(default_factory=utc_now)
    port: int | None = None
    pid: int | None = None
    pid_started_at: float | None = None  # psutil create_time of pid: guards against pid reuse
    url: str | None = None
    instance_type: str | None = None
    last_invoked_at: str | None = None
    deleted_at: str | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_info(self, **extra: Any) -> EndpointInfo:
        """The backend-neutral :class:`backends.base.EndpointInfo` view of this row."""
        details: dict[str, Any] = {"backend": self.backend, "port": self.port, "pid": self.pid}
        details.update(extra)
        return EndpointInfo(
            name=self.name,
            model_uri=self.model_uri,
            version=self.version,
            status=self.status,
            url=self.url,
            created_at=self.created_at,
            last_invoked_at=self.last_invoked_at,
            instance_type=self.instance_type,
            extra=details,
        )


@dataclass(frozen=True)
class ModelVersion:
    """One row of the ``models`` table: a model that was deployed, and when the API last switched to it."""

    version: int
    model_uri: str
    accuracy: float | None
    registered_at: str
    promoted_at: str | None = None
    promoted_seq: int | None = None
    status: str = PENDING
    metrics_uri: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    """Typed access to ``endpoints.db``. Cheap to construct; holds no open connection between calls."""

    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._ready = False

    @classmethod
    def for_settings(cls, settings: Settings) -> Registry:
        """The registry of ``settings.home`` (``<state_dir>/endpoints.db``)."""
        return cls(settings.state_dir / DB_NAME)

    # --- connection handling -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise SentiflowError(
                f"cannot open the endpoint registry {self.path}: {error}; check that SENTIFLOW_HOME is writable"
            ) from error
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        if not self._ready:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            self._migrate(conn)
            self._ready = True
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Add the model columns an older ``endpoints.db`` lacks; its promoted rows become Approved."""
        present = {row["name"] for row in conn.execute("PRAGMA table_info(models)")}
        missing = [column for column in _ADDED_MODEL_COLUMNS if column not in present]
        if not missing:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for column in missing:
                conn.execute(f"ALTER TABLE models ADD COLUMN {column} {_ADDED_MODEL_COLUMNS[column]}")
            if "status" in missing:
                conn.execute(f"UPDATE models SET status = '{APPROVED}' WHERE promoted_at IS NOT NULL")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    # --- endpoints -----------------------------------------------------------------------------------

    @staticmethod
    def _endpoint(row: sqlite3.Row) -> EndpointRecord:
        return EndpointRecord(**{column: row[column] for column in _ENDPOINT_COLUMNS})

    def add_endpoint(self, record: EndpointRecord) -> EndpointRecord:
        """Insert a new endpoint row; a deleted row of the same name is replaced.

        Raises SentiflowError when a live endpoint already has that name.
        """
        values = record.to_dict()
        with self._write() as conn:
            existing = conn.execute(
                "SELECT status, deleted_at FROM endpoints WHERE name = ?", (record.name,)
            ).fetchone()
            if existing is not None and existing["deleted_at"] is None:
                raise SentiflowError(
                    f"an endpoint named {record.name!r} already exists ({existing['status']}); "
                    f"pick another name or delete it with `sentiflow endpoints delete {record.name}`"
                )
            placeholders = ", ".join("?" for _ in _ENDPOINT_COLUMNS)
            conn.execute(
                f"INSERT OR REPLACE INTO endpoints ({', '.join(_ENDPOINT_COLUMNS)}) VALUES ({placeholders})",
                [values[column] for column in _ENDPOINT_COLUMNS],
            )
        return record

    def update_endpoint(self, name: str, **changes: Any) -> EndpointRecord:
        """Set the given columns of endpoint ``name``; returns the updated row."""
        unknown = set(changes) - set(_ENDPOINT_COLUMNS) - {"name"}
        if unknown or "name" in changes:
            raise ValueError(f"cannot update endpoint columns {sorted(unknown | ({'name'} & set(changes)))}")
        with self._write() as conn:
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                conn.execute(f"UPDATE endpoints SET {assignments} WHERE name = ?", [*changes.values(), name])
            row = conn.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise SentiflowError(f"no endpoint named {name!r} in {self.path}; see `sentiflow endpoints list`")
        return self._endpoint(row)

    def mark_deleted(self, name: str) -> EndpointRecord:
        """Stamp endpoint ``name`` deleted (status ``Deleted``, ``deleted_at`` now)."""
        return self.update_endpoint(name, status=DELETED, deleted_at=utc_now())

    def get_endpoint(self, name: str, include_deleted: bool = False) -> EndpointRecord | None:
        """The row of endpoint ``name``, or None (also None for a deleted one unless ``include_deleted``)."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        record = self._endpoint(row)
        return record if include_deleted or not record.deleted else None

    def list_endpoints(self, backend: str | None = None, include_deleted: bool = False) -> list[EndpointRecord]:
        """Endpoint rows, oldest first, optionally of one backend only."""
        query = "SELECT * FROM endpoints WHERE 1 = 1"
        params: list[Any] = []
        if backend is not None:
            query += " AND backend = ?"
            params.append(backend)
        if not include_deleted:
            query += " AND deleted_at IS NULL"
        query += " ORDER BY created_at, name"
        with self._read() as conn:
            rows = conn.execute(query, params).fetchall()
        return [self._endpoint(row) for row in rows]

    def touch_invoked(self, name: str, when: str | None = None) -> None:
        """Record an invocation time for ``name`` if it is later than the stored one."""
        when = when or utc_now()
        current = self.get_endpoint(name, include_deleted=True)
        if current is None:
            return
        previous = parse_time(current.last_invoked_at)
        new = parse_time(when)
        if new is not None and (previous is None or new > previous):
            self.update_endpoint(name, last_invoked_at=new.isoformat())

    # --- model versions ------------------------------------------------------------------------------

    @staticmethod
    def _model(row: sqlite3.Row) -> ModelVersion:
        return ModelVersion(
            version=row["version"],
            model_uri=row["model_uri"],
            accuracy=row["accuracy"],
            registered_at=row["registered_at"],
            promoted_at=row["promoted_at"],
            promoted_seq=row["promoted_seq"],
            status=row["status"],
            metrics_uri=row["metrics_uri"],
            tags=json.loads(row["tags"] or "{}"),
            reason=row["reason"],
        )

    def register_model(
        self,
        model_uri: str,
        accuracy: float | None = None,
        metrics_uri: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> ModelVersion:
        """The version of ``model_uri``: its existing row (missing accuracy / metrics / tags filled in), or a new
        one with the next version number, status PendingManualApproval.

        Called after evaluation and again before a model is deployed (the endpoint name carries the version);
        the row is stamped promoted by :meth:`mark_promoted` once the API serves it.
        """
        with self._write() as conn:
            row = conn.execute("SELECT * FROM models WHERE model_uri = ?", (model_uri,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO models (model_uri, accuracy, registered_at, status, metrics_uri, tags) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (model_uri, accuracy, utc_now(), PENDING, metrics_uri, json.dumps(tags or {}, sort_keys=True)),
                )
            else:
                merged = {**json.loads(row["tags"] or "{}"), **(tags or {})}
                conn.execute(
                    "UPDATE models SET accuracy = COALESCE(accuracy, ?), metrics_uri = COALESCE(metrics_uri, ?), "
                    "tags = ? WHERE version = ?",
                    (accuracy, metrics_uri, json.dumps(merged, sort_keys=True), row["version"]),
                )
            row = conn.execute("SELECT * FROM models WHERE model_uri = ?", (model_uri,)).fetchone()
        return self._model(row)

    def set_status(self, version: int, status: str, reason: str | None) -> ModelVersion:
        """Set the approval status of ``version`` (and why)."""
        if status not in APPROVAL_STATUSES:
            raise ValueError(f"approval status {status!r} is not one of {APPROVAL_STATUSES}")
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE models SET status = ?, reason = ? WHERE version = ?", (status, reason, version)
            )
            if cursor.rowcount == 0:
                raise SentiflowError(f"no model version {version} in {self.path}; see `sentiflow models list`")
            row = conn.execute("SELECT * FROM models WHERE version = ?", (version,)).fetchone()
        return self._model(row)

    def mark_promoted(self, version: int, reason: str = "promoted") -> ModelVersion:
        """Stamp ``version`` Approved and as the one the API now serves (the latest promotion wins)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE models SET promoted_at = ?, status = ?, reason = ?, "
                "promoted_seq = (SELECT COALESCE(MAX(promoted_seq), 0) + 1 FROM models) WHERE version = ?",
                (utc_now(), APPROVED, reason, version),
            )
            if cursor.rowcount == 0:
                raise SentiflowError(f"no model version {version} in {self.path}; see `sentiflow models list`")
            row = conn.execute("SELECT * FROM models WHERE version = ?", (version,)).fetchone()
        return self._model(row)

    def get_model(self, version: int) -> ModelVersion | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM models WHERE version = ?", (version,)).fetchone()
        return None if row is None else self._model(row)

    def list_models(self) -> list[ModelVersion]:
        """Every model version, oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM models ORDER BY version").fetchall()
        return [self._model(row) for row in rows]

    def current_model(self) -> ModelVersion | None:
        """The most recently promoted model version, or None if nothing was ever promoted."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM models WHERE promoted_at IS NOT NULL ORDER BY promoted_seq DESC LIMIT 1"
            ).fetchone()
        return None if row is None else self._model(row)

    def previous_model(self, version: int | None = None) -> ModelVersion | None:
        """The highest promoted, still Approved version below ``version`` (default: the current one), or None."""
        if version is None:
            current = self.current_model()
            if current is None:
                return None
            version = current.version
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM models WHERE promoted_at IS NOT NULL AND status = ? AND version < ? "
                "ORDER BY version DESC LIMIT 1",
                (APPROVED, version),
            ).fetchone()
        return None if row is None else self._model(row)


class LocalModelRegistry:
    """:class:`backends.base.ModelRegistry` on the ``models`` table of this SENTIFLOW_HOME's ``endpoints.db``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _view(self, row: ModelVersion, live: int | None) -> RegisteredModel:
        return RegisteredModel(
            version=row.version,
            model_uri=row.model_uri,
            status=row.status,
            registered_at=row.registered_at,
            accuracy=row.accuracy,
            metrics_uri=row.metrics_uri,
            promoted_at=row.promoted_at,
            live=row.version == live,
            reason=row.reason,
            tags=dict(row.tags),
        )

    def _live_version(self) -> int | None:
        current = self.registry.current_model()
        return None if current is None else current.version

    def _found(self, version: int, row: ModelVersion | None) -> ModelVersion:
        if row is None:
            raise SentiflowError(f"no model version {version} in {self.registry.path}; see `sentiflow models list`")
        return row

    def register(
        self,
        model_uri: str,
        metrics_uri: str | None = None,
        tags: dict[str, str] | None = None,
        accuracy: float | None = None,
    ) -> RegisteredModel:
        row = self.registry.register_model(model_uri, accuracy, metrics_uri, tags)
        return self._view(row, self._live_version())

    def reject(self, version: int, reason: str) -> RegisteredModel:
        self._found(version, self.registry.get_model(version))
        return self._view(self.registry.set_status(version, REJECTED, reason), self._live_version())

    def approve(self, version: int, reason: str = "promoted") -> RegisteredModel:
        return self._view(self.registry.mark_promoted(version, reason), version)

    def get(self, version: int) -> RegisteredModel | None:
        row = self.registry.get_model(version)
        return None if row is None else self._view(row, self._live_version())

    def live(self) -> RegisteredModel | None:
        current = self.registry.current_model()
        return None if current is None else self._view(current, current.version)

    def previous_approved(self, version: int | None = None) -> RegisteredModel | None:
        previous = self.registry.previous_model(version)
        return None if previous is None else self._view(previous, self._live_version())

    def list(self) -> list[RegisteredModel]:
        live = self._live_version()
        return [self._view(row, live) for row in self.registry.list_models()]


def make_registry(settings: Settings) -> LocalModelRegistry:
    """The local model registry of ``settings.home``."""
    return LocalModelRegistry(Registry.for_settings(settings))
