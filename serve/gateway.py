"""The local API gateway: the web page plus ``POST /predict`` through the real Lambda handler, in process.

Each HTTP request becomes an API Gateway HTTP API (payload 2.0) proxy event and is handed to
:func:`lambda_fn.handler.handler`, as API Gateway + Lambda would on AWS. The target endpoint comes from
a small JSON state file (``<state_dir>/api.json``, see :class:`ApiTarget`) that is re-read whenever it
changes, so the "Lambda/API update" stage re-points a running gateway by rewriting that file — no restart.

Concurrency during a switch: every request takes one snapshot of the target and runs the handler with it
(``lambda_fn.handler.environment`` overrides the handler's variables for that thread only; ``os.environ`` is
never mutated). A request whose snapshot went stale while it ran, and that failed because its endpoint went
away, is retried once against the new target, so requests in flight during a blue/green switch do not fail.

Routes: ``GET /`` (the page), ``GET /app.js``, ``GET /style.css``, ``GET /healthz``, ``POST /predict``,
``OPTIONS /predict``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.config import Settings
from core.errors import SentiflowError
from core.io import atomic_write_json, read_json
from lambda_fn.handler import environment, handler

logger = logging.getLogger("sentiflow.api")

API_STATE_FILE = "api.json"
API_SERVER_FILE = "api-server.json"
FUNCTION_NAME = "sentiflow-api-local"
LAMBDA_TIMEOUT_MS = 30_000
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_DRAIN_LIMIT_BYTES = 16 << 20
_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded")
#: Credentials for the local endpoint server, which does not check signatures (never real AWS keys).
_LOCAL_AWS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": "us-east-1"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --- the target ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiTarget:
    """What the API points at: the content of ``<state_dir>/api.json``."""

    endpoint_name: str | None
    endpoint_url: str | None
    model_version: str | None = None
    updated_at: str | None = None

    @property
    def deployed(self) -> bool:
        return bool(self.endpoint_name and self.endpoint_url)

    def handler_env(self) -> dict[str, str | None]:
        """The handler's environment for a request against this target."""
        return {
            "ENDPOINT_NAME": self.endpoint_name if self.deployed else None,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.endpoint_url,
            "MODEL_VERSION": self.model_version,
            **_LOCAL_AWS,
        }


NO_TARGET = ApiTarget(endpoint_name=None, endpoint_url=None)


def api_state_path(settings: Settings) -> Path:
    return settings.state_dir / API_STATE_FILE


def api_server_path(settings: Settings) -> Path:
    return settings.state_dir / API_SERVER_FILE


def read_api_target(path: Path) -> ApiTarget:
    """The target in ``path``; :data:`NO_TARGET` when the file is absent; SentiflowError if malformed."""
    try:
        payload = read_json(path)
    except FileNotFoundError:
        return NO_TARGET
    except (OSError, ValueError) as error:
        raise SentiflowError(f"API state file {path} is unreadable ({error}); delete it and redeploy") from None
    if not isinstance(payload, dict):
        raise SentiflowError(f"API state file {path} does not hold a JSON object; delete it and redeploy")
    version = payload.get("model_version")
    return ApiTarget(
        endpoint_name=payload.get("endpoint_name") or None,
        endpoint_url=payload.get("endpoint_url") or None,
        model_version=str(version) if version not in (None, "") else None,
        updated_at=payload.get("updated_at"),
    )


def write_api_target(path: Path, target: ApiTarget) -> ApiTarget:
    """Atomically replace the target (a running gateway uses it from its next request); return it stamped."""
    if target.endpoint_url is not None:
        parts = urlsplit(target.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SentiflowError(f"endpoint URL {target.endpoint_url!r} is not an http(s) URL")
    stamped = ApiTarget(target.endpoint_name, target.endpoint_url, target.model_version, _now())
    atomic_write_json(path, asdict(stamped))
    return stamped


class TargetWatcher:
    """The current target, re-read only when the state file's stat signature changes (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._target = NO_TARGET

    def get(self) -> ApiTarget:
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            signature = None
        with self._lock:
            if signature != self._signature:
                try:
                    self._target = read_api_target(self.path) if signature else NO_TARGET
                    self._signature = signature
                except SentiflowError as error:  # keep serving the last good target
                    logger.warning(json.dumps({"event": "api-state-unreadable", "error": str(error)}))
            return self._target


# --- the Lambda context ----------------------------------------------------------------------------------


class LocalLambdaContext:
    """The parts of the AWS Lambda context object that handlers use."""

    function_name = FUNCTION_NAME
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION_NAME}"
    memory_limit_in_mb = 256
    log_group_name = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name = "local"

    def __init__(self, aws_request_id: str, timeout_ms: int = LAMBDA_TIMEOUT_MS) -> None:
        self.aws_request_id = aws_request_id
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def build_event(
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    source_ip: str,
    request_id: str,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) proxy event for one request."""
    content_type = headers.get("content-type", "")
    is_text = not content_type or content_type.startswith(_TEXT_TYPES)
    try:
        text = body.decode("utf-8") if is_text else None
    except UnicodeDecodeError:
        text = None
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": text is None,
    }
    if body:
        event["body"] = text if text is not None else base64.b64encode(body).decode("ascii")
    return event


# --- the server ------------------------------------------------------------------------------------------


class GatewayServer(ThreadingHTTPServer):
    """A threading HTTP server that answers like API Gateway + the sentiflow Lambda."""

    daemon_threads = False
    block_on_close = True  # server_close() waits for requests in flight

    def __init__(self, state_path: Path, host: str = "127.0.0.1", port: int = 0, max_body_bytes: int = 1 << 20):
        try:
            super().__init__((host, port), GatewayHandler)
        except OSError as error:
            raise SentiflowError(
                f"cannot listen on {host}:{port} ({error.strerror}); pass another --port (0 picks a free "
                "one) or set SENTIFLOW_API_PORT"
            ) from None
        self.watcher = TargetWatcher(state_path)
        self.max_body_bytes = max_body_bytes
        self.started_at = _now()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{host}:{self.port}"

    def invoke(self, event: dict[str, Any], request_id: str) -> tuple[dict[str, Any], ApiTarget]:
        """Run the handler against the current target; retry once on a 503 if the target changed meanwhile."""
        target = self.watcher.get()
        response = self._call(event, request_id, target)
        if response.get("statusCode") == 503:
            latest = self.watcher.get()
            if latest != target and latest.deployed:
                target = latest
                response = self._call(event, request_id, target)
        return response, target

    @staticmethod
    def _call(event: dict[str, Any], request_id: str, target: ApiTarget) -> dict[str, Any]:
        with environment(target.handler_env()):
            return handler(event, LocalLambdaContext(request_id))


class GatewayHandler(BaseHTTPRequestHandler):
    """One request: a static file, the health check or a Lambda invocation."""

    server: GatewayServer
    server_version = "sentiflow-api"
    sys_version = ""
    timeout = 60  # a silent client does not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the stdlib's text log; requests go to the JSON access log."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        started = time.perf_counter()
        path = urlsplit(self.path).path
        if path == "/healthz":
            target = self.server.watcher.get()
            payload = {
                "status": "ok",
                "pid": os.getpid(),
                "url": self.server.url,
                "started_at": self.server.started_at,
                "endpoint_name": target.endpoint_name if target.deployed else None,
                "model_version": target.model_version if target.deployed else None,
            }
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, started)
            return
        if path in _STATIC:
            name, content_type = _STATIC[path]
            data = resources.files("web").joinpath(name).read_bytes()
            headers = {
                "Content-Type": content_type,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            }
            self._send(200, data, headers, started)
            return
        self._json_error(404, "not found", f"no page at {path}; open / or POST /predict", started)

    do_HEAD = do_GET  # noqa: N815 - stdlib naming (the body is written but HEAD clients ignore it)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._lambda("POST")

    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib naming
        self._lambda("OPTIONS")

    def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
        self._json_error(405, "method not allowed", "use POST /predict", time.perf_counter(), close=True)

    do_DELETE = do_PATCH = do_PUT  # noqa: N815 - stdlib naming

    def _lambda(self, method: str) -> None:
        started = time.perf_counter()
        parts = urlsplit(self.path)
        if parts.path != "/predict":
            self._json_error(
                404, "not found", f"no route {method} {parts.path}; use POST /predict", started, close=True
            )
            return
        body = self._read_body(started)
        if body is None:
            return
        request_id = str(uuid.uuid4())
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        event = build_event(method, parts.path, parts.query, headers, body, self.client_address[0], request_id)
        try:
            response, target = self.server.invoke(event, request_id)
            status = int(response.get("statusCode", 502))
            payload = response.get("body") or ""
            data = base64.b64decode(payload) if response.get("isBase64Encoded") else str(payload).encode("utf-8")
            out_headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
        except Exception:  # noqa: BLE001 - like API Gateway: a Lambda fault is a 502, never a traceback
            logger.exception(json.dumps({"event": "lambda-fault", "request_id": request_id}))
            self._json_error(502, "bad gateway", f"the API failed; quote request id {request_id}", started)
            return
        self._send(status, data, out_headers, started, request_id=request_id, endpoint=target.endpoint_name)

    def _read_body(self, started: float) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._json_error(
                411,
                "length required",
                "send a Content-Length (chunked bodies are not supported)",
                started,
                close=True,
            )
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._json_error(400, "bad request", "Content-Length is not a number", started, close=True)
            return None
        if length > self.server.max_body_bytes:
            self._drain(length)  # so the client gets to read the answer instead of a reset connection
            message = f"the request body has {length} bytes; the limit is {self.server.max_body_bytes}"
            self._json_error(413, "payload too large", message, started, close=True)
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _drain(self, length: int) -> None:
        """Read and drop an unwanted body (at most ``_DRAIN_LIMIT_BYTES``; the connection then closes)."""
        remaining = min(length, _DRAIN_LIMIT_BYTES)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                return
            remaining -= len(chunk)

    def _json_error(self, status: int, error: str, message: str, started: float, *, close: bool = False) -> None:
        if close:
            self.close_connection = True
        body = json.dumps({"error": error, "message": message}).encode()
        headers = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
        self._send(status, body, headers, started)

    def _send(self, status: int, body: bytes, headers: dict[str, str], started: float, **log_fields: Any) -> None:
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        entry = {
            "ts": _now(),
            "event": "access",
            "client": self.client_address[0],
            "method": self.command,
            "path": urlsplit(self.path).path,
            "status": status,
            "bytes_out": len(body),
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            **{k: v for k, v in log_fields.items() if v is not None},
        }
        logger.info(json.dumps(entry))


def make_gateway(settings: Settings, host: str = "127.0.0.1", port: int | None = None) -> GatewayServer:
    """A bound (not yet serving) gateway reading its target from ``<state_dir>/api.json``."""
    return GatewayServer(
        api_state_path(settings),
        host,
        settings.api_port if port is None else port,
        max_body_bytes=settings.serve_max_body_bytes,
    )


def _configure_logging() -> None:
    """JSON lines on stderr for the access log and the handler's log."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    for name in ("sentiflow.api", "sentiflow.lambda"):
        log = logging.getLogger(name)
        log.handlers[:] = [stream]
        log.setLevel(logging.INFO)
        log.propagate = False


def run_gateway(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int | None = None,
    announce: Callable[[GatewayServer], None] | None = None,
) -> None:
    """Serve in the foreground until SIGTERM/SIGINT, then finish requests in flight and exit.

    While it runs, ``<state_dir>/api-server.json`` records ``{"pid", "port", "url", "host", "started_at"}`` so
    :class:`backends.local.api.LocalApiGateway` finds it.
    """
    _configure_logging()
    server = make_gateway(settings, host, port)
    record_path = api_server_path(settings)
    record = {
        "pid": os.getpid(),
        "port": server.port,
        "url": server.url,
        "host": host,
        "started_at": server.started_at,
    }
    stopping = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, name="api-shutdown", daemon=True).start()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        atomic_write_json(record_path, record)
        if announce is not None:
            announce(server)
        logger.info(json.dumps({"ts": _now(), "event": "listening", "url": server.url, "pid": os.getpid()}))
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()  # waits for requests in flight
        try:
            if read_json(record_path).get("pid") == os.getpid():
                record_path.unlink(missing_ok=True)
        except (OSError, ValueError, AttributeError):
            pass
        for sig, old in previous.items():
            signal.signal(sig, old)
        logger.info(json.dumps({"ts": _now(), "event": "stopped", "pid": os.getpid()}))
