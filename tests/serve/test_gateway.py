"""The local API gateway: the real process (``python -m serve.gateway``, started by the process helper) on 127.0.0.1,
hosting the Lambda handler in execution environments, against the endpoint double or the real endpoint server."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from core.config import Settings
from core.errors import SentiflowError
from serve import lambda_runtime
from serve.gateway import (
    NO_TARGET,
    ApiTarget,
    TargetWatcher,
    build_event,
    http_response,
    read_api_target,
    write_api_target,
)
from tests.fixtures.endpoint_double import NO_WORD_WARNING, predict, request, running_endpoint
from tests.fixtures.local import RunningGateway


def environment_pids(gateway: RunningGateway) -> set[int]:
    """The execution environments: the gateway's grandchildren under its fork server."""
    record = gateway.api.record()
    children = psutil.Process(record.pid).children(recursive=True)
    return {p.pid for p in children if p.ppid() != record.pid and p.status() != psutil.STATUS_ZOMBIE}


# --- pure parts ------------------------------------------------------------------------------------------------


def test_target_watcher_rereads_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "api.json"
    watcher = TargetWatcher(path)
    assert watcher.get() == NO_TARGET
    first = write_api_target(path, ApiTarget("a", "http://127.0.0.1:1", "1"))
    assert watcher.get() == first and watcher.get() is watcher.get()
    second = write_api_target(path, ApiTarget("a", "http://127.0.0.1:1", "1"))  # the same content, a new revision
    assert watcher.get() == second and second.revision != first.revision
    path.write_text("{broken")  # a corrupt file keeps the last good target
    assert watcher.get() == second
    path.unlink()
    assert watcher.get() == NO_TARGET


def test_state_file_validation(tmp_path: Path) -> None:
    with pytest.raises(SentiflowError, match="not an http"):
        write_api_target(tmp_path / "api.json", ApiTarget("a", "ftp://x", "1"))
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(SentiflowError, match="JSON object"):
        read_api_target(tmp_path / "bad.json")


def test_the_function_configuration_and_its_process_environment() -> None:
    target = ApiTarget("sentiment-v3", "http://127.0.0.1:9000", "3", allow_origin="https://x.example")
    assert target.configuration() == {
        "ALLOW_ORIGIN": "https://x.example",
        "ENDPOINT_NAME": "sentiment-v3",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://127.0.0.1:9000",
        "MODEL_VERSION": "3",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    assert "ENDPOINT_NAME" not in NO_TARGET.configuration()
    base = {"PATH": "/bin", "AWS_PROFILE": "prod", "AWS_ACCESS_KEY_ID": "AKIAREAL", "HTTPS_PROXY": "http://p:3128"}
    env = lambda_runtime.function_environment(target.configuration(), base)
    assert env["PATH"] == "/bin" and env["AWS_ACCESS_KEY_ID"] == "local" and "AWS_PROFILE" not in env
    assert "HTTPS_PROXY" not in env and env["AWS_CONFIG_FILE"] == os.devnull
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == lambda_runtime.FUNCTION_NAME


def test_build_event_is_payload_v2() -> None:
    headers = {"content-type": "application/json", "cookie": "a=1; b=2", "host": "127.0.0.1:8600"}
    event = build_event("POST", "/predict", "a=1&b", headers, b'{"review":"x"}', "127.0.0.1", "r1")
    assert event["version"] == "2.0" and event["routeKey"] == "POST /predict"
    assert event["rawPath"] == "/predict" and event["rawQueryString"] == "a=1&b"
    assert event["queryStringParameters"] == {"a": "1", "b": ""}
    assert event["cookies"] == ["a=1", "b=2"] and "cookie" not in event["headers"]
    assert event["requestContext"]["http"] == {
        "method": "POST",
        "path": "/predict",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "",
    }
    assert event["requestContext"]["requestId"] == "r1" and event["requestContext"]["domainName"] == "127.0.0.1:8600"
    assert event["body"] == '{"review":"x"}' and event["isBase64Encoded"] is False
    binary = build_event("POST", "/predict", "", {"content-type": "application/octet-stream"}, b"\xff", "::1", "r2")
    assert binary["isBase64Encoded"] is True and binary["body"] == "/w=="
    bad_text = build_event("POST", "/predict", "", {"content-type": "text/plain"}, b"caf\xe9", "::1", "r3")
    assert bad_text["isBase64Encoded"] is True  # not UTF-8: passed on as bytes, the handler answers 400


def test_http_response_from_payload_v2_answers() -> None:
    assert http_response({"statusCode": 201, "headers": {"X-A": 1}, "body": "hi"}) == (201, {"X-A": "1"}, b"hi")
    assert http_response({"statusCode": 200, "body": "aGk=", "isBase64Encoded": True})[2] == b"hi"
    assert http_response({"label": "positive"}) == (200, {"content-type": "application/json"}, b'{"label": "positive"}')


# --- the gateway process ---------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_page_assets_and_health(gateway: RunningGateway) -> None:
    status, headers, body = request(f"{gateway.url}/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<textarea id="review"' in body and b'src="app.js"' in body
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = request(f"{gateway.url}{path}")
        assert status == 200 and headers["content-type"].startswith(kind) and body
    status, headers, body = request(f"{gateway.url}/nope")
    assert status == 404 and json.loads(body)["error"] == "not found" and body.count(b"\n") == 0
    health = json.loads(request(f"{gateway.url}/healthz")[2])
    assert health["status"] == "ok" and health["endpoint_name"] is None
    assert health["state_file"] == str(gateway.state_path) and health["pid"] == gateway.api.record().pid
    gateway.point("sentiment", "http://127.0.0.1:9", "4")
    health = json.loads(request(f"{gateway.url}/healthz")[2])
    assert health["endpoint_name"] == "sentiment" and health["model_version"] == "4"


@pytest.mark.e2e
def test_predict_round_trip_with_cors_and_request_ids(gateway: RunningGateway) -> None:
    with running_endpoint() as endpoint:
        gateway.point("sentiment", endpoint.url, "3")
        status, body = predict(gateway.url, "An excellent, wonderful film.")
        assert status == 200 and body["label"] == "positive" and body["model_version"] == "3"
        assert body["latency_ms"] >= 0 and body["request_id"]
        status, body = predict(gateway.url, "the and of a")
        assert status == 200 and body["known_words"] == 0 and body["warning"] == NO_WORD_WARNING
        sent = endpoint.requests[-1]
        assert sent["name"] == "sentiment" and json.loads(sent["body"]) == {"review": "the and of a"}
        status, headers, raw = request(f"{gateway.url}/predict", "POST", b"great great", {"Content-Type": "text/plain"})
        assert status == 200 and json.loads(raw)["label"] == "positive"
        assert headers["apigw-requestid"] and headers["x-request-id"] == json.loads(raw)["request_id"]
        preflight = {"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
        status, headers, raw = request(f"{gateway.url}/predict", "OPTIONS", headers=preflight)
        assert status == 204 and raw == b""
        assert (
            headers["access-control-allow-origin"] == "*" and headers["access-control-allow-methods"] == "POST,OPTIONS"
        )
        status, headers, raw = request(f"{gateway.url}/predict", "GET")
        assert status == 405 and headers["allow"] == "POST, OPTIONS"


@pytest.mark.e2e
def test_bad_input_is_a_one_line_4xx_never_a_5xx(gateway: RunningGateway) -> None:
    with running_endpoint() as endpoint:
        gateway.point("sentiment", endpoint.url, "1")
        cases = [
            (b"", "application/json", 400),
            (b"   ", "text/plain", 400),
            (b'{"review": 3}', "application/json", 400),
            (b"[1, 2]", "application/json", 400),
            (b'{"review": "caf\xe9"}', "application/json", 400),  # invalid UTF-8
            (b'{"review": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "application/json", 400),  # deeply nested
            (json.dumps({"review": "x" * 20_001}).encode(), "application/json", 400),
            (b"x" * (2 << 20), "text/plain", 413),  # over the body limit
        ]
        for body, content_type, expected in cases:
            status, _, raw = request(f"{gateway.url}/predict", "POST", body, {"Content-Type": content_type})
            assert status == expected, (body[:40], raw)
            assert raw.count(b"\n") == 0 and json.loads(raw)["message"]
        assert endpoint.requests == []


@pytest.mark.e2e
def test_no_target_cleared_target_and_gone_endpoint_are_503(gateway: RunningGateway) -> None:
    status, body = predict(gateway.url, "A wonderful film")
    assert status == 503 and body["error"] == "no model is deployed"
    with running_endpoint() as endpoint:
        gateway.point("sentiment", endpoint.url, "1")
        assert predict(gateway.url, "great")[0] == 200
        gateway.point(None, None, None)
        status, body = predict(gateway.url, "great")
        assert status == 503 and body["error"] == "no model is deployed"
        gateway.point("sentiment", endpoint.url, "1")
    started = time.monotonic()
    status, body = predict(gateway.url, "great")  # the endpoint server has stopped
    assert status == 503 and body["error"] == "no model is deployed" and time.monotonic() - started < 1.0


@pytest.mark.e2e
def test_a_new_configuration_gets_fresh_environments_and_in_flight_requests_finish(
    gateway: RunningGateway,
) -> None:
    """Like UpdateFunctionConfiguration: requests already running on the old environments finish there (against the
    old endpoint), new ones go to fresh environments, the old environments retire."""
    with running_endpoint(names=("blue", "green")) as endpoint:
        gateway.point("slow", endpoint.url, "1")  # "slow" answers after 0.3 s
        before = environment_pids(gateway)
        assert len(before) == 4
        with ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(predict, gateway.url, "wonderful") for _ in range(4)]
            time.sleep(0.1)  # they are running now
            target = write_api_target(gateway.state_path, ApiTarget("green", endpoint.url, "2"))
            started = time.monotonic()
            gateway.api._wait_switched(gateway.url, target)
            assert all(future.done() for future in slow)  # the switch waited for them
            assert [future.result()[1]["model_version"] for future in slow] == ["1"] * 4
        assert time.monotonic() - started < 10
        status, body = predict(gateway.url, "wonderful")
        assert status == 200 and body["model_version"] == "2"
        deadline = time.monotonic() + 10
        while environment_pids(gateway) & before and time.monotonic() < deadline:
            time.sleep(0.1)
        after = environment_pids(gateway)
        assert len(after) == 4 and not after & before  # retired and replaced


@pytest.mark.e2e
def test_repointing_under_load_drops_no_request(gateway: RunningGateway) -> None:
    """Blue/green: switch the state file while requests run; once the switch is complete, stop the old endpoint."""
    with running_endpoint(names=("sentiment",)) as blue, running_endpoint(names=("sentiment",)) as green:
        gateway.point("sentiment", blue.url, "1")
        stop = threading.Event()
        results: list[tuple[int, str | None]] = []

        def client() -> None:
            with httpx.Client(timeout=30, trust_env=False) as http:
                while not stop.is_set():
                    response = http.post(f"{gateway.url}/predict", json={"review": "wonderful and excellent"})
                    results.append((response.status_code, response.json().get("model_version")))

        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(client) for _ in range(4)]
            deadline = time.monotonic() + 20
            while len(results) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            gateway.point("sentiment", green.url, "2")  # returns once nothing runs against blue
            blue.stop()  # no grace period
            switched = len(results)
            while len(results) < switched + 60 and time.monotonic() < deadline + 20:
                time.sleep(0.01)
            stop.set()
            for future in futures:
                future.result()
        failures = [r for r in results if r[0] != 200]
        assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"
        assert {v for _, v in results[:20]} == {"1"} and {v for _, v in results[-20:]} == {"2"}


@pytest.mark.e2e
def test_a_crashed_environment_is_replaced(gateway: RunningGateway) -> None:
    """kill -9 of an execution environment: the requests it held fail (502), the next ones get fresh environments."""
    with running_endpoint() as endpoint:
        gateway.point("sentiment", endpoint.url, "1")
        assert predict(gateway.url, "great")[0] == 200
        victim = sorted(environment_pids(gateway))[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        statuses = []
        while time.monotonic() < deadline:
            status, body = predict(gateway.url, "great")
            statuses.append(status)
            if status == 200 and len(statuses) > 1:
                break
        assert statuses[-1] == 200 and set(statuses) <= {200, 502}, statuses
        assert victim not in environment_pids(gateway)
        deadline = time.monotonic() + 10
        while json.loads(request(f"{gateway.url}/healthz")[2])["switching"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not json.loads(request(f"{gateway.url}/healthz")[2])["switching"]  # the fresh environments are warm
        gateway.point("sentiment", endpoint.url, "2")
        assert predict(gateway.url, "great")[1]["model_version"] == "2"


@pytest.mark.e2e
def test_through_the_real_endpoint_server_and_a_real_model(
    gateway: RunningGateway, settings: Settings, tiny: Any, tmp_path: Path
) -> None:
    """Page → gateway → Lambda handler → boto3 → ``python -m serve.endpoint`` → the tiny trained model."""
    from backends.local.endpoints import start_endpoint_server
    from core import processes

    server = start_endpoint_server(settings, tiny.model_dir, tmp_path / "endpoint", "sentiment-v1")
    try:
        gateway.point("sentiment-v1", str(server.url), "1")
        for review in [*tiny.test_reviews[:4], "<br /><br />"]:
            status, body = predict(gateway.url, review)
            assert status == 200, body
            direct = httpx.post(f"{server.url}/invocations", json={"review": review}, trust_env=False).json()
            assert (body["label"], body["score"], body["model_version"]) == (direct["label"], direct["score"], "1")
            assert body.get("warning") == direct.get("warning")
    finally:
        processes.stop(server, grace_s=10)
