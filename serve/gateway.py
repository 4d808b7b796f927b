"""The local twin of the API: API Gateway (HTTP API) + the Lambda, on Starlette under uvicorn.

Routes: ``GET /`` (the page, from the ``web`` package), ``GET /app.js``, ``GET /style.css``, ``GET /healthz``, and
``POST``/``OPTIONS /predict`` — each of those turned into an API Gateway HTTP API payload 2.0 event and handed to
``lambda_fn.handler.handler``, whose answer (payload 2.0 response) becomes the HTTP response.

Hosting the function the way Lambda does lives here, never in the handler:

* **Configuration** is the function's environment (``ENDPOINT_NAME``, ``MODEL_VERSION``,
  ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, ``ALLOW_ORIGIN``, dummy local credentials), built from the target state
  file ``<state_dir>/api.json`` (:class:`ApiTarget`), which the deploy stage rewrites to re-point the API — no restart.
* **Execution environments**: the handler runs in a small pool of worker processes (:mod:`serve.lambda_runtime`),
  each started with the configuration of its moment; the gateway's own ``os.environ`` is never touched. When the
  file changes — like ``UpdateFunctionConfiguration`` — fresh environments are started and warmed while the old ones
  keep serving; then new requests go to the fresh ones and the old ones finish their in-flight requests and retire.
  So no request is lost in a blue/green switch. ``GET /healthz`` reports the configuration in service and how many
  requests the retiring environments still run, which is what ``backends.local.api`` waits on.
* **Limits and errors like API Gateway's**: a body over ``max_body_bytes`` is 413, a function that fails is 502, one
  that runs past its timeout is 504 — each a one-line JSON ``{"error", "message", "request_id"}``; every answer
  carries the request id (``apigw-requestid``) and one JSON access-log line goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.config import Settings
from core.errors import SentiflowError
from core.io import atomic_write_json, read_json
from core.processes import listening_socket
from serve import lambda_runtime

logger = logging.getLogger("sentiflow.api")

API_STATE_FILE = "api.json"
DEFAULT_ENVIRONMENTS = 4
SWITCH_TIMEOUT_S = 60.0
_POLL_S = 0.2
_DRAIN_LIMIT_BYTES = 16 << 20  # a too-large body is read (and dropped) up to this size so the client sees the 413
_TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")
#: The local function's credentials and region: the local endpoint server checks no signature (never real keys).
LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --- the target: what the function is configured with --------------------------------------------------------


@dataclass(frozen=True)
class ApiTarget:
    """The content of ``<state_dir>/api.json``: the endpoint the API serves and the function's other settings."""

    endpoint_name: str | None
    endpoint_url: str | None
    model_version: str | None = None
    allow_origin: str = "*"
    revision: str | None = None  # new on every write: tells one configuration from the next
    updated_at: str | None = None

    @property
    def deployed(self) -> bool:
        return bool(self.endpoint_name and self.endpoint_url)

    def configuration(self) -> dict[str, str]:
        """The function's environment variables for this target (what the aws backend sets on the Lambda)."""
        variables = {"ALLOW_ORIGIN": self.allow_origin, **LOCAL_AWS}
        if self.deployed:
            variables["ENDPOINT_NAME"] = str(self.endpoint_name)
            variables["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = str(self.endpoint_url)
            if self.model_version:
                variables["MODEL_VERSION"] = self.model_version
        return variables


NO_TARGET = ApiTarget(endpoint_name=None, endpoint_url=None)


def api_state_path(settings: Settings) -> Path:
    return settings.state_dir / API_STATE_FILE


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
        allow_origin=str(payload.get("allow_origin") or "*"),
        revision=payload.get("revision"),
        updated_at=payload.get("updated_at"),
    )


def write_api_target(path: Path, target: ApiTarget) -> ApiTarget:
    """Atomically replace the target (a running gateway switches to it within a moment); return it stamped."""
    if target.endpoint_url is not None:
        parts = urlsplit(target.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SentiflowError(f"endpoint URL {target.endpoint_url!r} is not an http(s) URL")
    stamped = ApiTarget(
        target.endpoint_name,
        target.endpoint_url,
        target.model_version,
        target.allow_origin,
        revision=uuid.uuid4().hex,
        updated_at=_now(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, asdict(stamped))
    return stamped


class TargetWatcher:
    """The current target, re-read only when the state file's stat signature changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._target = NO_TARGET

    def get(self) -> ApiTarget:
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            signature = None
        if signature != self._signature:
            try:
                self._target = read_api_target(self.path) if signature else NO_TARGET
                self._signature = signature
            except SentiflowError as error:  # keep serving the last good target
                logger.warning(json.dumps({"event": "api-state-unreadable", "error": str(error)}))
        return self._target


# --- execution environments ------------------------------------------------------------------------------------


def _context() -> Any:
    """Worker processes come from a fork server: a clean single-threaded process that has already imported boto3 and
    what this module imports (multiprocessing re-runs the main module, this one, in every worker), so a fresh
    environment starts in a fraction of a second and never inherits the gateway's threads."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["core.config", "core.processes", "serve.lambda_runtime", "boto3", "botocore.session"]
    )
    return context


@dataclass(eq=False)
class Environments:
    """The execution environments of one configuration: a pool of ``size`` processes running the handler."""

    target: ApiTarget
    size: int
    in_flight: int = 0
    warmed: bool = False
    retired: bool = False
    closed: bool = False
    pool: ProcessPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        environment = lambda_runtime.function_environment(self.target.configuration())
        self.pool = ProcessPoolExecutor(
            self.size, mp_context=_context(), initializer=lambda_runtime.init, initargs=(environment,)
        )

    async def warm(self) -> None:
        """Start every process and let it finish its init phase."""
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(self.pool, lambda_runtime.ready) for _ in range(self.size)]
        await asyncio.gather(*calls, return_exceptions=True)
        self.warmed = True

    async def invoke(self, event: dict[str, Any], request_id: str) -> Any:
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        try:
            call = loop.run_in_executor(self.pool, lambda_runtime.invoke, event, request_id)
            return await asyncio.wait_for(call, lambda_runtime.TIMEOUT_S)
        finally:
            self.in_flight -= 1
            if self.retired and self.in_flight == 0:
                self.close()

    def retire(self) -> None:
        """No new requests come here; close once the in-flight ones are done."""
        self.retired = True
        if self.in_flight == 0:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.shutdown(wait=False, cancel_futures=True)


class Gateway:
    """Routes each request to the environments of the configuration in service; switches when the file changes."""

    def __init__(self, state_path: Path, environments: int = DEFAULT_ENVIRONMENTS, max_body_bytes: int = 1 << 20):
        self.state_path = Path(state_path)
        self.watcher = TargetWatcher(state_path)
        self.size = environments
        self.max_body_bytes = max_body_bytes
        self.started_at = _now()
        self.active: Environments | None = None
        self.pending: Environments | None = None
        self.retiring: list[Environments] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def refresh(self) -> Environments:
        """The environments to send a request to now; starts a switch when the configuration changed."""
        target = self.watcher.get()
        if self.active is None:
            self.active = Environments(target, self.size)
            self._spawn(self.active.warm())
        elif target != self.active.target and (self.pending is None or self.pending.target != target):
            if self.pending is not None:  # superseded while warming
                self.pending.retire()
            self.pending = Environments(target, self.size)
            self._spawn(self._switch(self.pending))
        self.retiring = [env for env in self.retiring if not env.closed]
        return self.active

    async def _switch(self, fresh: Environments) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fresh.warm(), SWITCH_TIMEOUT_S)
        if self.pending is not fresh or self.active is None:
            return
        old, self.active, self.pending = self.active, fresh, None
        old.retire()
        if not old.closed:
            self.retiring.append(old)
        logger.info(json.dumps({"ts": _now(), "event": "switched", **_describe(fresh.target)}))

    def replace_broken(self, broken: Environments) -> None:
        """An environment process died (its pool is unusable): the same configuration gets fresh environments."""
        if self.active is broken:
            self.active = Environments(broken.target, self.size)
            self._spawn(self.active.warm())
        broken.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def health(self) -> dict[str, Any]:
        active = self.refresh()
        return {
            "status": "ok",
            "pid": os.getpid(),
            "started_at": self.started_at,
            **_describe(active.target),
            "switching": self.pending is not None or not active.warmed,
            "retiring_in_flight": sum(env.in_flight for env in self.retiring),
            "environments": self.size,
            "state_file": str(self.state_path),
        }

    async def watch(self) -> None:
        """Notice a new configuration even while no request arrives."""
        while True:
            self.refresh()
            await asyncio.sleep(_POLL_S)

    def close(self) -> None:
        for env in (self.active, self.pending, *self.retiring):
            if env is not None:
                env.close()


def _describe(target: ApiTarget) -> dict[str, Any]:
    return {
        "endpoint_name": target.endpoint_name if target.deployed else None,
        "model_version": target.model_version if target.deployed else None,
        "revision": target.revision,
    }


# --- HTTP ⇄ payload 2.0 ----------------------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


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
    text: str | None = None
    if not content_type or content_type.startswith(_TEXT_TYPES):
        with contextlib.suppress(UnicodeDecodeError):
            text = body.decode("utf-8")
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {key: value for key, value in headers.items() if key != "cookie"},
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
    if "cookie" in headers:
        event["cookies"] = [part.strip() for part in headers["cookie"].split(";") if part.strip()]
    if query:
        event["queryStringParameters"] = dict(part.partition("=")[::2] for part in query.split("&") if part)
    if body:
        event["body"] = text if text is not None else base64.b64encode(body).decode("ascii")
    return event


def http_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) from a Lambda's payload 2.0 answer (a bare value means 200 with it as JSON)."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, {"content-type": "application/json"}, json.dumps(result).encode()
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    return int(result["statusCode"]), headers, data


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case names; repeated headers joined with commas (payload 2.0)."""
    headers: dict[str, str] = {}
    for key, value in raw:
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        headers[name] = f"{headers[name]},{text}" if name in headers else text
    return headers


# --- the app ----------------------------------------------------------------------------------------------------


def create_app(state_path: Path, *, environments: int = DEFAULT_ENVIRONMENTS, max_body_bytes: int = 1 << 20) -> Any:
    """The Starlette app (with the JSON access log around it) serving the page and the function."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    gateway = Gateway(state_path, environments, max_body_bytes)
    static = {
        path: (resources.files("web").joinpath(name).read_bytes(), kind) for path, (name, kind) in _STATIC.items()
    }

    def error(status: int, code: str, message: str, request_id: str, **headers: str) -> Response:
        origin = gateway.active.target.allow_origin if gateway.active else "*"
        payload = {"error": code, "message": message, "request_id": request_id}
        extra = {"access-control-allow-origin": origin, "apigw-requestid": request_id, **headers}
        return JSONResponse(payload, status_code=status, headers=extra)

    async def page(request: Request) -> Response:
        data, kind = static[request.url.path]
        headers = {"content-type": kind, "cache-control": "no-cache", "x-content-type-options": "nosniff"}
        return Response(data, headers=headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse(gateway.health())

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > gateway.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            too_big = too_big or size > gateway.max_body_bytes
            if size > _DRAIN_LIMIT_BYTES:
                break
            if not too_big:
                chunks.append(chunk)
        if too_big:
            limit = gateway.max_body_bytes
            raise HttpError(413, "payload too large", f"the request body is over the limit of {limit} bytes")
        return b"".join(chunks)

    async def predict(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        request.state.request_id = request_id
        if request.method not in ("POST", "OPTIONS"):
            return error(405, "method not allowed", "use POST /predict", request_id, allow="POST, OPTIONS")
        try:
            body = await read_body(request)
        except HttpError as failure:
            return error(failure.status, failure.error, failure.message, request_id, connection="close")
        headers = _headers(request.headers.raw)
        client = request.client.host if request.client else "127.0.0.1"
        event = build_event(request.method, "/predict", request.url.query, headers, body, client, request_id)
        environments = gateway.refresh()
        request.state.endpoint = environments.target.endpoint_name
        try:
            status, out_headers, data = http_response(await environments.invoke(event, request_id))
        except TimeoutError:
            message = f"the function did not answer within {lambda_runtime.TIMEOUT_S} s"
            return error(504, "gateway timeout", message, request_id)
        except BrokenProcessPool:
            gateway.replace_broken(environments)
            message = f"the function's runtime exited; quote request id {request_id}"
            return error(502, "bad gateway", message, request_id)
        except Exception:  # noqa: BLE001 - like API Gateway: a failed function is a 502, never a traceback
            logger.exception(json.dumps({"event": "function-error", "request_id": request_id}))
            return error(502, "bad gateway", f"the function failed; quote request id {request_id}", request_id)
        out_headers["apigw-requestid"] = request_id
        return Response(data, status_code=status, headers=out_headers)

    async def not_found(request: Request) -> Response:
        message = f"no route {request.method} {request.url.path}; open / or POST /predict"
        return error(404, "not found", message, str(uuid.uuid4()))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        gateway.refresh()
        watcher = asyncio.get_running_loop().create_task(gateway.watch())
        try:
            yield
        finally:  # after the in-flight requests have finished (uvicorn then re-raises the SIGTERM it caught)
            watcher.cancel()
            gateway.close()
            logger.info(json.dumps({"ts": _now(), "event": "stopped", "pid": os.getpid()}))

    any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes = [Route(path, page, methods=["GET", "HEAD"]) for path in static]
    routes += [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/predict", predict, methods=any_method),
        Route("/{path:path}", not_found, methods=any_method),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return AccessLog(app)


class AccessLog:
    """ASGI middleware: one JSON line per request on the ``sentiflow.api`` logger."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def record_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            state = scope.get("state") or {}
            entry = {
                "ts": _now(),
                "event": "access",
                "client": (scope.get("client") or ("", 0))[0],
                "method": scope["method"],
                "path": scope["path"],
                "status": status[0],
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                **{key: state[key] for key in ("request_id", "endpoint") if state.get(key)},
            }
            logger.info(json.dumps(entry))


# --- running it -------------------------------------------------------------------------------------------------


def configure_logging() -> None:
    """JSON lines on stderr for the access log."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [stream]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def make_server(app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=int(lambda_runtime.TIMEOUT_S) + 5,  # in-flight invocations may take that long
    )
    return uvicorn.Server(config)


def serve(settings: Settings, sock: socket.socket, *, environments: int = DEFAULT_ENVIRONMENTS) -> None:
    """Serve on the listening ``sock`` in the foreground until SIGTERM/SIGINT; then finish in-flight requests."""
    configure_logging()
    app = create_app(api_state_path(settings), environments=environments, max_body_bytes=settings.serve_max_body_bytes)
    host, port = sock.getsockname()[:2]
    logger.info(json.dumps({"ts": _now(), "event": "listening", "url": f"http://{host}:{port}", "pid": os.getpid()}))
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal under the handler it found: make that a no-op, so
    # a drained gateway exits 0 (a second signal during the drain still forces the exit).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    make_server(app).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    """``python -m serve.gateway --fd N`` (the local backend's way) or ``--host H --port P``."""
    from core.config import get_settings, refuse_open_host

    parser = argparse.ArgumentParser(prog="python -m serve.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, help="an inherited listening socket")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: SENTIFLOW_API_PORT")
    parser.add_argument("--environments", type=int, default=DEFAULT_ENVIRONMENTS, help="execution environments")
    args = parser.parse_args(argv)
    settings = get_settings()
    port = settings.api_port if args.port is None else args.port
    try:
        if args.fd is None:
            refuse_open_host(args.host, "the API gateway")
        sock = socket.socket(fileno=args.fd) if args.fd is not None else listening_socket(args.host, port)
    except SentiflowError as failure:
        sys.exit(f"error: {failure}")
    serve(settings, sock, environments=max(1, args.environments))


if __name__ == "__main__":
    main()
