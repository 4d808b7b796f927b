"""The API's Lambda: an API Gateway proxy event (payload 2.0 or 1.0) in, the SageMaker endpoint invoked, the answer out.

Only what the Lambda Python runtime ships. Configuration is the function's environment, read once per execution
environment: ``ENDPOINT_NAME`` (unset: 503 "no model is deployed"), ``MODEL_VERSION``, ``ALLOW_ORIGIN`` (CORS, default
``*``), ``MAX_REVIEW_CHARS`` (20000); boto3 reads the region, credentials and ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``.

Request: ``{"review": "…"}`` as JSON, or the review as plain text. Answer: ``{"label", "score", "confidence",
"known_words", ["warning"], "model_version", "latency_ms", "request_id"}``; errors are one JSON line ``{"error",
"message", "request_id"}``: 400 bad request, the model's own 4xx, 503 no reachable endpoint, 502 anything else.
"""

import base64
import binascii
import json
import logging
import os
import time
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, EndpointConnectionError

ENDPOINT_NAME = os.environ.get("ENDPOINT_NAME") or None
MODEL_VERSION = os.environ.get("MODEL_VERSION") or None
ALLOW_ORIGIN = os.environ.get("ALLOW_ORIGIN") or "*"
MAX_REVIEW_CHARS = int(os.environ.get("MAX_REVIEW_CHARS") or 20000)
NO_MODEL = "no model is deployed"
# One attempt, bounded waits: an unreachable endpoint is a quick 503, and a slow one answers before API Gateway's 30 s.
CONFIG = Config(connect_timeout=2, read_timeout=25, retries={"total_max_attempts": 1})
REGION = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"  # Lambda sets AWS_REGION
runtime = boto3.client("sagemaker-runtime", region_name=REGION, config=CONFIG)
logger = logging.getLogger(__name__)


class Reject(Exception):
    """An answer other than 200: ``status``, a short ``error`` code and a one-line ``message``."""

    def __init__(self, status, error, message):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def read_review(event):
    raw = event.get("body") or ""
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode("utf-8")
        text = data.decode("utf-8")
    except (binascii.Error, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise Reject(400, "bad request", "the request body is not valid UTF-8 text") from error
    headers = {key.lower(): value for key, value in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "")
    if "json" in content_type or (not content_type.startswith("text/") and text.lstrip().startswith("{")):
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise Reject(400, "bad request", 'the body is not valid JSON; send {"review": "…"}') from error
        if not isinstance(payload, dict) or not isinstance(payload.get("review"), str):
            raise Reject(400, "bad request", 'send a JSON object with a string field "review": {"review": "…"}')
        text = payload["review"]
    if not text.strip():
        raise Reject(400, "empty review", "the review is empty; type a few sentences about a movie")
    if len(text) > MAX_REVIEW_CHARS:
        raise Reject(400, "review too long", f"the review has {len(text)} characters; the limit is {MAX_REVIEW_CHARS}")
    return text


def invoke(review):
    if not ENDPOINT_NAME:
        raise Reject(503, NO_MODEL, "the API is not pointed at a model endpoint; deploy a model first")
    try:
        response = runtime.invoke_endpoint(
            EndpointName=ENDPOINT_NAME,
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps({"review": review}),
        )
        return json.loads(response["Body"].read())
    except (EndpointConnectionError, ConnectionClosedError) as error:
        raise Reject(503, NO_MODEL, f"the model endpoint {ENDPOINT_NAME} is not reachable") from error
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        original = error.response.get("OriginalStatusCode")
        if code == "ModelError" and isinstance(original, int) and 400 <= original < 500:
            raise Reject(original, "rejected by the model", model_message(error.response)) from error
        if code in ("ValidationError", "ValidationException") and "not found" in str(error).lower():
            raise Reject(503, NO_MODEL, f"the model endpoint {ENDPOINT_NAME} does not exist") from error
        if code in ("ServiceUnavailable", "ModelNotReadyException"):
            raise Reject(503, NO_MODEL, f"the model endpoint {ENDPOINT_NAME} is not in service") from error
        raise


def model_message(response):
    """The model's one-line message from its ``{"error", "message", "status"}`` body (``OriginalMessage``)."""
    original = str(response.get("OriginalMessage") or "")
    try:
        message = json.loads(original).get("message")
    except (ValueError, AttributeError):
        message = None
    return " ".join(str(message or original or "the model rejected the review").split())[:500]


def answer(status, payload, request_id):
    headers = {
        "Access-Control-Allow-Origin": ALLOW_ORIGIN,
        "Access-Control-Allow-Methods": "POST,OPTIONS",
        "Access-Control-Allow-Headers": "content-type",
        "Access-Control-Max-Age": "600",
        "X-Request-Id": request_id,
    }
    if payload is not None:
        headers["Content-Type"] = "application/json"
    body = "" if payload is None else json.dumps({**payload, "request_id": request_id})
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}


def prediction(result, started):
    """The API's answer from the model's ``{"label", "score", "known_words", ["warning"]}``; ValueError if not one."""
    label, score = result.get("label"), result.get("score")
    if label not in ("positive", "negative") or type(score) not in (int, float) or not 0 <= score <= 1:
        raise ValueError(f"unexpected model answer {str(result)[:200]}")
    payload = {"label": label, "score": score, "confidence": max(score, 1 - score)}
    payload["known_words"] = result.get("known_words")
    if result.get("warning"):
        payload["warning"] = str(result["warning"])
    return {**payload, "model_version": MODEL_VERSION, "latency_ms": round((time.perf_counter() - started) * 1e3, 1)}


def handler(event, context):
    started = time.perf_counter()
    request_id = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method") or event.get("httpMethod")
    try:
        if method == "OPTIONS":
            status, payload, fields = 204, None, {}
        elif method != "POST":
            raise Reject(405, "method not allowed", "use POST /predict")
        else:
            status, payload = 200, prediction(invoke(read_review(event)), started)
            fields = {"label": payload["label"]}
    except Reject as error:
        status, payload, fields = error.status, {"error": error.error, "message": error.message}, {"error": error.error}
    except (ClientError, BotoCoreError, ValueError, KeyError, AttributeError, TypeError) as error:
        message = f"the model endpoint failed to answer; quote request id {request_id} when reporting this"
        status, payload = 502, {"error": "bad gateway", "message": message}
        fields = {"error": type(error).__name__, "detail": str(error)[:300]}
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    line = {"request_id": request_id, "status": status, "latency_ms": latency_ms, "endpoint": ENDPOINT_NAME, **fields}
    logger.log(logging.ERROR if status == 502 else logging.INFO, "PREDICT %s", json.dumps(line))
    return answer(status, payload, request_id)
