"""The Lambda handler, called as Lambda calls it (an event and a context), against real HTTP servers that speak the
SageMaker runtime protocol: the endpoint double (keyword model, faults on demand) and the real endpoint server with
the tiny model. Each test loads the handler module afresh with its environment, as a new execution environment."""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import lambda_fn.handler
from tests.fixtures.endpoint_double import NO_WORD_WARNING, EndpointDouble, running_endpoint

pytestmark = pytest.mark.e2e  # every test calls a real HTTP server on 127.0.0.1

_CLEARED = ("MODEL_VERSION", "ALLOW_ORIGIN", "MAX_REVIEW_CHARS", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN")


def configure(monkeypatch: pytest.MonkeyPatch, url: str, **env: str | None) -> ModuleType:
    """The handler module loaded in an environment like the deploy stage gives it (a fresh init phase)."""
    base = {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
        "ENDPOINT_NAME": "sentiment",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**base, **env}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return importlib.reload(lambda_fn.handler)


@pytest.fixture
def endpoint() -> Iterator[EndpointDouble]:
    with running_endpoint(names=("sentiment",)) as double:
        yield double


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, endpoint: EndpointDouble) -> Iterator[Callable[..., ModuleType]]:
    yield lambda **env: configure(monkeypatch, endpoint.url, **env)
    monkeypatch.undo()
    importlib.reload(lambda_fn.handler)  # leave a module configured by the process environment


def v2_event(body: str | None, *, method: str = "POST", content_type: str = "application/json", b64: bool = False):
    raw = base64.b64encode(body.encode()).decode() if b64 and body is not None else body
    return {
        "version": "2.0",
        "routeKey": f"{method} /predict",
        "rawPath": "/predict",
        "headers": {"content-type": content_type, "origin": "http://example.test"},
        "requestContext": {"http": {"method": method, "path": "/predict", "sourceIp": "127.0.0.1"}, "requestId": "a"},
        "body": raw,
        "isBase64Encoded": b64,
    }


def v1_event(body: str | None, *, method: str = "POST", b64: bool = False) -> dict:
    raw = base64.b64encode(body.encode()).decode() if b64 and body is not None else body
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "requestContext": {"httpMethod": method, "requestId": "api-req-2", "stage": "prod"},
        "body": raw,
        "isBase64Encoded": b64,
    }


def ctx(request_id: str = "req-123") -> Any:
    return SimpleNamespace(aws_request_id=request_id, function_name="f", get_remaining_time_in_millis=lambda: 30000)


def body_of(response: dict) -> dict:
    return json.loads(response["body"])


POSITIVE = json.dumps({"review": "A wonderful film, I loved every minute. Excellent acting."})
NEGATIVE = json.dumps({"review": "Awful and boring, the worst waste of two hours."})


def test_v2_event_answers_the_model_and_the_function_settings(load: Callable, endpoint: EndpointDouble) -> None:
    handler = load(MODEL_VERSION="7").handler
    response = handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 200
    body = body_of(response)
    assert body["label"] == "positive" and body["score"] == pytest.approx(0.92)
    assert body["confidence"] == pytest.approx(0.92) and body["known_words"] == 6
    assert "warning" not in body
    assert body["model_version"] == "7" and body["latency_ms"] >= 0 and body["request_id"] == "req-123"
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["headers"]["X-Request-Id"] == "req-123"
    sent = endpoint.requests[-1]
    assert sent["name"] == "sentiment"
    assert json.loads(sent["body"]) == {"review": json.loads(POSITIVE)["review"]}
    assert sent["headers"]["content-type"] == "application/json" and sent["headers"]["accept"] == "application/json"


def test_v1_event_base64_and_plain_text_bodies(load: Callable, endpoint: EndpointDouble) -> None:
    handler = load().handler
    negative = handler(v1_event(NEGATIVE), ctx())
    assert negative["statusCode"] == 200 and body_of(negative)["label"] == "negative"
    assert body_of(negative)["confidence"] == pytest.approx(0.92) and body_of(negative)["model_version"] is None
    for event in (v1_event(POSITIVE, b64=True), v2_event(POSITIVE, b64=True)):
        assert body_of(handler(event, ctx()))["label"] == "positive"
    text = handler(v2_event("Brilliant, a masterpiece.", content_type="text/plain"), ctx())
    assert text["statusCode"] == 200
    assert json.loads(endpoint.requests[-1]["body"]) == {"review": "Brilliant, a masterpiece."}
    curl = handler(v2_event(POSITIVE, content_type="application/x-www-form-urlencoded"), ctx())  # curl -d '{…}'
    assert body_of(curl)["label"] == "positive"
    braces = handler(v2_event("{great} film", content_type="text/plain"), ctx())  # text that starts with "{"
    assert braces["statusCode"] == 200


@pytest.mark.parametrize("review", ["the and of a", "<br /><br />"])
def test_a_review_the_model_knew_no_word_of_carries_its_warning(load: Callable, review: str) -> None:
    body = body_of(load().handler(v2_event(json.dumps({"review": review})), ctx()))
    assert body["known_words"] == 0 and body["warning"] == NO_WORD_WARNING and body["label"] == "positive"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (json.dumps({"review": ""}), "application/json", "empty"),
        (json.dumps({"review": "   \n "}), "application/json", "empty"),
        ("", "application/json", "valid JSON"),
        (None, "text/plain", "empty"),
        (json.dumps({"text": "x"}), "application/json", 'string field "review"'),
        (json.dumps({"review": 5}), "application/json", 'string field "review"'),
        (json.dumps({"review": ["a"]}), "application/json", 'string field "review"'),
        (json.dumps(["a wonderful film"]), "application/json", 'string field "review"'),
        ("{not json", "application/json", "valid JSON"),
        ('{"review": ' + "[" * 10_000 + "]" * 10_000 + "}", "application/json", "valid JSON"),
    ],
)
def test_bad_bodies_are_one_line_400s_that_never_reach_the_endpoint(
    load: Callable, endpoint: EndpointDouble, body: str | None, content_type: str, message: str
) -> None:
    response = load().handler(v2_event(body, content_type=content_type), ctx())
    assert response["statusCode"] == 400
    answer = body_of(response)
    assert message in answer["message"] and answer["request_id"] == "req-123"
    assert "\n" not in response["body"]
    assert endpoint.requests == []


def test_invalid_utf8_and_invalid_base64_are_400(load: Callable, endpoint: EndpointDouble) -> None:
    handler = load().handler
    event = v2_event(None, content_type="application/octet-stream")
    event.update(body=base64.b64encode(b'{"review": "caf\xe9"}').decode(), isBase64Encoded=True)
    assert body_of(handler(event, ctx()))["message"] == "the request body is not valid UTF-8 text"
    event.update(body="%%% not base64", isBase64Encoded=True)
    assert handler(event, ctx())["statusCode"] == 400
    assert endpoint.requests == []


def test_review_length_limit(load: Callable) -> None:
    handler = load(MAX_REVIEW_CHARS="100").handler
    response = handler(v2_event(json.dumps({"review": "good " * 21})), ctx())
    assert response["statusCode"] == 400 and "the limit is 100" in body_of(response)["message"]
    assert handler(v2_event(json.dumps({"review": "good " * 20})), ctx())["statusCode"] == 200
    assert load().handler(v2_event(json.dumps({"review": "x" * 20001})), ctx())["statusCode"] == 400


def test_no_endpoint_configured_is_503(load: Callable) -> None:
    response = load(ENDPOINT_NAME=None).handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 503 and body_of(response)["error"] == "no model is deployed"


@pytest.mark.parametrize("name", ["deleted-endpoint", "unavailable"])
def test_an_endpoint_that_is_missing_or_out_of_service_is_503(load: Callable, name: str) -> None:
    response = load(ENDPOINT_NAME=name).handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 503
    assert body_of(response)["error"] == "no model is deployed" and name in body_of(response)["message"]


def test_nothing_listening_is_503(load: Callable) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    response = load(AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=f"http://127.0.0.1:{port}").handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 503 and body_of(response)["error"] == "no model is deployed"


def test_a_model_client_error_is_that_4xx_with_the_models_message(load: Callable) -> None:
    response = load(ENDPOINT_NAME="rejects").handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 400
    assert body_of(response) == {
        "error": "rejected by the model",
        "message": "review is not valid UTF-8",
        "request_id": "req-123",
    }


@pytest.mark.parametrize("name", ["garbage", "broken"])
def test_other_faults_are_502_with_request_id_and_no_internals(
    load: Callable, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    handler = load(ENDPOINT_NAME=name).handler
    with caplog.at_level(logging.INFO):
        response = handler(v2_event(POSITIVE), ctx("req-502"))
    assert response["statusCode"] == 502
    body = body_of(response)
    assert body["request_id"] == "req-502" and "req-502" in body["message"]
    assert response["headers"]["X-Request-Id"] == "req-502"
    assert all(word not in response["body"] for word in ("Traceback", "File ", "ModelError", "500"))
    assert any('"status": 502' in r.getMessage() and "req-502" in r.getMessage() for r in caplog.records)


def test_request_id_falls_back_to_a_uuid(load: Callable) -> None:
    response = load().handler(v2_event(json.dumps({"review": ""})), None)
    assert len(body_of(response)["request_id"]) == 36


def test_cors_from_allow_origin_and_preflight(load: Callable, endpoint: EndpointDouble) -> None:
    response = load().handler(v2_event(POSITIVE), ctx())
    assert response["headers"]["Access-Control-Allow-Origin"] == "*"
    assert response["headers"]["Access-Control-Allow-Methods"] == "POST,OPTIONS"
    assert response["headers"]["Access-Control-Allow-Headers"] == "content-type"
    handler = load(ALLOW_ORIGIN="https://reviews.example").handler
    before = len(endpoint.requests)
    for event in (v2_event(None, method="OPTIONS"), v1_event(None, method="OPTIONS")):
        preflight = handler(event, ctx())
        assert preflight["statusCode"] == 204 and preflight["body"] == ""
        assert preflight["headers"]["Access-Control-Allow-Origin"] == "https://reviews.example"
    assert len(endpoint.requests) == before
    assert handler(v2_event(""), ctx())["headers"]["Access-Control-Allow-Origin"] == "https://reviews.example"


def test_other_methods_are_405(load: Callable) -> None:
    assert load().handler(v2_event(None, method="GET"), ctx())["statusCode"] == 405


def test_logs_are_one_line_per_request_without_the_review(load: Callable, caplog: pytest.LogCaptureFixture) -> None:
    secret = "wonderful SECRET-PHRASE excellent"
    handler = load().handler
    with caplog.at_level(logging.INFO):
        handler(v2_event(json.dumps({"review": secret})), ctx("req-log"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PREDICT ")]
    assert len(lines) == 1
    line = json.loads(lines[0].removeprefix("PREDICT "))
    assert line["request_id"] == "req-log" and line["status"] == 200 and "latency_ms" in line
    assert all("SECRET-PHRASE" not in r.getMessage() for r in caplog.records)


def test_through_the_real_endpoint_server_and_the_tiny_model(
    monkeypatch: pytest.MonkeyPatch, settings: Any, tiny: Any, tmp_path: Path
) -> None:
    """The handler against ``python -m serve.endpoint`` (started as a deploy starts it): the container's answer,
    passed through."""
    import httpx

    from backends.local.endpoints import start_endpoint_server
    from core import processes

    server = start_endpoint_server(settings, tiny.model_dir, tmp_path / "endpoint", "sentiment-v1")
    try:
        handler = configure(monkeypatch, str(server.url), ENDPOINT_NAME="sentiment-v1", MODEL_VERSION="1").handler
        for review in [*tiny.test_reviews[:4], "the and of a"]:
            response = handler(v2_event(json.dumps({"review": review})), ctx())
            assert response["statusCode"] == 200, response
            body = body_of(response)
            direct = httpx.post(f"{server.url}/invocations", json={"review": review}, trust_env=False).json()
            assert body["label"] == direct["label"] and body["score"] == direct["score"]
            assert body["known_words"] == direct.get("known_words") and body.get("warning") == direct.get("warning")
            assert body["model_version"] == "1"
        other = configure(monkeypatch, str(server.url), ENDPOINT_NAME="sentiment-v0").handler
        assert other(v2_event(POSITIVE), ctx())["statusCode"] == 503  # a name this server does not serve
    finally:
        processes.stop(server, grace_s=10)
        importlib.reload(lambda_fn.handler)
