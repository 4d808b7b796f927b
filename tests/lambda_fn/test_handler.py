"""The Lambda handler against a real HTTP server that speaks the SageMaker invocations contract."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from lambda_fn import handler as handler_module
from lambda_fn.handler import environment, handler
from tests.fixtures.endpoint_double import EndpointDouble, running_endpoint

pytestmark = pytest.mark.e2e  # every test calls a real HTTP endpoint double


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[EndpointDouble]:
    with running_endpoint(version="7", names=("sentiment",)) as double:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", double.url)
        monkeypatch.setenv("ENDPOINT_NAME", "sentiment")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("MODEL_VERSION", "ALLOW_ORIGIN", "MAX_REVIEW_CHARS", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        yield double


def v2_event(
    body: str | None, *, method: str = "POST", content_type: str = "application/json", b64: bool = False
) -> dict:
    raw = body
    if b64 and body is not None:
        raw = base64.b64encode(body.encode()).decode()
    return {
        "version": "2.0",
        "routeKey": f"{method} /predict",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {"content-type": content_type, "origin": "http://example.test"},
        "requestContext": {
            "http": {"method": method, "path": "/predict", "sourceIp": "127.0.0.1"},
            "requestId": "api-req-1",
        },
        "body": raw,
        "isBase64Encoded": b64,
    }


def v1_event(body: str | None, *, method: str = "POST", b64: bool = False) -> dict:
    raw = body
    if b64 and body is not None:
        raw = base64.b64encode(body.encode()).decode()
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


def test_v2_event_answers_label_score_version_and_latency(endpoint: EndpointDouble) -> None:
    response = handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 200
    body = body_of(response)
    assert body["label"] == "positive"
    assert body["score"] == pytest.approx(0.92)
    assert body["confidence"] == pytest.approx(0.92)
    assert body["model_version"] == "7"  # from CustomAttributes
    assert body["latency_ms"] >= 0
    assert body["request_id"] == "req-123"
    assert response["headers"]["Content-Type"] == "application/json"
    sent = endpoint.requests[-1]
    assert sent["name"] == "sentiment"
    assert json.loads(sent["body"]) == {"review": json.loads(POSITIVE)["review"]}
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["Accept"] == "application/json"


def test_v1_event_and_base64_bodies(endpoint: EndpointDouble) -> None:
    negative = handler(v1_event(NEGATIVE), ctx())
    assert negative["statusCode"] == 200
    assert body_of(negative)["label"] == "negative"
    assert body_of(negative)["confidence"] == pytest.approx(0.92)
    for event in (v1_event(POSITIVE, b64=True), v2_event(POSITIVE, b64=True)):
        assert body_of(handler(event, ctx()))["label"] == "positive"


def test_plain_text_body(endpoint: EndpointDouble) -> None:
    response = handler(v2_event("Brilliant, a masterpiece.", content_type="text/plain"), ctx())
    assert response["statusCode"] == 200
    assert json.loads(endpoint.requests[-1]["body"]) == {"review": "Brilliant, a masterpiece."}


@pytest.mark.parametrize("style", ["predictions", "list"])
def test_tolerates_wrapped_predictions(endpoint: EndpointDouble, style: str) -> None:
    endpoint.response_style = style
    assert body_of(handler(v2_event(NEGATIVE), ctx()))["label"] == "negative"


def test_model_version_from_env_when_the_endpoint_names_none(
    endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module, "_version_from_attributes", lambda attributes: None)
    monkeypatch.setenv("MODEL_VERSION", "42")
    assert body_of(handler(v2_event(POSITIVE), ctx()))["model_version"] == "42"


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"review": ""}),
        json.dumps({"review": "   \n "}),
        "",
        None,
        json.dumps({"text": "x"}),
        "{not json",
    ],
)
def test_empty_or_malformed_review_is_400(endpoint: EndpointDouble, body: str | None) -> None:
    before = len(endpoint.requests)
    response = handler(v2_event(body), ctx())
    assert response["statusCode"] == 400
    assert body_of(response)["request_id"] == "req-123"
    assert len(endpoint.requests) == before  # never reached the endpoint


def test_oversize_review_is_400(endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_REVIEW_CHARS", "100")
    response = handler(v2_event(json.dumps({"review": "good " * 21})), ctx())
    assert response["statusCode"] == 400
    assert "limit is 100" in body_of(response)["message"]
    assert handler(v2_event(json.dumps({"review": "good " * 20})), ctx())["statusCode"] == 200


def test_default_limit_is_20000_chars(endpoint: EndpointDouble) -> None:
    assert handler(v2_event(json.dumps({"review": "x" * 20001})), ctx())["statusCode"] == 400


def test_endpoint_name_unset_is_503(endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENDPOINT_NAME")
    response = handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 503
    assert body_of(response)["error"] == "no model is deployed"


def test_unknown_endpoint_is_503(endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", "deleted-endpoint")
    response = handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 503
    assert body_of(response)["error"] == "no model is deployed"
    assert "deleted-endpoint" in body_of(response)["message"]


def test_endpoint_answering_503_is_503(endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", "unavailable")
    assert handler(v2_event(POSITIVE), ctx())["statusCode"] == 503


def test_nothing_listening_is_503(endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{port}")
    response = handler(v2_event(POSITIVE), ctx())
    assert response["statusCode"] == 503
    assert body_of(response)["error"] == "no model is deployed"


@pytest.mark.parametrize("name", ["garbage", "broken"])
def test_other_faults_are_502_with_request_id_and_no_traceback(
    endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", name)
    with caplog.at_level(logging.INFO, logger="sentiflow.lambda"):
        response = handler(v2_event(POSITIVE), ctx("req-502"))
    assert response["statusCode"] == 502
    body = body_of(response)
    assert body["request_id"] == "req-502"
    assert "req-502" in body["message"]
    assert response["headers"]["X-Request-Id"] == "req-502"
    assert "Traceback" not in response["body"] and "File " not in response["body"]
    assert any('"status": 502' in r.getMessage() and "req-502" in r.getMessage() for r in caplog.records)


def test_request_id_falls_back_to_a_uuid(endpoint: EndpointDouble) -> None:
    response = handler(v2_event(json.dumps({"review": ""})), None)
    assert len(body_of(response)["request_id"]) == 36


def test_cors_headers_and_preflight(endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    response = handler(v2_event(POSITIVE), ctx())
    assert response["headers"]["Access-Control-Allow-Origin"] == "*"
    assert response["headers"]["Access-Control-Allow-Methods"] == "POST,OPTIONS"
    assert response["headers"]["Access-Control-Allow-Headers"] == "content-type"
    monkeypatch.setenv("ALLOW_ORIGIN", "https://reviews.example")
    before = len(endpoint.requests)
    for event in (v2_event(None, method="OPTIONS"), v1_event(None, method="OPTIONS")):
        preflight = handler(event, ctx())
        assert preflight["statusCode"] == 204
        assert preflight["body"] == ""
        assert preflight["headers"]["Access-Control-Allow-Origin"] == "https://reviews.example"
        assert preflight["headers"]["Access-Control-Allow-Methods"] == "POST,OPTIONS"
    assert len(endpoint.requests) == before
    error = handler(v2_event("", method="POST"), ctx())
    assert error["headers"]["Access-Control-Allow-Origin"] == "https://reviews.example"


def test_other_methods_are_405(endpoint: EndpointDouble) -> None:
    response = handler(v2_event(None, method="GET"), ctx())
    assert response["statusCode"] == 405
    assert response["headers"]["Allow"] == "POST, OPTIONS"


def test_logs_are_json_without_the_review(endpoint: EndpointDouble, caplog: pytest.LogCaptureFixture) -> None:
    secret = "wonderful SECRET-PHRASE excellent"
    with caplog.at_level(logging.INFO, logger="sentiflow.lambda"):
        handler(v2_event(json.dumps({"review": secret})), ctx("req-log"))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sentiflow.lambda"]
    assert lines and lines[-1]["request_id"] == "req-log"
    assert lines[-1]["status"] == 200 and "latency_ms" in lines[-1]
    assert all("SECRET-PHRASE" not in r.getMessage() for r in caplog.records)


def test_environment_override_is_per_context(endpoint: EndpointDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENDPOINT_NAME")
    with environment({"ENDPOINT_NAME": "sentiment", "MODEL_VERSION": "9"}):
        assert handler(v2_event(POSITIVE), ctx())["statusCode"] == 200
    assert handler(v2_event(POSITIVE), ctx())["statusCode"] == 503
    monkeypatch.setenv("ENDPOINT_NAME", "sentiment")
    with environment({"ENDPOINT_NAME": None}):  # None means unset, whatever the process env says
        assert handler(v2_event(POSITIVE), ctx())["statusCode"] == 503


def test_client_is_reused_per_endpoint_url(endpoint: EndpointDouble) -> None:
    first = handler_module._runtime_client()
    assert handler_module._runtime_client() is first
    with environment({"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://127.0.0.1:9"}):
        assert handler_module._runtime_client() is not first
