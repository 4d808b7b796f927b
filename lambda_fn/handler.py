"""API Gateway → SageMaker Lambda handler: one review in, its sentiment out.

Runs unchanged on AWS Lambda (HTTP API payload 2.0 or REST API payload 1.0 proxy events) and in process
inside the local API gateway (``serve.gateway``). It depends only on what the Lambda Python runtime ships:
boto3 and the standard library.

Environment (read on every request, so a re-pointed configuration applies at once):

* ``ENDPOINT_NAME`` — the SageMaker endpoint to invoke; unset → 503 "no model is deployed".
* ``MODEL_VERSION`` — optional; reported when the endpoint does not name its version itself.
* ``ALLOW_ORIGIN`` — CORS ``Access-Control-Allow-Origin`` (default ``*``).
* ``MAX_REVIEW_CHARS`` — longest accepted review (default 20000).
* ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` — optional sagemaker-runtime URL (the local endpoint server).

Response body: ``{"label": "positive"|"negative", "score": float, "confidence": float,
"model_version": str|null, "latency_ms": float, "request_id": str}`` (``score`` is what the endpoint sent,
P(positive); ``confidence`` is the probability of the given label); errors:
``{"error": str, "message": str, "request_id": str}``.

The local gateway can run concurrent requests against different targets without touching ``os.environ``:
:func:`environment` overrides these variables for the current thread/context only.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import contextvars
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

DEFAULT_MAX_REVIEW_CHARS = 20000
DEFAULT_REGION = "us-east-1"
NO_MODEL_MESSAGE = "no model is deployed"
_MAX_CACHED_CLIENTS = 8
_CLIENT_CONFIG = Config(
    connect_timeout=3,
    read_timeout=25,  # API Gateway gives up after 29-30 s; answer before it does
    retries={"total_max_attempts": 1},  # no blind retries: a 503 must be quick; the caller may retry
)

logger = logging.getLogger("sentiflow.lambda")
logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())

_overrides: contextvars.ContextVar[Mapping[str, str | None] | None] = contextvars.ContextVar(
    "sentiflow_lambda_env", default=None
)
_clients: collections.OrderedDict[tuple[str | None, str, str | None], Any] = collections.OrderedDict()
_clients_lock = threading.Lock()


class _HttpError(Exception):
    """An answer other than 200, raised inside the handler and turned into a response."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


# --- configuration ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Override the handler's environment variables for the current context (thread) only.

    A ``None`` value means "unset". Used by the local gateway so concurrent requests never see each other's
    target, and ``os.environ`` is never mutated while requests run.
    """
    token = _overrides.set(dict(values))
    try:
        yield
    finally:
        _overrides.reset(token)


def _env(name: str, default: str | None = None) -> str | None:
    overrides = _overrides.get()
    value = overrides[name] if overrides is not None and name in overrides else os.environ.get(name)
    return value if value not in (None, "") else default


def _override(name: str) -> str | None:
    overrides = _overrides.get()
    return overrides.get(name) if overrides is not None else None


def _int_env(name: str, default: int) -> int:
    try:
        return int(_env(name, str(default)) or default)
    except ValueError:
        return default


def _runtime_client() -> Any:
    """The sagemaker-runtime client for the current endpoint URL and region (one per container and key)."""
    endpoint_url = _env("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME") or _env("AWS_ENDPOINT_URL")
    region = _env("AWS_REGION") or _env("AWS_DEFAULT_REGION") or DEFAULT_REGION
    access_key = _override("AWS_ACCESS_KEY_ID")
    key = (endpoint_url, region, access_key)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
        credentials: dict[str, str | None] = {}
        if access_key:  # injected by the local gateway; on Lambda boto3 resolves the execution role itself
            credentials = {
                "aws_access_key_id": access_key,
                "aws_secret_access_key": _override("AWS_SECRET_ACCESS_KEY") or "local",
                "aws_session_token": _override("AWS_SESSION_TOKEN"),
            }
        session = boto3.session.Session(region_name=region, **credentials)  # sessions are not thread-safe
        client = session.client("sagemaker-runtime", endpoint_url=endpoint_url, config=_CLIENT_CONFIG)
        _clients[key] = client
        while len(_clients) > _MAX_CACHED_CLIENTS:
            _clients.popitem(last=False)
        return client


# --- the request -----------------------------------------------------------------------------------------


def _method(event: Mapping[str, Any]) -> str:
    http = (event.get("requestContext") or {}).get("http") or {}
    return str(http.get("method") or event.get("httpMethod") or "POST").upper()


def _header(event: Mapping[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _raw_body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as error:
            raise _HttpError(400, "bad request", "the request body is not valid base64") from error
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _review(event: Mapping[str, Any]) -> str:
    """The review text from a JSON body ``{"review": "…"}`` or a plain-text body."""
    try:
        text = _raw_body(event).decode("utf-8")
    except UnicodeDecodeError as error:
        raise _HttpError(400, "bad request", "the request body is not UTF-8 text") from error
    content_type = (_header(event, "content-type") or "").split(";")[0].strip().lower()
    looks_json = content_type.endswith("json") or text.lstrip().startswith("{")
    if looks_json:
        try:
            payload = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as error:
            if content_type.endswith("json"):
                raise _HttpError(400, "bad request", 'the body is not valid JSON; send {"review": "…"}') from error
            payload = text  # plain text that happens to start with "{"
        if isinstance(payload, dict):
            review = payload.get("review")
            if review is None:
                raise _HttpError(400, "bad request", 'the JSON body has no "review" field; send {"review": "…"}')
            if not isinstance(review, str):
                raise _HttpError(400, "bad request", 'the "review" field must be a string')
            text = review
        elif isinstance(payload, str):
            text = payload
        else:
            raise _HttpError(400, "bad request", 'send a JSON object {"review": "…"} or plain text')
    max_chars = _int_env("MAX_REVIEW_CHARS", DEFAULT_MAX_REVIEW_CHARS)
    if not text.strip():
        raise _HttpError(400, "empty review", "the review is empty; type a few sentences about a movie")
    if len(text) > max_chars:
        raise _HttpError(400, "review too long", f"the review has {len(text)} characters; the limit is {max_chars}")
    return text


# --- the endpoint's answer -------------------------------------------------------------------------------


def _prediction(raw: bytes) -> tuple[str, float, str | None]:
    """(label, score, model version or None) from the endpoint's JSON; ValueError when it is not one."""
    payload = json.loads(raw.decode("utf-8"))
    if isinstance(payload, dict) and "predictions" in payload:
        payload = payload["predictions"]
    if isinstance(payload, list):
        if len(payload) != 1:
            raise ValueError(f"expected one prediction, got {len(payload)}")
        payload = payload[0]
    if not isinstance(payload, dict):
        raise ValueError("the prediction is not a JSON object")
    label = payload.get("label")
    if label in (0, 1) and not isinstance(label, bool):
        label = "positive" if label == 1 else "negative"
    if not isinstance(label, str) or label.lower() not in ("positive", "negative"):
        raise ValueError(f"unexpected label {label!r}")
    score = payload.get("score", payload.get("probability"))
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValueError(f"unexpected score {score!r}")
    if not 0.0 <= float(score) <= 1.0:
        raise ValueError(f"score {score!r} is outside [0, 1]")
    version = payload.get("model_version")
    return label.lower(), float(score), (str(version) if version not in (None, "") else None)


def _version_from_attributes(attributes: str | None) -> str | None:
    """``model_version=3`` (or ``version=3``, or just ``3``) from SageMaker CustomAttributes."""
    if not attributes:
        return None
    for part in attributes.replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() in ("model_version", "version"):
            return value.strip() or None
    return attributes.strip() if "=" not in attributes else None


def _is_missing_endpoint(error: ClientError) -> bool:
    """True when the error means the endpoint does not exist, is not in service or is not reachable."""
    details = error.response.get("Error") or {}
    code = str(details.get("Code") or "")
    message = str(details.get("Message") or "").lower()
    status = (error.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if code == "ValidationException" and ("could not find" in message or "not found" in message):
        return True
    if code in ("ModelNotReadyException", "ServiceUnavailable", "ServiceUnavailableException", "404", "503"):
        return True
    return status in (404, 503)


def _invoke(review: str) -> tuple[str, float, str | None]:
    endpoint_name = _env("ENDPOINT_NAME")
    if not endpoint_name:
        raise _HttpError(503, NO_MODEL_MESSAGE, "the API is not pointed at a model endpoint; deploy a model first")
    try:
        response = _runtime_client().invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps({"review": review}),
        )
        raw = response["Body"].read()
    except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError) as error:
        raise _HttpError(503, NO_MODEL_MESSAGE, f"the model endpoint {endpoint_name!r} is not reachable") from error
    except ClientError as error:
        if _is_missing_endpoint(error):
            raise _HttpError(
                503,
                NO_MODEL_MESSAGE,
                f"the model endpoint {endpoint_name!r} does not exist or is not in service",
            ) from error
        raise
    label, score, version = _prediction(raw)
    version = version or _version_from_attributes(response.get("CustomAttributes")) or _env("MODEL_VERSION")
    return label, score, version


# --- the answer ------------------------------------------------------------------------------------------


def _cors_headers() -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": _env("ALLOW_ORIGIN", "*") or "*",
        "Access-Control-Allow-Methods": "POST,OPTIONS",
        "Access-Control-Allow-Headers": "content-type",
        "Access-Control-Max-Age": "600",
    }


def _response(status: int, payload: Mapping[str, Any] | None, request_id: str) -> dict[str, Any]:
    headers = {**_cors_headers(), "X-Request-Id": request_id, "Cache-Control": "no-store"}
    body = ""
    if payload is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(payload)
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}


def _log(request_id: str, event: Mapping[str, Any], status: int, started: float, **fields: Any) -> None:
    record = {
        "event": "predict",
        "request_id": request_id,
        "api_request_id": (event.get("requestContext") or {}).get("requestId"),
        "method": _method(event),
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "endpoint": _env("ENDPOINT_NAME"),
        **fields,
    }
    logger.log(logging.ERROR if status >= 500 and status != 503 else logging.INFO, json.dumps(record))


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point for API Gateway proxy events (payload 2.0 and 1.0)."""
    started = time.perf_counter()
    request_id = str(getattr(context, "aws_request_id", None) or uuid.uuid4())
    method = _method(event)
    if method == "OPTIONS":
        _log(request_id, event, 204, started)
        return _response(204, None, request_id)
    if method != "POST":
        _log(request_id, event, 405, started)
        response = _response(
            405, {"error": "method not allowed", "message": "use POST", "request_id": request_id}, request_id
        )
        response["headers"]["Allow"] = "POST, OPTIONS"
        return response
    try:
        label, score, version = _invoke(_review(event))
    except _HttpError as error:
        _log(request_id, event, error.status, started, error=error.error)
        payload = {"error": error.error, "message": error.message, "request_id": request_id}
        return _response(error.status, payload, request_id)
    except (ClientError, BotoCoreError, ValueError, KeyError, TypeError, OSError) as error:
        _log(request_id, event, 502, started, error=type(error).__name__, detail=str(error)[:300])
        return _bad_gateway(request_id)
    except Exception as error:  # noqa: BLE001 - the caller never sees a stack trace
        logger.exception(json.dumps({"event": "predict", "request_id": request_id, "status": 502}))
        _log(request_id, event, 502, started, error=type(error).__name__)
        return _bad_gateway(request_id)
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    _log(request_id, event, 200, started, label=label, model_version=version)
    payload = {
        "label": label,
        "score": score,
        "confidence": max(score, 1.0 - score),
        "model_version": version,
        "latency_ms": latency_ms,
        "request_id": request_id,
    }
    return _response(200, payload, request_id)


def _bad_gateway(request_id: str) -> dict[str, Any]:
    message = f"the model endpoint failed to answer; quote request id {request_id} when reporting this"
    return _response(502, {"error": "bad gateway", "message": message, "request_id": request_id}, request_id)
