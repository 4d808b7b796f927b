"""LocalApiGateway: re-points a detached ``sentiflow api`` process through its state file."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest

from backends.base import ApiGateway, EndpointInfo
from backends.local.api import LocalApiGateway
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
    gateway.stop()


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, int(port))) == 0


def test_implements_the_interface(api: LocalApiGateway) -> None:
    assert isinstance(api, ApiGateway)
    assert api.current() is None


@pytest.mark.e2e
def test_point_switch_clear_and_stop(api: LocalApiGateway) -> None:
    logs: list[str] = []
    with (
        running_endpoint(version="1", names=("blue",)) as blue,
        running_endpoint(version="2", names=("green",)) as green,
    ):
        info = api.point_to(endpoint_info("blue", blue.url, 1), logs.append)
        assert info.endpoint_name == "blue" and info.page_url == f"{info.url}/"
        assert any("started" in line for line in logs)
        record = json.loads(api.server_path.read_text())
        assert info.url == record["url"] and record["pid"] != os.getpid()

        status, body = predict(info.url, "a wonderful film")
        assert status == 200 and body["label"] == "positive" and body["model_version"] == "1"
        status, _, page = request(f"{info.url}/")
        assert status == 200 and b"<textarea" in page

        again = api.point_to(endpoint_info("green", green.url, 2), logs.append)
        assert again.url == info.url  # the same process, re-pointed without a restart
        assert json.loads(api.server_path.read_text())["pid"] == record["pid"]
        status, body = predict(info.url, "an awful film")
        assert status == 200 and body["label"] == "negative" and body["model_version"] == "2"
        current = api.current()
        assert current is not None and current.endpoint_name == "green" and current.url == info.url

        api.clear(logs.append)
        assert api.current() is None
        status, body = predict(info.url, "a wonderful film")
        assert status == 503 and body["error"] == "no model is deployed"

    assert api.stop() is True
    assert not _port_open(info.url)
    log = api.log_path.read_text()
    assert f"page: {info.url}/" in log and f"api:  {info.url}/predict" in log
    assert '"event": "stopped"' in log  # SIGTERM: a graceful exit, not a kill
    assert not api.server_path.exists()
    assert api.stop() is False


def test_point_to_rejects_endpoints_it_cannot_serve(api: LocalApiGateway) -> None:
    with pytest.raises(SentiflowError, match="no URL"):
        api.point_to(endpoint_info("e", "", 1), print)
    with pytest.raises(SentiflowError, match="not InService"):
        api.point_to(endpoint_info("e", "http://127.0.0.1:1", 1, status="Creating"), print)


@pytest.mark.e2e
def test_a_busy_port_is_reported_with_the_log_tail(settings: Settings) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = LocalApiGateway(settings.with_overrides(api_port=holder.getsockname()[1]))
        with pytest.raises(SentiflowError, match="cannot listen"):
            busy.point_to(endpoint_info("e", "http://127.0.0.1:1", 1), print)
