"""The local endpoint server: SageMaker hosting's contract on a standard ASGI stack (Starlette under uvicorn).

    python -m serve.endpoint MODEL_DIR [--fd N | --host H --port P] [--name NAME] [--workers W]
        [--access-log PATH|-|off] [--state-dir DIR] [--max-body-bytes N]

``MODEL_DIR`` is an unpacked ``model.tar.gz``. Every invocation goes through :class:`serve.toolkit.ToolkitModel` —
TorchServe's own Python worker code and the SageMaker PyTorch inference toolkit's handler service running the
artifact's ``code/`` —, so a local answer is the container's answer by construction: same status, headers, body.

Routes:

* ``GET /ping`` — 200 ``{"status": "healthy"}`` once every worker has loaded its model (and while at least one
  is up), 503 before.
* ``GET /stats`` — ``{"name", "url", "pid", "started_at", "workers", "workers_ready", "invocations", "errors",
  "last_invoked_at", "per_worker": [...]}``, counted by the front end over all workers and mirrored to
  ``<state-dir>/stats.json`` (at most twice a second while requests arrive, and at exit; :func:`read_stats`
  reads it without the server). Idle detection reads this; the server sends no events.
* ``POST /invocations`` — the container's route: exactly what TorchServe + the toolkit answer, including a body over
  TorchServe's limit (``--max-body-bytes``, default 6,553,500): 413 with an empty body, sent before the body is read.
* ``POST /endpoints/{name}/invocations`` — the sagemaker-runtime ``InvokeEndpoint`` route (boto3 with
  ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``), answered as the SageMaker runtime does: a 2xx passes through with
  ``x-Amzn-Invoked-Production-Variant``; a 4xx/5xx from the model becomes HTTP 424 ``ModelError`` with
  ``OriginalStatusCode``, ``OriginalMessage`` and ``LogStreamArn`` (botocore's ``sagemaker-runtime`` model, so boto3
  raises ``ModelError`` carrying them); another endpoint name is 400 ``ValidationError`` "Endpoint … not found.";
  a body over InvokeEndpoint's 6 MiB is 413 "HTTP content length exceeded …".

Processes, as in the container (TorchServe's front end and its Python workers): this process is the front end — the
listening socket (an inherited ``--fd`` from the process helper ``core.processes``, or bound on ``--host``/``--port``,
127.0.0.1 by default), uvicorn, the routes, the access log (one JSON line per request), the counters — and starts
``--workers`` worker processes (default one per CPU, like the container). Each worker holds one model and runs torch
on one thread (``OMP_NUM_THREADS=1`` before torch loads; ``model_fn`` sets torch's threads from
``SENTIFLOW_SERVE_TORCH_THREADS``), and answers one request at a time over a private socket pair. The front end
hands each request to an idle worker, so two clients keep two workers busy however their connections were accepted,
and ``/ping``/``/stats`` answer during a long transform mini-batch. A worker that dies is restarted (its request
answered 500 "Worker died.", as TorchServe does), and so is one that runs past the response timeout (120 s,
TorchServe's default); one that cannot load the model stops the server with its error. SIGTERM (or SIGINT) drains:
no new connections, in-flight requests finish, idle keep-alive connections close, the counters are written, the
workers exit, exit code 0. Nothing here imports Prefect, and the front end does not import torch or the model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.io import atomic_write_json, read_json

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 6_553_500  # TorchServe's max_request_size: what the container's front end accepts
INVOKE_ENDPOINT_MAX_BYTES = 6_291_456  # InvokeEndpoint's Body (botocore sagemaker-runtime BodyBlob "max")
RESPONSE_TIMEOUT_S = 120.0  # TorchServe's default_response_timeout (the toolkit's 60 s never reaches it)
VARIANT = "AllTraffic"  # the one production variant (backends/aws/endpoints.py)
ACCOUNT = "000000000000"  # what the local twin puts where AWS puts the account id
MODEL_ERROR_TYPE = "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/"
VALIDATION_ERROR_TYPE = "ValidationError:http://internal.amazon.com/coral/com.amazon.coral.validate/"
ORIGINAL_MESSAGE_MAX = 2048  # sagemaker-runtime's Message shape
STATS_FILE = "stats.json"
CLOSE_ABOVE_BYTES = 64 << 20  # an over-limit body this large is not drained: the connection closes
FLUSH_EVERY_S = 0.5
RESTARTS_ALLOWED = 5  # worker restarts within RESTART_WINDOW_S before the server gives up
RESTART_WINDOW_S = 60.0
EXIT_LOAD_FAILED = 3  # a worker's exit code when its model does not load
IDLE_TRIM_S = 1.0  # a worker idle this long gives the heap its requests freed back to the OS
WORKER_DIED = b'{\n  "code": 500,\n  "type": "InternalServerException",\n  "message": "Worker died."\n}\n'

_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 503: "service_unavailable"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_workers() -> int:
    """One worker per usable CPU (the PyTorch inference container's default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def read_stats(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The counters the server last wrote to ``<state_dir>/stats.json`` (None when there are none); readable after
    the server has stopped."""
    try:
        payload = read_json(Path(state_dir) / STATS_FILE)
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


# --- the wire between the front end and a worker -----------------------------------------------------------------
# One frame = 4-byte big-endian length of a JSON header, the header, then ``header["length"]`` body bytes.


def _frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = json.dumps({**header, "length": len(body)}).encode("utf-8")
    return struct.pack("!I", len(encoded)) + encoded + body


def _read_exactly(stream: Any, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("the front end closed the connection")
    return data


def _heap_trimmer() -> Any:
    """``trim()`` returning freed heap pages to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    glibc keeps what a request freed for the next one: a worker that had answered 5,000 reviews in 256-review
    requests held 90 MiB more than after loading its model, and a trim returned all of it — but a trim after every
    request cost 13 ms and the next request's page faults, so a worker trims once it has been idle a second."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


def _worker(fd: int, model_dir: Path) -> int:
    """A worker: load the model through the toolkit, say so, then answer one request at a time until EOF."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("model").setLevel(logging.INFO)  # the handlers' own messages (tracebacks of 500s)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole group: the front end decides
    state = {"busy": False, "stop": False}

    def on_term(*_: object) -> None:
        if not state["busy"]:
            raise SystemExit(0)
        state["stop"] = True  # finish the request in hand first

    signal.signal(signal.SIGTERM, on_term)
    channel = socket.socket(fileno=fd)
    stream = channel.makefile("rb")
    from serve.toolkit import ArtifactCodeShadowed, ToolkitError, ToolkitModel

    try:
        model = ToolkitModel(model_dir)
    except (ToolkitError, ArtifactCodeShadowed, FileNotFoundError) as error:
        print(f"endpoint worker: {error}", file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    channel.sendall(_frame({"ready": True, "pid": os.getpid()}))
    trim, trimmed = _heap_trimmer(), False
    while not state["stop"]:
        if not trimmed and not select.select([channel], [], [], IDLE_TRIM_S)[0]:
            trim()  # idle: a burst's freed memory goes back (the next request may re-fault some of it)
            trimmed = True
        try:
            (size,) = struct.unpack("!I", _read_exactly(stream, 4))
            header = json.loads(_read_exactly(stream, size))
            body = _read_exactly(stream, header["length"])
        except EOFError:
            return 0
        state["busy"], trimmed = True, False
        answer = model.answer(body, header.get("content_type"), header.get("accept"), header.get("headers"))
        channel.sendall(
            _frame({"status": answer.status, "reason": answer.reason, "headers": answer.headers}, answer.body)
        )
        state["busy"] = False
    return 0


# --- the front end -------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A worker's answer (as TorchServe's front end would send it)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Worker:
    """One worker process and the front end's end of its socket pair."""

    index: int
    process: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ready: bool = False
    invocations: int = 0
    started_at: str = field(default_factory=_now)

    def snapshot(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.process.pid,
            "ready": self.ready,
            "invocations": self.invocations,
            "started_at": self.started_at,
        }

    async def read_frame(self) -> tuple[dict[str, Any], bytes]:
        (size,) = struct.unpack("!I", await self.reader.readexactly(4))
        header = json.loads(await self.reader.readexactly(size))
        return header, await self.reader.readexactly(int(header.get("length", 0)))


class WorkerPool:
    """Starts the workers, hands each request to an idle one, restarts the ones that die."""

    def __init__(self, model_dir: Path, count: int, response_timeout_s: float = RESPONSE_TIMEOUT_S) -> None:
        self.model_dir = model_dir
        self.count = count
        self.response_timeout_s = response_timeout_s
        self.workers: dict[int, Worker] = {}
        self.idle: asyncio.Queue[Worker] = asyncio.Queue()
        self.restarts: list[float] = []
        self.restarted = 0
        self.all_loaded = asyncio.Event()  # every worker has loaded its model once
        self.failed: str | None = None  # why the server must stop (a model that does not load)
        self.closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> int:
        return sum(1 for worker in self.workers.values() if worker.ready)

    async def start(self) -> None:
        for index in range(self.count):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: no OpenMP pool of one thread per CPU per worker
        command = [sys.executable, "-m", "serve.endpoint", str(self.model_dir), "--worker-fd", str(theirs.fileno())]
        process = subprocess.Popen(command, env=env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        worker = Worker(index, process, reader, writer)
        self.workers[index] = worker
        task = asyncio.create_task(self._wait_loaded(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_loaded(self, worker: Worker) -> None:
        try:
            header, _ = await worker.read_frame()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            header = {}
        if not header.get("ready"):
            code = await asyncio.to_thread(worker.process.wait)
            if not self.all_loaded.is_set() or code == EXIT_LOAD_FAILED:
                self.failed = f"worker {worker.index} exited with {code} while loading the model (see its error above)"
                return
            await self._replace(worker, f"exited with {code} while loading")
            return
        worker.ready = True
        self.idle.put_nowait(worker)
        if self.ready == self.count:
            self.all_loaded.set()

    async def _replace(self, worker: Worker, why: str) -> None:
        """Drop a dead or stuck worker and start another in its place (unless the server is stopping)."""
        worker.ready = False
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        await asyncio.to_thread(worker.process.wait)
        worker.writer.close()
        if self.closing:
            return
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(self.restarts) > RESTARTS_ALLOWED:
            self.failed = f"workers died {len(self.restarts)} times within {RESTART_WINDOW_S:.0f} s (last: {why})"
            return
        print(f"endpoint: worker {worker.index} (pid {worker.process.pid}) {why}; restarting", file=sys.stderr)
        self.restarted += 1
        await self._spawn(worker.index)

    async def invoke(self, body: bytes, content_type: str | None, accept: str | None, headers: dict[str, str]) -> Reply:
        """The toolkit's answer from the next idle worker (waits for one)."""
        worker = await self.idle.get()
        while worker.process.poll() is not None:  # died while idle: replace it, take the next one
            await self._replace(worker, f"exited with {worker.process.returncode} while idle")
            worker = await self.idle.get()
        header = {"content_type": content_type, "accept": accept, "headers": headers}
        try:
            worker.writer.write(_frame(header, body))
            await worker.writer.drain()
            answer, data = await asyncio.wait_for(worker.read_frame(), self.response_timeout_s)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as error:
            why = "did not answer in time" if isinstance(error, TimeoutError) else "died"
            await self._replace(worker, why)
            return Reply(500, {"content-type": "application/json"}, WORKER_DIED)
        worker.invocations += 1
        self.idle.put_nowait(worker)
        return Reply(int(answer["status"]), dict(answer.get("headers") or {}), data)

    async def close(self) -> None:
        """Let every worker finish (they exit at EOF on their socket), then reap them."""
        self.closing = True
        for worker in self.workers.values():
            worker.writer.close()
            if not worker.ready:  # still loading: it would only read its socket once loaded
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()
        for worker in self.workers.values():
            try:
                await asyncio.wait_for(asyncio.to_thread(worker.process.wait), 30)
            except TimeoutError:
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)


class Counters:
    """Invocation counters over all workers, mirrored to ``<state_dir>/stats.json``."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / STATS_FILE if state_dir is not None else None
        self.invocations = 0
        self.errors = 0
        self.last_invoked_at: str | None = None
        self.dirty = False
        self.flushed_at = 0.0

    def record(self, ok: bool) -> None:
        self.invocations += 1
        self.errors += 0 if ok else 1
        self.last_invoked_at = _now()
        self.dirty = True


class AccessLog:
    """One JSON line per request, one ``write`` each on an ``O_APPEND`` descriptor."""

    def __init__(self, target: str) -> None:
        self.fd: int | None
        if target == "off":
            self.fd = None
        elif target == "-":
            self.fd = sys.stderr.fileno()
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, entry: Mapping[str, Any]) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8"))


def _message_of(reply: Reply) -> str:
    """The one-line message of an error answer (its JSON ``message``, else its text), for the access log."""
    if reply.headers.get("content-type") == "application/json" and len(reply.body) < 65536:
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(reply.body).get("message")
            if message:
                return " ".join(str(message).split())
    text = " ".join(reply.body[:500].decode("utf-8", "replace").split())
    return text or f"HTTP {reply.status} with an empty body"


def _predictions(reply: Reply) -> int:
    if reply.headers.get("content-type") == "text/csv":
        return reply.body.count(b"\n")
    return reply.body.count(b'"label"')


@dataclass
class Options:
    """The front end's settings (from the command line)."""

    name: str | None = None
    url: str | None = None
    workers: int = 1
    state_dir: Path | None = None
    access_log: str = "-"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    region: str = "us-east-1"


def build_app(model_dir: Path, options: Options, on_failure: Any = None) -> Any:
    """The Starlette app of the front end; its lifespan starts (and at shutdown stops) the worker pool.

    ``on_failure(message)`` is called when the server cannot go on (a model that does not load)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    started_at = _now()
    counters = Counters(options.state_dir)
    log = AccessLog(options.access_log)
    pool_box: dict[str, WorkerPool] = {}

    def stats_payload() -> dict[str, Any]:
        pool = pool_box.get("pool")
        workers = [w.snapshot() for w in pool.workers.values()] if pool else []
        return {
            "name": options.name,
            "url": options.url,
            "pid": os.getpid(),
            "started_at": started_at,
            "workers": options.workers,
            "workers_ready": pool.ready if pool else 0,
            "restarts": pool.restarted if pool else 0,
            "invocations": counters.invocations,
            "errors": counters.errors,
            "last_invoked_at": counters.last_invoked_at,
            "per_worker": workers,
        }

    def flush() -> None:
        counters.dirty = False
        counters.flushed_at = time.monotonic()
        if counters.path is not None:
            with contextlib.suppress(OSError):
                atomic_write_json(counters.path, stats_payload())

    def record(ok: bool) -> None:
        counters.record(ok)
        if time.monotonic() - counters.flushed_at >= FLUSH_EVERY_S:
            flush()  # an idle endpoint's first call is on disk before its answer goes out

    async def housekeeping(pool: WorkerPool) -> None:
        while True:
            await asyncio.sleep(0.1)
            if pool.failed is not None and on_failure is not None:
                on_failure(pool.failed)
                return
            if counters.dirty and time.monotonic() - counters.flushed_at >= FLUSH_EVERY_S:
                flush()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        pool = WorkerPool(model_dir, options.workers)
        pool_box["pool"] = pool
        await pool.start()
        task = asyncio.create_task(housekeeping(pool))
        flush()
        try:
            yield
        finally:
            task.cancel()
            await pool.close()
            flush()

    def entry(request: Request, status: int, bytes_in: int, bytes_out: int, began: float, **extra: Any) -> None:
        if log.fd is None:
            return
        record_ = {
            "ts": _now(),
            "client": request.client.host if request.client else None,
            "method": request.method,
            "path": request.url.path,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "ms": round((time.perf_counter() - began) * 1000, 3),
        }
        record_.update({k: v for k, v in extra.items() if v is not None})
        log.write(record_)

    def declared_length(request: Request) -> int:
        value = request.headers.get("content-length", "")
        return int(value) if value.isdigit() else 0

    async def ping(request: Request) -> Response:
        began = time.perf_counter()
        pool = pool_box.get("pool")
        healthy = pool is not None and pool.all_loaded.is_set() and pool.ready > 0
        body = b'{"status":"healthy"}' if healthy else b'{"status":"loading"}'
        status = 200 if healthy else 503
        entry(request, status, 0, len(body), began)
        return Response(body, status, media_type="application/json")

    async def stats_route(request: Request) -> Response:
        began = time.perf_counter()
        response = JSONResponse(stats_payload())
        entry(request, 200, 0, len(response.body), began)
        return response

    async def read_body(request: Request, limit: int) -> bytes | None:
        """The body, or None when it is over ``limit`` (decided on Content-Length before reading anything)."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(400, f"Content-Length {declared!r} is not a number")
            return None if int(declared) > limit else await request.body()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def close_if_huge(request: Request) -> dict[str, str]:
        declared = request.headers.get("content-length", "")
        huge = not declared.isdigit() or int(declared) > CLOSE_ABOVE_BYTES
        return {"connection": "close"} if huge else {}  # else uvicorn reads and drops the rest of the body

    async def dispatch(request: Request, body: bytes, headers: dict[str, str]) -> Reply:
        pool = pool_box["pool"]
        return await pool.invoke(body, request.headers.get("content-type"), request.headers.get("accept"), headers)

    async def invocations(request: Request) -> Response:
        """The container's route: the toolkit's answer, as TorchServe sends it."""
        began = time.perf_counter()
        body = await read_body(request, options.max_body_bytes)
        if body is None:  # TorchServe's front end: 413, no body, no Content-Type
            record(ok=False)
            entry(request, 413, declared_length(request), 0, began, error="body over the size limit")
            return Response(b"", 413, headers=close_if_huge(request))
        passed = {k: v for k, v in request.headers.items() if k not in ("content-type", "accept")}
        reply = await dispatch(request, body, passed)
        record(ok=reply.ok)
        if log.fd is not None:
            entry(
                request, reply.status, len(body), len(reply.body), began,
                reviews=_predictions(reply) if reply.ok else None, error=None if reply.ok else _message_of(reply),
            )  # fmt: skip
        return Response(reply.body, reply.status, headers=reply.headers)  # content-type as is (no charset added)

    def runtime_error(status: int, error_type: str, payload: dict[str, Any], request_id: str) -> Response:
        headers = {"x-amzn-RequestId": request_id, "x-amzn-ErrorType": error_type}
        return Response(json.dumps(payload), status, headers=headers, media_type="application/json")

    async def runtime_invocations(request: Request) -> Response:
        """sagemaker-runtime ``InvokeEndpoint``: the SageMaker front end in front of the container."""
        began = time.perf_counter()
        request_id = str(uuid.uuid4())
        endpoint = request.path_params["name"]
        if options.name is not None and endpoint != options.name:
            record(ok=False)
            message = f"Endpoint {endpoint} of account {ACCOUNT} not found."
            entry(request, 400, declared_length(request), 0, began, error=message)
            return runtime_error(400, VALIDATION_ERROR_TYPE, {"message": message}, request_id)
        limit = min(options.max_body_bytes, INVOKE_ENDPOINT_MAX_BYTES)
        body = await read_body(request, limit)
        if body is None:
            record(ok=False)
            message = f"HTTP content length exceeded {limit} bytes."
            entry(request, 413, declared_length(request), 0, began, error=message)
            headers = {"x-amzn-RequestId": request_id, **close_if_huge(request)}
            return Response(json.dumps({"message": message}), 413, headers=headers, media_type="application/json")
        # The runtime forwards only the headers InvokeEndpoint defines (Content-Type and Accept go as such).
        passed = {k: v for k, v in request.headers.items() if k.startswith("x-amzn-sagemaker-")}
        reply = await dispatch(request, body, passed)
        record(ok=reply.ok)
        if reply.ok:
            if log.fd is not None:
                entry(request, reply.status, len(body), len(reply.body), began, reviews=_predictions(reply))
            headers = {**reply.headers, "x-Amzn-Invoked-Production-Variant": VARIANT, "x-amzn-RequestId": request_id}
            return Response(reply.body, reply.status, headers=headers)
        original = reply.body.decode("utf-8", "replace")[:ORIGINAL_MESSAGE_MAX]
        kind = "client" if reply.status < 500 else "server"
        group = f"/aws/sagemaker/Endpoints/{endpoint}"
        region = options.region
        payload = {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "LogStreamArn": f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{group}",
            "Message": (
                f'Received {kind} error ({reply.status}) from primary with message "{original}". See '
                f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:group="
                f"{group} in account {ACCOUNT} for more information."
            ),
            "OriginalMessage": original,
            "OriginalStatusCode": reply.status,
        }
        if log.fd is not None:
            entry(request, 424, len(body), 0, began, model_status=reply.status, error=_message_of(reply))
        return runtime_error(424, MODEL_ERROR_TYPE, payload, request_id)

    async def http_error(request: Request, error: HTTPException) -> Response:
        began = time.perf_counter()
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path}; use GET /ping, GET /stats, POST /invocations"
        elif error.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        entry(request, error.status_code, 0, 0, began, error=message)
        body = json.dumps({"error": _ERROR_CODES.get(error.status_code, "error"), "message": message,
                           "status": error.status_code})  # fmt: skip
        return Response(body, error.status_code, headers=dict(error.headers or {}), media_type="application/json")

    routes = [
        Route("/ping", ping, methods=["GET", "POST"]),
        Route("/stats", stats_route, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/endpoints/{name}/invocations", runtime_invocations, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})


def serve(model_dir: Path, sock: socket.socket, options: Options) -> int:
    """Run the front end on ``sock`` until SIGTERM/SIGINT (0) or until the model cannot be served (1)."""
    import uvicorn

    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_failure(message: str) -> None:
        failure.append(message)
        print(f"endpoint: {message}; stopping", file=sys.stderr, flush=True)
        if server is not None:
            server.should_exit = True

    config = uvicorn.Config(
        build_app(model_dir, options, on_failure),
        lifespan="on",
        http="auto",  # httptools (a dependency) when importable, else h11
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=None,  # in-flight requests finish; the process helper's grace bounds the wait
    )
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then restores the handlers it found and raises the signal again (so that a
    # process manager sees it). With these handlers in place that second delivery is a no-op: a drain exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    return 1 if failure else 0


# --- the command --------------------------------------------------------------------------------------------------


def _listening(args: argparse.Namespace) -> socket.socket:
    if args.fd is not None:
        return socket.socket(fileno=args.fd)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections whose socket says TCP (a proto of 0 leaves
    # Nagle on, and with delayed ACKs every small answer waits 40 ms). An inherited --fd reports its protocol.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as error:
        sock.close()
        raise SystemExit(
            f"endpoint: cannot listen on {args.host}:{args.port} ({error.strerror}); pick another --port"
        ) from None
    sock.listen(2048)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serve.endpoint", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an unpacked model.tar.gz (with code/inference.py)")
    parser.add_argument("--fd", type=int, default=None, help="an inherited listening socket (the process helper's)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind without --fd (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port without --fd; 0 picks a free one")
    parser.add_argument("--name", default=None, help="endpoint name; /endpoints/OTHER/invocations is then not found")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    parser.add_argument("--access-log", default="-", help="JSON-lines access log: a file, '-' (stderr) or 'off'")
    parser.add_argument("--state-dir", type=Path, default=None, help="folder for stats.json (default: none)")
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest body (default: TorchServe's)"
    )
    parser.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = default_workers()
    if args.workers < 1 or args.max_body_bytes < 1:
        parser.error("--workers and --max-body-bytes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker_fd is not None:
        return _worker(args.worker_fd, args.model_dir)
    entry_point = args.model_dir / "code" / "inference.py"
    if not entry_point.is_file():
        print(f"endpoint: {entry_point} not found; pass an unpacked model.tar.gz", file=sys.stderr)
        return 2
    if args.fd is None:
        from core.config import refuse_open_host
        from core.errors import ConfigError

        try:
            refuse_open_host(args.host, "the endpoint server")
        except ConfigError as failure:
            print(f"endpoint: {failure}", file=sys.stderr)
            return 2
    sock = _listening(args)
    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    options = Options(
        name=args.name,
        url=_url(sock),
        workers=args.workers,
        state_dir=args.state_dir,
        access_log=args.access_log,
        max_body_bytes=args.max_body_bytes,
        region=os.environ.get("SAGEMAKER_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
    )
    print(f"listening on {options.url}", flush=True)
    return serve(args.model_dir.resolve(), sock, options)


if __name__ == "__main__":
    sys.exit(main())
