"""The reference for ``benchmarks/serve.py``: the endpoint server and inference path as they were before the ASGI
endpoint (main at a606f33), kept verbatim so that every benchmark run measures the old figures beside the new.

* ``serve/server.py`` of a606f33 — ``http.server`` threads, ``model.inference``'s functions called directly;
* ``model/inference.py`` of a606f33 — ``input_fn(body, content_type, max_reviews)``, 256-row windows in
  ``predict_fn``, a bare ``output_fn`` body;
* the process as ``sentiflow serve`` set it up then: one torch thread per request thread, the model loaded with
  ``model.artifact.load_artifact``, and NLTK imported (``model/preprocessing.py`` imported ``nltk.stem.porter`` then;
  the tokens are the same with the vendored stemmer).

Only the Prefect event announcement is gone (off without a Prefect API, as in the benchmark). Not used by the project.

    python benchmarks/reference_server.py MODEL_DIR [--port 0]   # prints "listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.io import atomic_write_json, atomic_write_text  # noqa: E402

# --- model/inference.py at a606f33 ----------------------------------------------------------------------------

DEFAULT_MAX_REVIEWS = 256
MAX_REVIEWS_ENV = "SENTIFLOW_SERVE_MAX_REVIEWS"
PREDICT_BATCH_SIZE = 256
POSITIVE_THRESHOLD = 0.5

JSON = "application/json"
CSV = "text/csv"
TEXT = "text/plain"
SUPPORTED_CONTENT_TYPES = (TEXT, JSON, CSV)
SUPPORTED_ACCEPTS = (JSON, CSV)


class BadRequest(ValueError):
    """A request the client must fix; ``status`` is the HTTP status to answer with (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InferenceInput:
    """What ``input_fn`` decoded: raw reviews or encoded rows, and whether the caller sent a single review."""

    texts: list[str] | None = None
    rows: list[list[int]] | None = None
    single: bool = False

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.rows or [])


@dataclass(frozen=True)
class Prediction:
    """``predict_fn`` output: P(positive) per review, in request order."""

    scores: np.ndarray
    single: bool = False


# --- helpers -----------------------------------------------------------------------------------------


def label_for(score: float) -> str:
    """The label a score maps to (the one threshold used by serving, batch transform and evaluation)."""
    return "positive" if score >= POSITIVE_THRESHOLD else "negative"


def media_type(header: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` → ``"application/json"``."""
    return (header or "").split(";", 1)[0].strip().lower()


def max_reviews_limit(override: int | None = None) -> int:
    """The most reviews one request may carry: ``override``, else ``$SENTIFLOW_SERVE_MAX_REVIEWS``, else
    256."""
    if override is not None:
        return override
    raw = os.environ.get(MAX_REVIEWS_ENV, "")
    try:
        return int(raw) if raw.strip() else DEFAULT_MAX_REVIEWS
    except ValueError:
        return DEFAULT_MAX_REVIEWS


def response_content_type(accept: str | None) -> str:
    """The media type ``output_fn`` answers with for an ``Accept`` header (raises 406 when none fits)."""
    if accept is None or not accept.strip():
        return JSON
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        kind, _, params = part.partition(";")
        kind = kind.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, kind))
    for _, _, kind in sorted(ranked):
        if kind in SUPPORTED_ACCEPTS:
            return kind
        if kind in ("*/*", "application/*"):
            return JSON
        if kind == "text/*":
            return CSV
    raise BadRequest(f"Accept {accept!r} is not supported; ask for one of {', '.join(SUPPORTED_ACCEPTS)}", status=406)


def _decode(body: bytes | bytearray | str) -> str:
    if isinstance(body, str):
        text = body
    else:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadRequest(
                f"request body is not valid UTF-8 (byte {error.start}); send UTF-8 text", status=400
            ) from None
    if not text.strip():
        raise BadRequest('request body is empty; send a review (text/plain) or JSON {"review": "..."}')
    return text.lstrip("\ufeff")


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise BadRequest(
            f"request carries {count} reviews, more than the limit of {limit}; split it into smaller requests",
            status=413,
        )


def _reviews_from_json(payload: Any) -> tuple[list[str], bool]:
    if isinstance(payload, dict) and set(payload) == {"review"}:
        reviews, single, where = [payload["review"]], True, "review"
    elif isinstance(payload, dict) and set(payload) == {"reviews"} and isinstance(payload["reviews"], list):
        reviews, single, where = payload["reviews"], False, "reviews"
    elif isinstance(payload, list):
        reviews, single, where = payload, False, ""
    else:
        raise BadRequest(
            'JSON body has the wrong shape; send {"review": "..."}, {"reviews": ["...", ...]} or ["...", ...]'
        )
    if not reviews:
        raise BadRequest("JSON body holds no reviews; send at least one review")
    for index, review in enumerate(reviews):
        name = where if single else f"{where}[{index}]"
        if not isinstance(review, str):
            raise BadRequest(f"{name} is a {type(review).__name__}, not a string; send review text")
        if not review.strip():
            raise BadRequest(f"{name} is empty; send review text")
    return reviews, single


def _rows_from_csv(text: str) -> list[list[int]]:
    rows: list[list[int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append([int(value) for value in line.split(",")])
        except ValueError:
            raise BadRequest(
                f"text/csv line {number} is not comma-separated integers 'length,id_1,...'; "
                "send encoded rows, or raw text as text/plain or application/json"
            ) from None
    return rows


# --- the four SageMaker functions -----------------------------------------------------------------


def model_fn(model_dir: str) -> Any:
    """Load the model artifact (network + preprocessing state) from an unpacked ``model.tar.gz``."""
    from model.artifact import load_artifact  # today's loader: the network and its batching are unchanged

    return load_artifact(model_dir)


def input_fn(body: bytes | str, content_type: str | None, max_reviews: int | None = None) -> InferenceInput:
    """Decode a request body into raw reviews or encoded rows (see the module docstring for the formats)."""
    kind = media_type(content_type)
    if kind not in SUPPORTED_CONTENT_TYPES:
        raise BadRequest(
            f"Content-Type {content_type!r} is not supported; send one of {', '.join(SUPPORTED_CONTENT_TYPES)}",
            status=415,
        )
    text = _decode(body)
    limit = max_reviews_limit(max_reviews)
    if kind == TEXT:
        return InferenceInput(texts=[text], single=True)
    if kind == JSON:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadRequest(
                f"request body is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
                'send {"review": "..."}'
            ) from None
        reviews, single = _reviews_from_json(payload)
        _check_count(len(reviews), limit)
        return InferenceInput(texts=reviews, single=single)
    rows = _rows_from_csv(text)
    _check_count(len(rows), limit)
    return InferenceInput(rows=rows)


def _encoded_matrix(rows: Sequence[Sequence[int]], max_len: int, vocab_size: int) -> np.ndarray:
    matrix = np.zeros((len(rows), max_len + 1), dtype=np.int64)
    for number, row in enumerate(rows, start=1):
        if len(row) > max_len + 1:
            raise BadRequest(
                f"text/csv row {number} has {len(row) - 1} ids, more than this model's max_len {max_len}; "
                "send 'length,id_1,...' rows encoded for this model"
            )
        values = np.asarray(row, dtype=np.int64)
        if values[0] < 0 or values[0] > max_len or (values[1:] < 0).any() or (values[1:] >= vocab_size).any():
            raise BadRequest(
                f"text/csv row {number} is out of range (length 0..{max_len}, ids 0..{vocab_size - 1}); "
                "send rows encoded for this model"
            )
        matrix[number - 1, : len(values)] = values
    return matrix


def predict_fn(data: InferenceInput, model: Any) -> Prediction:
    """P(positive) for every review, in batches of ``PREDICT_BATCH_SIZE``, tokenized with the model's
    state."""
    preprocessor = model.preprocessor
    if data.texts is not None:
        encode = preprocessor.encode_texts
        items: Sequence[Any] = data.texts
    else:
        config = preprocessor.config

        def encode(chunk: Sequence[Sequence[int]]) -> np.ndarray:
            return _encoded_matrix(chunk, config.max_len, config.vocab_size)

        items = data.rows or []
    parts = [
        np.asarray(model.predict_proba(encode(items[start : start + PREDICT_BATCH_SIZE])), dtype=np.float64)
        for start in range(0, len(items), PREDICT_BATCH_SIZE)
    ]
    scores = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return Prediction(scores=scores, single=data.single)


def output_fn(prediction: Prediction, accept: str | None) -> bytes:
    """Encode predictions as JSON (default) or ``label,score`` CSV lines, per the ``Accept`` header."""
    kind = response_content_type(accept)
    scores = [float(score) for score in prediction.scores]
    if kind == CSV:
        return "".join(f"{label_for(score)},{score!r}\n" for score in scores).encode("utf-8")
    items = [{"label": label_for(score), "score": score} for score in scores]
    payload: Any = items[0] if prediction.single and len(items) == 1 else items
    return json.dumps(payload).encode("utf-8")


def parse_csv_output(text: str) -> tuple[list[str], np.ndarray]:
    """Read ``output_fn``'s ``label,score`` lines back: (labels, scores)."""
    labels: list[str] = []
    scores: list[float] = []
    for line in text.splitlines():
        if line.strip():
            label, _, score = line.partition(",")
            labels.append(label)
            scores.append(float(score))
    return labels, np.asarray(scores, dtype=np.float64)


# --- serve/server.py at a606f33 ----------------------------------------------------------------------------------

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
        """Write the state file now and then at most every ``flush_every_s`` while invocations arrive (the
        original also announced invocations as Prefect events when a Prefect API was configured; the benchmark
        runs without one, so that path was off)."""
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
        """Mirror the counters to the state file and, if any arrived, tell Prefect the endpoint is in use."""
        snapshot = self.snapshot()
        if self._state_file is not None:
            atomic_write_json(self._state_file, snapshot)

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


# --- what `sentiflow serve` did around it -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the pre-ASGI endpoint server (benchmark reference)")
    parser.add_argument("model_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-reviews", type=int, default=256)
    args = parser.parse_args(argv)
    import nltk.stem.porter  # noqa: F401 - what model/preprocessing.py imported at a606f33 (its footprint)
    import torch

    torch.set_num_threads(1)  # sentiflow serve --torch-threads 1 (the default)
    loaded = model_fn(args.model_dir)
    server = EndpointServer(
        loaded, args.host, args.port, max_body_bytes=args.max_body_bytes, max_reviews=args.max_reviews
    )
    run(server, announce=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
