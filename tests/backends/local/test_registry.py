"""The endpoint registry: endpoint rows and model versions round-trip through SQLite, across processes too."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backends.base import EndpointInfo
from backends.local.registry import DB_NAME, EndpointRecord, Registry, parse_time
from core.config import Settings
from core.errors import SentiflowError


@pytest.fixture
def registry(settings: Settings) -> Registry:
    return Registry.for_settings(settings)


def record(name: str = "sentiflow-v1-abc123", **changes: object) -> EndpointRecord:
    values: dict = {"name": name, "backend": "local", "model_uri": "file:///store/m1.tar.gz", "version": 1}
    values.update(status="Creating")
    values.update(changes)
    return EndpointRecord(**values)


def test_lives_in_the_state_dir_with_wal(settings: Settings, registry: Registry) -> None:
    registry.add_endpoint(record())
    assert registry.path == settings.state_dir / DB_NAME and registry.path.is_file()
    with sqlite3.connect(registry.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_endpoint_round_trip(registry: Registry) -> None:
    added = registry.add_endpoint(record())
    assert registry.get_endpoint(added.name) == added

    updated = registry.update_endpoint(
        added.name,
        status="InService",
        port=8123,
        pid=4242,
        url="http://127.0.0.1:8123",
        instance_type="local",
    )
    assert (updated.status, updated.port, updated.pid, updated.url) == (
        "InService",
        8123,
        4242,
        "http://127.0.0.1:8123",
    )
    assert registry.get_endpoint(added.name) == updated
    assert registry.list_endpoints() == [updated]
    assert registry.list_endpoints(backend="aws") == []

    info = updated.to_info()
    assert isinstance(info, EndpointInfo)
    assert (info.name, info.version, info.status, info.url) == (added.name, 1, "InService", updated.url)
    assert info.extra["port"] == 8123 and info.extra["pid"] == 4242


def test_deleted_endpoints_are_hidden_and_their_name_reusable(registry: Registry) -> None:
    registry.add_endpoint(record("ep-a"))
    registry.add_endpoint(record("ep-b", version=2))
    gone = registry.mark_deleted("ep-a")
    assert gone.status == "Deleted" and gone.deleted and parse_time(gone.deleted_at) is not None

    assert [r.name for r in registry.list_endpoints()] == ["ep-b"]
    assert {r.name for r in registry.list_endpoints(include_deleted=True)} == {"ep-a", "ep-b"}
    assert registry.get_endpoint("ep-a") is None
    assert registry.get_endpoint("ep-a", include_deleted=True) == gone

    again = registry.add_endpoint(record("ep-a", version=3))
    assert registry.get_endpoint("ep-a") == again and again.version == 3


def test_a_live_name_cannot_be_taken_twice(registry: Registry) -> None:
    registry.add_endpoint(record("ep-a"))
    with pytest.raises(SentiflowError, match="already exists.*sentiflow endpoints delete ep-a"):
        registry.add_endpoint(record("ep-a", version=2))


def test_updating_an_unknown_endpoint_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(SentiflowError, match="no endpoint named 'nope'"):
        registry.update_endpoint("nope", status="Failed")
    with pytest.raises(ValueError, match="cannot update"):
        registry.update_endpoint("nope", colour="blue")


def test_touch_invoked_keeps_the_latest_time(registry: Registry) -> None:
    registry.add_endpoint(record("ep-a"))
    later = datetime.now(UTC)
    earlier = later - timedelta(minutes=5)
    registry.touch_invoked("ep-a", later.isoformat())
    registry.touch_invoked("ep-a", earlier.isoformat())
    assert parse_time(registry.get_endpoint("ep-a").last_invoked_at) == later
    registry.touch_invoked("missing-endpoint")  # no row: nothing happens


def _versions(registry: Registry, promoted_only: bool = False) -> list[int]:
    """Model versions straight from the database (the registry has no listing call: nothing else needs one)."""
    query = "SELECT version FROM models" + (" WHERE promoted_at IS NOT NULL" if promoted_only else "")
    with contextlib.closing(sqlite3.connect(registry.path)) as conn:
        return sorted(row[0] for row in conn.execute(query))


def test_model_versions_and_rollback_order(registry: Registry) -> None:
    assert registry.current_model() is None and registry.previous_model() is None
    first = registry.register_model("file:///store/m1.tar.gz", accuracy=0.86)
    second = registry.register_model("file:///store/m2.tar.gz", accuracy=0.88)
    assert (first.version, second.version) == (1, 2)
    assert registry.register_model("file:///store/m1.tar.gz") == first  # same artifact, same version
    assert first.promoted_at is None

    registry.mark_promoted(1)
    registry.mark_promoted(2)
    assert registry.current_model().version == 2
    assert registry.previous_model().version == 1
    assert _versions(registry, promoted_only=True) == [1, 2]

    third = registry.register_model("file:///store/m3.tar.gz")  # deployed but never promoted
    assert registry.current_model().version == 2
    assert registry.previous_model(third.version).version == 2

    registry.mark_promoted(1)  # a rollback re-promotes v1: it is current, and nothing is older
    assert registry.current_model().version == 1
    assert registry.previous_model() is None
    assert registry.register_model("file:///store/m1.tar.gz").accuracy == 0.86  # the existing row
    with pytest.raises(SentiflowError, match="no model version 99"):
        registry.mark_promoted(99)


def test_parse_time_accepts_iso_and_epoch() -> None:
    moment = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_time("2025-01-31T12:00:00Z") == moment
    assert parse_time("2025-01-31T12:00:00") == moment
    assert parse_time(moment.timestamp()) == moment
    assert parse_time(None) is None and parse_time("yesterday") is None


def _writer(path: str, worker: int, count: int) -> None:
    registry = Registry(Path(path))
    for i in range(count):
        registry.add_endpoint(record(f"ep-{worker}-{i}", version=worker))
        registry.register_model(f"file:///store/w{worker}-{i}.tar.gz")
        registry.update_endpoint(f"ep-{worker}-{i}", status="InService")


def test_safe_for_several_processes(registry: Registry) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(registry.path), w, 15)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    rows = registry.list_endpoints()
    assert len(rows) == 60 and {r.status for r in rows} == {"InService"}
    assert _versions(registry) == list(range(1, 61))


def test_model_registry_lifecycle(settings: Settings) -> None:
    from backends.base import get_registry
    from tests.backends.registry_lifecycle import check_lifecycle

    registry = get_registry(settings)
    check_lifecycle(registry, ("file:///s/m1.tar.gz", "file:///s/m2.tar.gz", "file:///s/m3.tar.gz"), "file:///r.json")
    with pytest.raises(SentiflowError, match="no model version 9 .*sentiflow models list"):
        registry.reject(9, "nope")


def test_an_older_database_gains_the_approval_columns(settings: Settings) -> None:
    path = settings.state_dir / DB_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(
            "CREATE TABLE models (version INTEGER PRIMARY KEY AUTOINCREMENT, model_uri TEXT NOT NULL UNIQUE, "
            "accuracy REAL, registered_at TEXT NOT NULL, promoted_at TEXT, promoted_seq INTEGER);"
            "INSERT INTO models VALUES (1, 'file:///a', 0.9, '2025-01-01T00:00:00+00:00', "
            "'2025-01-01T00:00:00+00:00', 1);"
            "INSERT INTO models VALUES (2, 'file:///b', 0.8, '2025-01-02T00:00:00+00:00', NULL, NULL);"
        )
    from backends.local.registry import make_registry

    models = make_registry(settings).list()
    assert [(m.version, m.status, m.live) for m in models] == [
        (1, "Approved", True),
        (2, "PendingManualApproval", False),
    ]
