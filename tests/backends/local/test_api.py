"""LocalApiGateway: starts the gateway process through the process helper and re-points it through its state file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from backends.base import ApiGateway, EndpointInfo
from backends.local.api import LocalApiGateway
from core import processes
from core.config import Settings
from core.errors import SentiflowError
from tests.fixtures.endpoint_double import predict, request, running_endpoint


def endpoint_info(name: str, url: str, version: int, status: str = "InService") -> EndpointInfo:
    return EndpointInfo(
        name=name, model_uri=f"file:///models/{version}/model.tar.gz", version=version, status=status, url=url
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[LocalApiGateway]:
    gateway = LocalApiGateway(settings.with_overrides(api_port=0))
    yield gateway
    gateway.stop(timeout=10)


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, int(port))) == 0


def test_implements_the_interface(api: LocalApiGateway) -> None:
    assert isinstance(api, ApiGateway)
    assert api.current() is None and api.running_url() is None and api.stop() is False


def test_point_to_rejects_endpoints_it_cannot_serve(api: LocalApiGateway) -> None:
    with pytest.raises(SentiflowError, match="no URL"):
        api.point_to(endpoint_info("e", "", 1), print)
    with pytest.raises(SentiflowError, match="not InService"):
        api.point_to(endpoint_info("e", "http://127.0.0.1:1", 1, status="Creating"), print)


@pytest.mark.e2e
def test_point_switch_clear_and_stop(api: LocalApiGateway) -> None:
    logs: list[str] = []
    with running_endpoint(names=("blue", "green")) as endpoint:
        info = api.point_to(endpoint_info("blue", endpoint.url, 1), logs.append)
        assert info.endpoint_name == "blue" and info.page_url == f"{info.url}/"
        assert any("API gateway started" in line for line in logs)
        record = api.record()
        assert record is not None and record.url == info.url and record.pid != os.getpid()
        assert os.getsid(record.pid) == record.pid  # detached: its own session

        status, body = predict(info.url, "a wonderful film")
        assert status == 200 and body["label"] == "positive" and body["model_version"] == "1"
        status, _, page = request(f"{info.url}/")
        assert status == 200 and b"<textarea" in page

        again = api.point_to(endpoint_info("green", endpoint.url, 2), logs.append)
        assert again.url == info.url and api.record() == record  # the same process, re-pointed without a restart
        status, body = predict(info.url, "an awful film")  # point_to returned: the switch is complete
        assert status == 200 and body["label"] == "negative" and body["model_version"] == "2"
        current = api.current()
        assert current is not None and current.endpoint_name == "green" and current.url == info.url

        api.clear(logs.append)
        assert api.current() is None
        status, body = predict(info.url, "a wonderful film")
        assert status == 503 and body["error"] == "no model is deployed"

    assert api.stop() is True
    assert not port_open(info.url) and not processes.alive(record)
    log = api.log_path.read_text()
    assert '"event": "stopped"' in log  # SIGTERM: a graceful exit, not a kill
    assert api.record() is None and api.stop() is False


@pytest.mark.e2e
def test_a_busy_port_is_reported(settings: Settings) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = LocalApiGateway(settings.with_overrides(api_port=holder.getsockname()[1]))
        with pytest.raises(SentiflowError, match="cannot listen on 127.0.0.1"):
            busy.point_to(endpoint_info("e", "http://127.0.0.1:1", 1), print)


@pytest.mark.e2e
def test_a_gateway_started_in_a_terminal_is_found_and_re_pointed(settings: Settings) -> None:
    """``sentiflow api`` in a terminal on SENTIFLOW_API_PORT: a deploy re-points it instead of starting another, and
    the backend's ``stop`` leaves it to its user."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SENTIFLOW_HOME": str(settings.home), "SENTIFLOW_API_PORT": str(port)}
    terminal = subprocess.Popen(
        [sys.executable, "-c", "from sentiflow.cli import main; main()", "api", "--environments", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert terminal.stdout is not None
        assert terminal.stdout.readline().startswith(f"sentiflow API gateway listening on http://127.0.0.1:{port}")
        gateway = LocalApiGateway(settings.with_overrides(api_port=port))
        deadline = time.monotonic() + 30
        while gateway.running_url() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        with running_endpoint(names=("blue",)) as endpoint:
            info = gateway.point_to(endpoint_info("blue", endpoint.url, 1), print)
            assert info.url == f"http://127.0.0.1:{port}" and gateway.record() is None
            assert predict(info.url, "wonderful")[1]["model_version"] == "1"
        assert gateway.stop() is False and terminal.poll() is None
        health = json.loads(request(f"{info.url}/healthz")[2])
        assert health["pid"] == terminal.pid  # the CLI became the gateway (exec), so Ctrl+C reaches it
    finally:
        terminal.terminate()
        code = terminal.wait(timeout=40)
    assert code == 0  # drained and exited cleanly
