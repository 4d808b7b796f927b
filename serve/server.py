"""The local endpoint server: the SageMaker hosting contract over stdlib HTTP.

Routes: ``GET /ping``, ``GET /stats``, ``POST /invocations`` and ``POST /endpoints/{name}/invocations``
(the path boto3's ``sagemaker-runtime`` client calls, so ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://HOST:PORT``
works unchanged). Every invocation runs ``model.inference``'s ``input_fn → predict_fn → output_fn``.

One thread per connection (HTTP/1.1 keep-alive), one JSON line per request in the access log, 4xx answers
as a one-line JSON ``{"error": code, "message": text, "status": n}``. ``stop()`` (SIGTERM in ``run``)
stops accepting, lets in-flight requests finish and closes idle keep-alive connections.
"""

from __future__ import annotations

import json
import re
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from core.io import atomic_write_json, atomic_write_text
from model.inference import BadRequest, input_fn, output_fn, predict_fn, response_content_type

_ENDPOINT_PATH = re.compile(r"^/endpoints/([A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))/invocations$")
_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}
_IDLE_POLL_S = 0.25
_DRAIN_LIMIT_BYTES = 64 << 20  # bodies over the limit are read and dropped up to this size


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class EndpointStats:
    """Invocation counters shared by the handler threads; optionally mirrored to a JSON state file."""

    def __init__(self, name: str | None, state_file: Path | None, flush_every_s: float = 1.0) -> None:
        self.name = name
        self.started_at = _now()
        self.invocations = 0
        self.errors = 0
        self.last_invoked_at: str | None = None
        self.url: str | None = None
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._state_file = state_file
        self._flush_every_s = flush_every_s
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()

    def record(self, ok: bool) -> None:
        """Count one invocation (``ok`` False for a 4xx/5xx answer)."""
        with self._lock:
            self.invocations += 1
            self.errors += 0 if ok else 1
            self.last_invoked_at = _now()
        self._dirty.set()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "url": self.url,
                "started_at": self.started_at,
                "invocations": self.invocations,
                "errors": self.errors,
                "last_invoked_at": self.last_invoked_at,
            }

    def start(self) -> None:
        """Write the state file now and then at most every ``flush_every_s`` while invocations arrive."""
        if self._state_file is None:
            return
        self.flush()
        self._flusher = threading.Thread(target=self._flush_loop, name="stats-flush", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closed.is_set():
            if self._dirty.wait(timeout=self._flush_every_s):
                self._dirty.clear()
                self.flush()
                self._closed.wait(self._flush_every_s)

    def flush(self) -> None:
        """Mirror the counters to the state file."""
        if self._state_file is not None:
            atomic_write_json(self._state_file, self.snapshot())

    def close(self) -> None:
        self._closed.set()
        self._dirty.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()


class EndpointServer(ThreadingHTTPServer):
    """A threading HTTP server holding one loaded model."""

    daemon_threads = True
    block_on_close = True

    def __init__(
        self,
        model: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str | None = None,
        max_body_bytes: int = 1 << 20,
        max_reviews: int = 256,
        access_log: TextIO | None = None,
        state_file: Path | None = None,
    ) -> None:
        super().__init__((host, port), EndpointHandler)
        self.model = model
        self.name = name
        self.max_body_bytes = max_body_bytes
        self.max_reviews = max_reviews
        self.access_log = access_log
        self.stats = EndpointStats(name, state_file)
        self.stats.url = self.url
        self.stopping = threading.Event()
        self._log_lock = threading.Lock()
        self._loop: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.port}"

    def log_access(self, entry: dict[str, Any]) -> None:
        if self.access_log is None:
            return
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._log_lock:
            self.access_log.write(line)
            self.access_log.flush()

    def start(self) -> EndpointServer:
        """Serve on a background thread (returns at once)."""
        self.stats.start()
        self._loop = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._loop.start()
        return self

    def stop(self) -> None:
        """Stop accepting, finish in-flight requests, close idle connections, flush the state file."""
        self.stopping.set()
        if self._loop is not None:
            self.shutdown()
            self._loop.join()
        self.server_close()  # joins the handler threads (block_on_close)
        self.stats.close()

    def __enter__(self) -> EndpointServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EndpointHandler(BaseHTTPRequestHandler):
    """Routes one connection's requests to the model."""

    server: EndpointServer
    protocol_version = "HTTP/1.1"
    server_version = "sentiflow"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 60

    # --- connection loop: serve until the client closes or the server stops ----------------------------
    def handle_one_request(self) -> None:
        while not self.server.stopping.is_set():
            try:
                readable, _, _ = select.select([self.connection], [], [], _IDLE_POLL_S)
            except (OSError, ValueError):
                self.close_connection = True
                return
            if readable:
                super().handle_one_request()
                if self.server.stopping.is_set():
                    self.close_connection = True
                return
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the stdlib's text log; requests go to the JSON access log."""

    # --- routes ------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        started = time.perf_counter()
        if self.path == "/ping":
            self._reply(200, b'{"status":"healthy"}', "application/json", started)
        elif self.path == "/stats":
            self._reply(200, json.dumps(self.server.stats.snapshot()).encode(), "application/json", started)
        else:
            self._error(404, f"no route GET {self.path}; use GET /ping or POST /invocations", started)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        started = time.perf_counter()
        match = _ENDPOINT_PATH.match(self.path)
        if self.path != "/invocations" and match is None:
            self._discard_body()
            self._error(404, f"no route POST {self.path}; use /invocations or /endpoints/NAME/invocations", started)
            return
        if match is not None and self.server.name is not None and match.group(1) != self.server.name:
            self._discard_body()
            self._error(404, f"endpoint {match.group(1)!r} not found; this server is {self.server.name!r}", started)
            self.server.stats.record(ok=False)
            return
        reviews = 0
        try:
            body = self._read_body()
            accept = self.headers.get("Accept")
            kind = response_content_type(accept)
            data = input_fn(body, self.headers.get("Content-Type"), max_reviews=self.server.max_reviews)
            reviews = len(data)
            payload = output_fn(predict_fn(data, self.server.model), kind)
        except BadRequest as error:
            self.server.stats.record(ok=False)
            self._error(error.status, str(error), started)
            return
        except Exception as error:  # noqa: BLE001 - a server keeps serving; the traceback goes to stderr
            traceback.print_exc(file=sys.stderr)
            self.server.stats.record(ok=False)
            self._error(500, f"internal error: {type(error).__name__}: {error}", started)
            return
        self.server.stats.record(ok=True)
        self._reply(200, payload, kind, started, reviews=reviews, variant=True)

    def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
        self._discard_body()
        self._error(405, f"method PUT is not allowed on {self.path}; use POST", time.perf_counter())

    do_DELETE = do_PATCH = do_PUT  # noqa: N815 - stdlib naming

    # --- plumbing ----------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise BadRequest("chunked request bodies are not supported; send a Content-Length", status=411)
        raw_length = self.headers.get("Content-Length") or "0"
        try:
            length = int(raw_length)
        except ValueError:
            self.close_connection = True
            raise BadRequest(f"Content-Length {raw_length!r} is not a number") from None
        if length > self.server.max_body_bytes:
            self._drain(length)
            raise BadRequest(
                f"request body has {length} bytes, more than the limit of {self.server.max_body_bytes}; "
                "send fewer or shorter reviews per request",
                status=413,
            )
        return self.rfile.read(length) if length > 0 else b""

    def _discard_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        self._drain(length)

    def _drain(self, length: int) -> None:
        """Read and drop a body we will not use, so the client can read our answer; close if it is huge."""
        if length < 0 or length > _DRAIN_LIMIT_BYTES:
            self.close_connection = True  # the unread body must not be parsed as the next request
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _error(self, status: int, message: str, started: float) -> None:
        code = _ERROR_CODES.get(status, "error")
        body = json.dumps({"error": code, "message": message, "status": status}).encode()
        self._reply(status, body, "application/json", started, error=message)

    def _reply(
        self,
        status: int,
        body: bytes,
        content_type: str,
        started: float,
        *,
        reviews: int = 0,
        variant: bool = False,
        error: str | None = None,
    ) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if variant:
            self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
        if status >= 400:
            self.send_header("x-amzn-ErrorType", _ERROR_CODES.get(status, "error"))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n" + body)  # one write for headers + body
        self.flush_headers()
        entry: dict[str, Any] = {
            "ts": _now(),
            "client": self.client_address[0],
            "method": self.command,
            "path": self.path,
            "status": status,
            "bytes_in": int(self.headers.get("Content-Length") or 0),
            "bytes_out": len(body),
            "ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if reviews:
            entry["reviews"] = reviews
        if error is not None:
            entry["error"] = error
        self.server.log_access(entry)


def run(
    server: EndpointServer,
    *,
    port_file: Path | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve in the foreground until SIGTERM/SIGINT, then stop gracefully."""
    done = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        done.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        if port_file is not None:
            atomic_write_text(port_file, f"{server.port}\n")
        announce(f"listening on {server.url}")
        done.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
