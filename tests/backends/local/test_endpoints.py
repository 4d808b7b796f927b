"""LocalEndpointManager: real endpoint server processes (``python -m serve.endpoint``), started, checked, stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from backends.base import EndpointManager
from backends.local.endpoints import LocalEndpointManager, endpoint_command
from backends.local.registry import Registry
from backends.local.storage import LocalArtifactStore
from core import processes
from core.config import Settings
from core.errors import SentiflowError
from tests.fixtures.tiny_model import TinyModel


@pytest.fixture
def manager(settings: Settings) -> Iterator[LocalEndpointManager]:
    endpoints = LocalEndpointManager(settings, LocalArtifactStore(settings.store_dir), drain_timeout_s=10)
    yield endpoints
    for info in endpoints.list():  # never leave a server behind
        endpoints.delete(info.name, drain_timeout_s=2)


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_implements_the_interface(manager: LocalEndpointManager) -> None:
    assert isinstance(manager, EndpointManager)
    assert manager.list() == [] and manager.get("nothing") is None


def test_the_endpoint_command_is_the_shared_contract(tmp_path: Path) -> None:
    command = endpoint_command(tmp_path / "model", name="ep-1", state_dir=tmp_path, access_log=tmp_path / "a.log")
    assert command == [
        sys.executable, "-m", "serve.endpoint", str(tmp_path / "model"), "--fd", processes.FD, "--name", "ep-1",
        "--state-dir", str(tmp_path), "--access-log", str(tmp_path / "a.log"),
    ]  # fmt: skip


def test_rejects_bad_names_and_missing_models(manager: LocalEndpointManager, tmp_path: Path) -> None:
    with pytest.raises(SentiflowError, match="invalid endpoint name 'bad_name!'"):
        manager.deploy("bad_name!", str(tmp_path), 1, print)
    with pytest.raises(SentiflowError, match="does not exist; pass a model.tar.gz"):
        manager.deploy("ep-missing", str(tmp_path / "nope.tar.gz"), 1, print)
    with pytest.raises(SentiflowError, match="holds no model.pth"):
        manager.deploy("ep-empty", str(tmp_path), 1, print)
    assert manager.list() == []  # the failed ones are cleaned up, not listed
    assert manager.registry.get_endpoint("ep-missing", include_deleted=True).status == "Failed"
    with pytest.raises(SentiflowError, match="no local endpoint named 'ep-missing'"):
        manager.delete("ep-missing")


@pytest.mark.e2e
def test_deploy_invoke_list_delete(manager: LocalEndpointManager, tiny_model: TinyModel) -> None:
    lines: list[str] = []
    store = LocalArtifactStore(manager.settings.store_dir)
    uri, _ = store.put_file(tiny_model.tar_path, "models/job-1/model.tar.gz")

    info = manager.deploy("ep-blue", uri, 1, lines.append)

    assert info.status == "InService" and info.version == 1 and info.model_uri == uri
    port = urlparse(info.url).port
    assert urlparse(info.url).hostname == "127.0.0.1" and port_open(port) and info.extra["port"] == port
    assert httpx.get(f"{info.url}/ping", trust_env=False).status_code == 200
    pid = info.extra["pid"]
    assert os.getsid(pid) == pid  # its own session: signals to the deploying process group never reach it
    assert any("InService" in line for line in lines)
    assert manager.log_path("ep-blue").is_file()
    assert (manager.endpoint_dir("ep-blue") / "model" / "model.pth").is_file()  # unpacked, like /opt/ml/model

    assert [e.name for e in manager.list()] == ["ep-blue"]
    answer = json.loads(manager.invoke("ep-blue", b'{"review": "a wonderful, brilliant film"}', "application/json"))
    assert answer["label"] in ("positive", "negative")
    assert manager.get("ep-blue").last_invoked_at is not None
    with pytest.raises(SentiflowError, match="HTTP 4"):
        manager.invoke("ep-blue", b"{not json", "application/json")
    with pytest.raises(SentiflowError, match="already exists"):
        manager.deploy("ep-blue", uri, 1, print)

    manager.delete("ep-blue")

    record = Registry.for_settings(manager.settings).get_endpoint("ep-blue", include_deleted=True)
    assert record.status == "Deleted" and record.deleted_at is not None
    assert not processes.pid_alive(pid, record.pid_started_at) and not port_open(port)
    assert manager.list() == [] and manager.get("ep-blue") is None
    assert not (manager.endpoint_dir("ep-blue") / "model").exists()
    assert store.exists("models/job-1/model.tar.gz")  # the model artifact is kept
    with pytest.raises(SentiflowError, match="does not exist"):
        manager.invoke("ep-blue", b"{}", "application/json")


@pytest.mark.e2e
def test_a_server_that_cannot_start_is_reported_with_its_log_and_cleaned(
    manager: LocalEndpointManager, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.pth").write_bytes(b"not a torch file")

    with pytest.raises(SentiflowError) as caught:
        manager.deploy("ep-broken", str(broken), 3, print)

    message = str(caught.value)
    assert "endpoint ep-broken exited while starting" in message and "server.log" in message
    record = manager.registry.get_endpoint("ep-broken", include_deleted=True)
    assert record.status == "Failed" and record.deleted_at is not None and record.pid is not None
    assert not processes.pid_alive(record.pid, record.pid_started_at)
    assert manager.list() == []


@pytest.mark.e2e
def test_a_killed_server_turns_failed_and_teardown_candidates(
    manager: LocalEndpointManager, tiny_model: TinyModel
) -> None:
    info = manager.deploy("ep-green", str(tiny_model.model_dir), 2, print)

    assert manager.teardown_candidates(idle_minutes=60, max_age_hours=None) == []
    [idle] = manager.teardown_candidates(idle_minutes=0, max_age_hours=None)
    assert idle.endpoint.name == "ep-green" and idle.reason == "idle"
    assert idle.endpoint.extra["rss_bytes"] > 0 and idle.endpoint.extra["processes"] == 1
    assert f"pid {info.extra['pid']}" in idle.saved and "MiB RSS" in idle.saved
    [old] = manager.teardown_candidates(idle_minutes=60, max_age_hours=0)
    assert old.reason == "max-age"

    httpx.post(f"{info.url}/invocations", json={"review": "dull and boring"}, trust_env=False)  # /stats sees it
    assert manager.teardown_candidates(idle_minutes=0.5, max_age_hours=None) == []
    assert manager.get("ep-green").last_invoked_at is not None

    os.killpg(info.extra["pid"], signal.SIGKILL)  # kill -9, workers and all
    deadline = time.monotonic() + 10
    while manager.get("ep-green").status != "Failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manager.get("ep-green").status == "Failed"
    assert [e.status for e in manager.list()] == ["Failed"]
    [dead] = manager.teardown_candidates(idle_minutes=0, max_age_hours=0)
    assert dead.saved == "no process (already dead)"
    manager.delete("ep-green")  # a dead endpoint is deleted without fuss
    assert manager.list() == []
