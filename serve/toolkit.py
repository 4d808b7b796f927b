"""In-process dispatch through the SageMaker PyTorch inference toolkit, exactly as a TorchServe worker runs it.

``ToolkitModel(model_dir, env)`` loads a model folder (an unpacked ``model.tar.gz``) the way TorchServe 0.12's Python
worker does (``ts/model_service_worker.py`` → ``ts.model_loader.TsModelLoader.load`` → ``ts.service.Service``), with
the container's handler service ``sagemaker_pytorch_serving_container.handler_service.HandlerService`` — TorchServe's
own Python, no Java. ``invoke`` builds the request batch in the shape ``ts.protocol.otf_message_handler`` decodes from
the frontend (request id; the request headers with their wire names; one parameter ``body`` whose content type is the
bare media type and whose value is a ``bytearray``), runs ``Service.predict`` (which calls ``HandlerService.handle``
with the worker's one ``Context`` → ``Transformer.transform`` → the artifact's ``input_fn → predict_fn →
output_fn``), decodes the binary message the Java frontend would read, and maps it the way the frontend does —
status, reason phrase, ``content-type`` only when the worker set one, the handler's headers, the body — as measured
against TorchServe 0.12.0 (``tests/serve/test_torchserve.py`` replays every request shape against a real one).

Two facts shape its use:

* **One model per process, and it must be the artifact's code.** The toolkit imports ``SAGEMAKER_PROGRAM``
  (``code/inference.py``) once per process with ``<model_dir>/code`` first on ``sys.path``, and that entry point
  imports the artifact's ``model`` package. If the process has already imported a ``model`` package (the project's
  own) or an ``inference`` module from elsewhere, Python would silently run those instead. ``ToolkitModel`` therefore
  refuses (:class:`ArtifactCodeShadowed`) unless every module already imported under those names is byte-identical
  to the artifact's copy — identical source is the same code, which is what lets the project's own processes (tests,
  the flow) load an artifact written by this very checkout, while an artifact built from other code is only ever
  run by a process of its own (``python -m serve.endpoint``). Swapping ``sys.modules`` instead would not isolate
  anything: the handlers import ``model.*`` lazily, at call time.
* **Not thread-safe underneath.** A TorchServe worker handles one batch at a time, and ``Service.predict`` rewrites
  the one shared ``Context`` (``request_processor``, ``request_ids``) for each; 4 threads without a lock got 49 of
  1,200 answers wrong (another request's status or content type). ``invoke`` holds one lock per model; more
  parallelism is more processes, as in the container.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The model environment the aws backend gives the container (backends/aws/packaging.py model_environment):
# the toolkit reads SAGEMAKER_* when the model loads; the handlers read SENTIFLOW_SERVE_* per request.
# ``SAGEMAKER_SUBMIT_DIRECTORY`` is read by neither toolkit; kept for parity with AWS.
DEFAULT_ENV = {
    "SAGEMAKER_PROGRAM": "inference.py",
    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
    "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
    "SAGEMAKER_REGION": "us-east-1",
}
HANDLER_SERVICE = "sagemaker_pytorch_serving_container.handler_service"
MODEL_NAME = "model"  # the toolkit registers its one model as "model" (torchserve.py DEFAULT_TS_MODEL_NAME)
MAX_REQUEST_BYTES = 6_553_500  # TorchServe's default max_request_size: larger bodies get 413 with an empty body
TOOLKIT_VERSIONS = {"sagemaker-inference": "1.10.1", "sagemaker-pytorch-inference": "2.0.25", "torchserve": "0.12.0"}

# Reason phrases of the frontend's own answers (batch-level worker failures, the size limit), as TorchServe sends them.
_REASONS = {413: "Request Entity Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
_REASONS[507] = "Insufficient Storage"


@dataclass(frozen=True)
class Answer:
    """What TorchServe sends the client for one ``POST /invocations``."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; content-type only when set
    body: bytes = b""

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


class ArtifactCodeShadowed(RuntimeError):
    """The process has imported, from elsewhere and with different source, a module the artifact's ``code/``
    provides (e.g. another checkout's ``model`` package): the toolkit would run that instead of the artifact."""


class ToolkitError(RuntimeError):
    """The toolkit could not load the model (``model_fn`` failed, or the entry point is missing)."""


def _read(buffer: memoryview, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from("!i", buffer, offset)
    offset += 4
    if length <= 0:
        return b"", offset
    return bytes(buffer[offset : offset + length]), offset + length


def decode_predict_response(message: bytes) -> tuple[int, str, list[dict]]:
    """Decode ``ts.protocol.otf_message_handler.create_predict_response`` output (what the Java frontend reads):
    (batch code, batch message, [per-request {request_id, content_type, status, phrase, headers, body}])."""
    view = memoryview(message)
    (code,) = struct.unpack_from("!i", view, 0)
    text, offset = _read(view, 4)
    predictions = []
    while True:
        (length,) = struct.unpack_from("!i", view, offset)
        if length == -1:
            break
        request_id, offset = _read(view, offset)
        content_type, offset = _read(view, offset)
        (status,) = struct.unpack_from("!i", view, offset)
        phrase, offset = _read(view, offset + 4)
        (count,) = struct.unpack_from("!i", view, offset)
        offset += 4
        headers = {}
        for _ in range(count):
            key, offset = _read(view, offset)
            value, offset = _read(view, offset)
            headers[key.decode("utf-8")] = value.decode("utf-8")
        body, offset = _read(view, offset)
        predictions.append(
            {
                "request_id": request_id.decode("utf-8"),
                "content_type": content_type.decode("utf-8") or None,
                "status": status,
                "phrase": phrase.decode("utf-8"),
                "headers": headers,
                "body": body,
            }
        )
    return code, text.decode("utf-8"), predictions


def _sources(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


class ToolkitModel:
    """One TorchServe worker's worth of the PyTorch inference toolkit, in this process.

    ``env`` is the model environment; it is written into ``os.environ`` (process-wide, as in a worker, whose
    environment is the container's) over the process's own values, which win over :data:`DEFAULT_ENV`. Raises
    :class:`ArtifactCodeShadowed` (see the module docstring), :class:`ToolkitError` when the model does not load,
    FileNotFoundError when ``model_dir`` has no ``code/`` entry point.
    """

    def __init__(self, model_dir: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> None:
        self.model_dir = Path(model_dir).resolve()
        self.code_dir = self.model_dir / "code"
        inherited = {name: os.environ[name] for name in DEFAULT_ENV if name in os.environ}
        self.env = {**DEFAULT_ENV, **inherited, **dict(env or {})}
        self.entry_name = self.env["SAGEMAKER_PROGRAM"].removesuffix(".py")
        if not (self.code_dir / f"{self.entry_name}.py").is_file():
            raise FileNotFoundError(
                f"{self.code_dir / (self.entry_name + '.py')} not found; point at an unpacked model.tar.gz "
                "(model folder with code/inference.py)"
            )
        os.environ.update(self.env)
        self._check_not_shadowed()
        # The worker's sys.path: the toolkit's start_torchserve exports PYTHONPATH=<model_dir>/code, ahead of
        # site-packages; the Transformer imports SAGEMAKER_PROGRAM from there.
        if str(self.code_dir) not in sys.path:
            sys.path.insert(0, str(self.code_dir))
        import ts
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
        from ts.model_loader import ModelLoaderFactory

        metrics = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
        metrics.initialize_cache()
        metrics.model_name = MODEL_NAME
        # TsModelLoader.load imports the handler service, builds ts.service.Service (with the worker's one Context)
        # and calls HandlerService.initialize(context) → Transformer.validate_and_initialize → model_fn.
        try:
            self._service = ModelLoaderFactory.get_model_loader().load(
                MODEL_NAME, str(self.model_dir), HANDLER_SERVICE, None, 1, None, True, metrics
            )
        except Exception as error:  # noqa: BLE001 - whatever model_fn raised, named in one line
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ToolkitError(f"the toolkit could not load the model in {self.model_dir}: {reason}") from error
        self._service.set_cl_socket(None)
        self._lock = threading.Lock()
        self.module = sys.modules.get(self.entry_name)
        self._check_loaded_from_artifact()

    @property
    def model(self) -> object:
        """What ``model_fn`` returned (the toolkit's Transformer holds it)."""
        return self._service._entry_point.__self__._service._model

    # --- invocation ----------------------------------------------------------------------------------------------
    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) as TorchServe's ``POST /invocations`` answers; ``headers`` has ``content-type``
        only when TorchServe sends one (it sends none for a raised toolkit error or the size limit)."""
        answer = self.answer(body, content_type, accept, headers)
        return answer.status, answer.headers, answer.body

    def answer(
        self, body: bytes, content_type: str | None, accept: str | None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        """:meth:`invoke` with the reason phrase. ``headers`` are further request headers (wire names kept), as
        the frontend passes every request header to the worker; ``content_type``/``accept`` are added unless
        ``headers`` already holds them."""
        if len(body) > MAX_REQUEST_BYTES:
            return Answer(413, _REASONS[413], {}, b"")
        request_headers = dict(headers or {})
        lowered = {name.lower() for name in request_headers}
        if content_type is not None and "content-type" not in lowered:
            request_headers["Content-Type"] = content_type
        if accept is not None and "accept" not in lowered:
            request_headers["Accept"] = accept
        if "content-length" not in lowered:
            request_headers["Content-Length"] = str(len(body))
        wire_type = next((v for k, v in request_headers.items() if k.lower() == "content-type"), None)
        # As ts.protocol.otf_message_handler._retrieve_request decodes it: bytes for the id and the header names and
        # values; the parameter's contentType is the bare media type (Netty's HttpUtil.getMimeType, "" when absent);
        # its value stays a bytearray (decode_input_request=false in the toolkit's TorchServe config).
        batch = [
            {
                "requestId": str(uuid.uuid4()).encode("utf-8"),
                "headers": [
                    {"name": name.encode("utf-8"), "value": value.encode("utf-8")}
                    for name, value in request_headers.items()
                ],
                "parameters": [
                    {
                        "name": "body",
                        "contentType": (wire_type or "").split(";", 1)[0].strip(),
                        "value": bytearray(body),
                    }
                ],
            }
        ]
        with self._lock:
            message = self._service.predict(batch)
        return self._to_http(bytes(message))

    @staticmethod
    def _to_http(message: bytes) -> Answer:
        code, text, predictions = decode_predict_response(message)
        if code != 200 or not predictions:  # a batch-level failure: the frontend answers with its own JSON error
            body = json.dumps({"code": code, "type": "InternalServerException", "message": text}, indent=2)
            return Answer(code, _REASONS.get(code, ""), {"content-type": "application/json"}, (body + "\n").encode())
        prediction = predictions[0]
        response_headers = {k.lower(): v for k, v in prediction["headers"].items()}
        if prediction["content_type"]:
            response_headers["content-type"] = prediction["content_type"]
        return Answer(prediction["status"], prediction["phrase"], response_headers, prediction["body"])

    # --- the guard ----------------------------------------------------------------------------------------------
    def _provided(self) -> list[str]:
        """Top-level module and package names the artifact's ``code/`` provides."""
        return sorted(
            path.stem if path.is_file() else path.name
            for path in self.code_dir.iterdir()
            if (path.suffix == ".py" and path.is_file()) or (path.is_dir() and (path / "__init__.py").is_file())
        )

    def _same_code(self, name: str, origin: Path) -> bool:
        """True when the imported ``name`` (from ``origin``) has the artifact's source, file for file."""
        artifact = self.code_dir / name
        if artifact.is_dir():
            package = origin.parent
            return all(
                (package / path.relative_to(artifact)).is_file()
                and (package / path.relative_to(artifact)).read_bytes() == path.read_bytes()
                for path in _sources(artifact)
            )
        return origin.is_file() and origin.read_bytes() == artifact.with_suffix(".py").read_bytes()

    def _check_not_shadowed(self) -> None:
        for name in self._provided():
            module = sys.modules.get(name)
            origin = getattr(module, "__file__", None) if module is not None else None
            if origin is None:
                continue
            path = Path(origin).resolve()
            if path.is_relative_to(self.code_dir) or self._same_code(name, path):
                continue
            raise ArtifactCodeShadowed(
                f"module {name!r} is already imported from {origin} with source different from "
                f"{self.code_dir / name}; load this model in a process of its own (python -m serve.endpoint)"
            )

    def _check_loaded_from_artifact(self) -> None:
        origin = getattr(self.module, "__file__", None)
        if origin is None:
            raise ArtifactCodeShadowed(f"the toolkit did not import {self.entry_name!r} from {self.code_dir}")
        path = Path(origin).resolve()
        if not (path.is_relative_to(self.code_dir) or self._same_code(self.entry_name, path)):
            raise ArtifactCodeShadowed(f"the toolkit loaded {origin}, not {self.code_dir}'s entry point")
