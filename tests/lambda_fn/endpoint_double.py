"""A real HTTP server on 127.0.0.1 that speaks the SageMaker runtime invocations contract.

``POST /endpoints/{name}/invocations`` with ``{"review": "…"}`` answers ``{"label", "score"}`` decided by
keywords, and the model version in ``X-Amzn-SageMaker-Custom-Attributes``. A test double at the network
boundary for the handler, gateway and page tests (the real endpoint server is exercised by the serving tests).

Special endpoint names make it misbehave: ``garbage`` (200 with a non-JSON body), ``unavailable`` (503),
``broken`` (500), ``slow`` (answers after 0.3 s); a name not in ``names`` gets the 400 ValidationException
that SageMaker sends for an unknown endpoint.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
POSITIVE_WORDS = ("great", "wonderful", "loved", "excellent", "masterpiece", "brilliant", "good")
NEGATIVE_WORDS = ("awful", "terrible", "boring", "waste", "worst", "bad", "hated")


def keyword_prediction(review: str) -> dict[str, object]:
    text = review.lower()
    positive = sum(text.count(w) for w in POSITIVE_WORDS)
    negative = sum(text.count(w) for w in NEGATIVE_WORDS)
    score = 0.92 if positive > negative else 0.08 if negative > positive else 0.5
    return {"label": "positive" if score >= 0.5 else "negative", "score": score}


@dataclass
class EndpointDouble:
    """A running double; ``url`` is what ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` should be."""

    server: ThreadingHTTPServer
    version: str
    names: set[str]
    requests: list[dict[str, object]] = field(default_factory=list)
    response_style: str = "plain"  # "plain" | "predictions" | "list"

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_class(double_ref: list[EndpointDouble]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            self._send(200 if self.path == "/ping" else 404, b"{}", {"Content-Type": "application/json"})

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            double = double_ref[0]
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = _PATH.match(self.path)
            if not match:
                self._send(404, b'{"error": "no such path"}', {"Content-Type": "application/json"})
                return
            name = match.group(1)
            double.requests.append({"name": name, "headers": dict(self.headers), "body": raw})
            if name == "garbage":
                self._send(200, b"<html>definitely not json", {"Content-Type": "text/html"})
                return
            if name == "unavailable":
                self._send(503, b'{"error": "warming up"}', {"Content-Type": "application/json"})
                return
            if name == "broken":
                self._send(500, b'{"error": "model crashed"}', {"Content-Type": "application/json"})
                return
            if name not in double.names and name != "slow":
                body = {
                    "__type": "ValidationException",
                    "message": f"Endpoint {name} of account local not found.",
                }
                headers = {"Content-Type": "application/json", "x-amzn-ErrorType": "ValidationException"}
                self._send(400, json.dumps(body).encode(), headers)
                return
            if name == "slow":
                time.sleep(0.3)
            prediction = keyword_prediction(json.loads(raw)["review"])
            payload: object = prediction
            if double.response_style == "predictions":
                payload = {"predictions": [prediction]}
            elif double.response_style == "list":
                payload = [prediction]
            headers = {
                "Content-Type": "application/json",
                "X-Amzn-SageMaker-Custom-Attributes": f"model_version={double.version}",
            }
            self._send(200, json.dumps(payload).encode(), headers)

    return Handler


@contextlib.contextmanager
def running_endpoint(version: str = "1", names: tuple[str, ...] = ("sentiment",)) -> Iterator[EndpointDouble]:
    """Start a double on a free loopback port; stop it on exit."""
    ref: list[EndpointDouble] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(ref))
    server.daemon_threads = True
    double = EndpointDouble(server=server, version=version, names=set(names))
    ref.append(double)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="endpoint-double", daemon=True)
    thread.start()
    try:
        yield double
    finally:
        with contextlib.suppress(Exception):
            double.stop()
        thread.join(timeout=5)


# --- client helpers (no proxies: everything is on 127.0.0.1) ---------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def predict(base: str, review: str) -> tuple[int, dict]:
    status, _, raw = request(
        f"{base}/predict",
        "POST",
        json.dumps({"review": review}).encode(),
        {"Content-Type": "application/json"},
    )
    return status, json.loads(raw)
