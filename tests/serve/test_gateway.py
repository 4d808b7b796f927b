"""The local API gateway: a real server on 127.0.0.1 running the Lambda handler in process."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.errors import SentiflowError
from serve.gateway import (
    NO_TARGET,
    ApiTarget,
    GatewayServer,
    TargetWatcher,
    api_state_path,
    build_event,
    make_gateway,
    read_api_target,
    write_api_target,
)
from tests.fixtures.endpoint_double import predict, request, running_endpoint

pytestmark = pytest.mark.e2e  # the gateway and an endpoint double run on loopback ports


def point(settings: Settings, name: str, url: str, version: str) -> None:
    write_api_target(api_state_path(settings), ApiTarget(name, url, version))


def test_page_and_assets_are_served(gateway: GatewayServer) -> None:
    status, headers, body = request(f"{gateway.url}/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b'<textarea id="review"' in body and b'src="app.js"' in body
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = request(f"{gateway.url}{path}")
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
    assert request(f"{gateway.url}/nope")[0] == 404


def test_healthz_reports_the_target(gateway: GatewayServer, settings: Settings) -> None:
    status, _, raw = request(f"{gateway.url}/healthz")
    assert status == 200
    health = json.loads(raw)
    assert health["status"] == "ok" and health["endpoint_name"] is None
    point(settings, "sentiment", "http://127.0.0.1:9", "4")
    health = json.loads(request(f"{gateway.url}/healthz")[2])
    assert health["endpoint_name"] == "sentiment" and health["model_version"] == "4"


def test_predict_round_trip_with_cors(gateway: GatewayServer, settings: Settings) -> None:
    with running_endpoint(version="3") as endpoint:
        point(settings, "sentiment", endpoint.url, "3")
        status, body = predict(gateway.url, "An excellent, wonderful film.")
        assert status == 200
        assert body["label"] == "positive" and body["model_version"] == "3"
        assert body["latency_ms"] >= 0 and body["request_id"]
        status, body = predict(gateway.url, "Boring and awful.")
        assert body["label"] == "negative"
        sent = endpoint.requests[-1]
        assert sent["name"] == "sentiment" and json.loads(sent["body"]) == {"review": "Boring and awful."}
        # plain text works too
        status, _, raw = request(f"{gateway.url}/predict", "POST", b"great great", {"Content-Type": "text/plain"})
        assert status == 200 and json.loads(raw)["label"] == "positive"
        status, headers, raw = request(
            f"{gateway.url}/predict",
            "OPTIONS",
            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"},
        )
        assert status == 204 and raw == b""
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Access-Control-Allow-Methods"] == "POST,OPTIONS"


def test_no_target_is_503_and_bad_input_is_400(gateway: GatewayServer, settings: Settings) -> None:
    status, body = predict(gateway.url, "A wonderful film")
    assert status == 503 and body["error"] == "no model is deployed"
    with running_endpoint() as endpoint:
        point(settings, "sentiment", endpoint.url, "1")
        status, body = predict(gateway.url, "   ")
        assert status == 400 and body["error"] == "empty review"
        status, _, raw = request(f"{gateway.url}/predict", "POST", b"x" * (2 << 20), {"Content-Type": "text/plain"})
        assert status == 413


def test_cleared_target_answers_503(gateway: GatewayServer, settings: Settings) -> None:
    with running_endpoint() as endpoint:
        point(settings, "sentiment", endpoint.url, "1")
        assert predict(gateway.url, "great")[0] == 200
        write_api_target(api_state_path(settings), NO_TARGET)
        status, body = predict(gateway.url, "great")
        assert status == 503 and body["error"] == "no model is deployed"


def test_endpoint_gone_is_503(gateway: GatewayServer, settings: Settings) -> None:
    with running_endpoint() as endpoint:
        point(settings, "sentiment", endpoint.url, "1")
    status, body = predict(gateway.url, "great")  # the endpoint server has stopped
    assert status == 503 and body["error"] == "no model is deployed"


def test_repointing_under_load_drops_no_request(gateway: GatewayServer, settings: Settings) -> None:
    """Blue/green: switch the state file while requests run, then stop the old endpoint at once."""
    with running_endpoint(version="1") as blue, running_endpoint(version="2") as green:
        point(settings, "sentiment", blue.url, "1")
        stop = threading.Event()
        results: list[tuple[int, str | None]] = []
        lock = threading.Lock()

        def client() -> None:
            while not stop.is_set():
                status, body = predict(gateway.url, "wonderful and excellent")
                with lock:
                    results.append((status, body.get("model_version")))

        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(client) for _ in range(4)]
            deadline = time.monotonic() + 10
            while len(results) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            point(settings, "sentiment", green.url, "2")
            blue.stop()  # no drain period: requests still aimed at blue are retried on green
            switched = len(results)
            while len(results) < switched + 60 and time.monotonic() < deadline + 10:
                time.sleep(0.01)
            stop.set()
            for future in futures:
                future.result()
        failures = [r for r in results if r[0] != 200]
        assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"
        assert {v for _, v in results[:20]} == {"1"}
        assert {v for _, v in results[-20:]} == {"2"}
        assert len(results) >= 100


def test_target_watcher_rereads_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "api.json"
    watcher = TargetWatcher(path)
    assert watcher.get() == NO_TARGET
    write_api_target(path, ApiTarget("a", "http://127.0.0.1:1", "1"))
    first = watcher.get()
    assert first.endpoint_name == "a" and watcher.get() is first
    write_api_target(path, ApiTarget("b", "http://127.0.0.1:2", "2"))
    assert watcher.get().endpoint_name == "b"
    path.write_text("{broken")  # a corrupt file keeps the last good target
    assert watcher.get().endpoint_name == "b"
    path.unlink()
    assert watcher.get() == NO_TARGET


def test_state_file_validation(tmp_path: Path) -> None:
    with pytest.raises(SentiflowError, match="not an http"):
        write_api_target(tmp_path / "api.json", ApiTarget("a", "ftp://x", "1"))
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(SentiflowError, match="JSON object"):
        read_api_target(tmp_path / "bad.json")


def test_build_event_is_payload_v2() -> None:
    event = build_event(
        "POST", "/predict", "a=1", {"content-type": "application/json"}, b'{"review":"x"}', "127.0.0.1", "r1"
    )
    assert event["version"] == "2.0" and event["routeKey"] == "POST /predict"
    assert event["rawPath"] == "/predict" and event["rawQueryString"] == "a=1"
    assert event["requestContext"]["http"] == {
        "method": "POST",
        "path": "/predict",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "",
    }
    assert event["requestContext"]["requestId"] == "r1"
    assert event["body"] == '{"review":"x"}' and event["isBase64Encoded"] is False
    binary = build_event("POST", "/predict", "", {"content-type": "application/octet-stream"}, b"\xff", "::1", "r2")
    assert binary["isBase64Encoded"] is True and binary["body"] == "/w=="


def test_port_in_use_is_a_clear_error(gateway: GatewayServer, settings: Settings) -> None:
    with pytest.raises(SentiflowError, match="cannot listen"):
        make_gateway(settings, port=gateway.port)


def test_through_the_real_endpoint_server_and_a_real_model(
    gateway: GatewayServer, settings: Settings, tiny: Any, tiny_loaded: Any
) -> None:
    """Page → gateway → Lambda handler → boto3 → ``serve.server.EndpointServer`` → the tiny trained model."""
    from model.inference import InferenceInput, output_fn, predict_fn
    from serve.server import EndpointServer

    with EndpointServer(tiny_loaded, name="sentiment-v1") as endpoint:
        point(settings, "sentiment-v1", endpoint.url, "1")
        for review in tiny.test_reviews[:6]:
            status, body = predict(gateway.url, review)
            assert status == 200, body
            expected = json.loads(output_fn(predict_fn(InferenceInput(texts=[review], single=True), tiny_loaded), None))
            assert body["label"] == expected["label"]
            assert body["score"] == pytest.approx(expected["score"])
            assert body["model_version"] == "1"
        point(settings, "sentiment-v0", endpoint.url, "0")  # a name this server does not serve
        status, body = predict(gateway.url, tiny.test_reviews[0])
        assert status == 503 and body["error"] == "no model is deployed"
