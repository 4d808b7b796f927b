"""Local batch transform, behaving like the SageMaker Batch Transform agent in front of the model's container.

The job ``CreateTransformJob`` describes for the aws backend (``SplitType=Line``, ``BatchStrategy=MultiRecord``,
``ContentType=text/csv``, ``Accept=text/csv``, ``AssembleWith=Line``, ``MaxConcurrentTransforms=1``):

* an endpoint server for the model is started the way a deploy starts one (:func:`start_endpoint_server`, with the
  transform's model environment, e.g. the row limit lifted) and stopped at the end;
* each input file is split by line; whole lines are packed into mini-batches of at most ``MaxPayloadInMB``
  (``SENTIFLOW_TRANSFORM_MAX_PAYLOAD_MB``, 6 MiB) — a line that alone is larger fails the job — and each mini-batch
  is one ``POST /invocations``;
* the answers are assembled per line into ``<output prefix>/<file>.out``: the mini-batch's answer, then a newline
  (with MultiRecord the agent treats each answer as one record), so the file holds one ``label,score`` line per input
  record, in order, with a blank line after each mini-batch — readers skip blank lines;
* a ``.out`` is written only when its whole file succeeded; a failing mini-batch fails the job with the input file,
  its first and last line numbers, and the model's one-line error.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from backends.base import LogLine
from backends.local.endpoints import start_endpoint_server, unpack_model_into
from backends.local.storage import LocalArtifactStore
from core import processes
from core.config import Settings
from core.errors import SentiflowError

CSV = "text/csv"
MIB = 1 << 20
# The transform's model environment, as the aws backend's CreateTransformJob sets it (the online endpoint's review
# limit is lifted); the CSV size limit follows MaxPayloadInMB below.
TRANSFORM_ENVIRONMENT = {"SENTIFLOW_SERVE_MAX_REVIEWS": "100000"}
INVOCATION_TIMEOUT_S = 600.0  # ModelClientConfig's InvocationsTimeoutInSeconds default
INVOCATION_ATTEMPTS = 1 + 3  # ... and its InvocationsMaxRetries default: transport errors and 5xx are retried
_LINE_IN_MESSAGE = re.compile(r"\bline (\d+)\b")


class LocalBatchTransformer:
    """``backends.base.BatchTransformer`` for the local backend."""

    def __init__(self, settings: Settings, store: LocalArtifactStore, max_payload_bytes: int | None = None) -> None:
        self.settings = settings
        self.store = store
        self.max_payload_bytes = max_payload_bytes or settings.transform_max_payload_mb * MIB

    def transform(self, model_uri: str, input_uri: str, output_prefix: str, log: LogLine) -> str:
        """Score every line of every file under ``input_uri``; returns the URI of the output prefix."""
        input_keys = self._input_keys(input_uri)
        output_key = (self.store.key_from_uri(output_prefix) if "://" in output_prefix else output_prefix).strip("/")
        base = self.store.key_from_uri(input_uri).strip("/")
        with tempfile.TemporaryDirectory(prefix="transform-") as tmp:
            scratch = Path(tmp)
            model_dir = self._unpacked_model(model_uri, scratch)
            server = start_endpoint_server(
                self.settings,
                model_dir,
                scratch / "endpoint",
                f"transform-{uuid.uuid4().hex[:8]}",
                # One request at a time (MaxConcurrentTransforms=1) needs one worker; bodies up to MaxPayloadInMB.
                extra=("--workers", "1", "--max-body-bytes", str(self.max_payload_bytes)),
                env={**TRANSFORM_ENVIRONMENT, "SENTIFLOW_SERVE_MAX_CSV_BYTES": str(self.max_payload_bytes)},
            )
            try:
                with httpx.Client(base_url=str(server.url), timeout=INVOCATION_TIMEOUT_S, trust_env=False) as client:
                    for key in input_keys:
                        relative = Path(key).name if key == base else key[len(base) :].strip("/")
                        self._transform_object(client, key, relative, f"{output_key}/{relative}.out", scratch, log)
            finally:
                processes.stop(server, grace_s=10.0)
        return self.store.uri(output_key)

    def _transform_object(
        self, client: httpx.Client, key: str, relative: str, out_key: str, scratch: Path, log: LogLine
    ) -> None:
        started = time.perf_counter()
        local_in = self.store.get_file(key, scratch / "input" / relative)
        local_out = scratch / "output" / f"{relative}.out"
        count, batches = self._transform_file(client, local_in, local_out, self.store.uri(key))
        uri, _ = self.store.put_file(local_out, out_key)  # only now, with every mini-batch answered
        seconds = time.perf_counter() - started
        log(f"transform: {count} records of {relative} ({batches} mini-batches) → {uri} in {seconds:.1f} s")

    def _input_keys(self, input_uri: str) -> list[str]:
        key = self.store.key_from_uri(input_uri).strip("/")
        if self.store.path(key).is_file():
            return [key]
        keys = [k for k in self.store.list(key) if not Path(k).name.startswith(".")]
        if not keys:
            raise SentiflowError(
                f"batch transform input {input_uri} holds no files; point it at the test channel's features CSV"
            )
        return keys

    def _unpacked_model(self, model_uri: str, scratch: Path) -> Path:
        tar_path = self.store.get_file(self.store.key_from_uri(model_uri), scratch / "model.tar.gz")
        return unpack_model_into(tar_path, scratch / "model")

    def _transform_file(self, client: httpx.Client, source: Path, target: Path, source_uri: str) -> tuple[int, int]:
        """Send ``source`` mini-batch by mini-batch; write the assembled answers to ``target``. (records, batches)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        records = batches = 0
        with open(target, "wb") as out:
            for numbers, body in mini_batches(source, self.max_payload_bytes, source_uri):
                answer = self._invoke(client, body, numbers, source_uri)
                out.write(answer if answer.endswith(b"\n") else answer + b"\n")
                out.write(b"\n")  # AssembleWith=Line: a newline after each (multi-record) answer
                records += len(numbers)
                batches += 1
        return records, batches

    def _invoke(self, client: httpx.Client, body: bytes, numbers: list[int], source_uri: str) -> bytes:
        where = f"batch transform input {source_uri}, lines {numbers[0]}–{numbers[-1]}"
        failure = ""
        for _ in range(INVOCATION_ATTEMPTS):
            try:
                response = client.post("/invocations", content=body, headers={"Content-Type": CSV, "Accept": CSV})
            except httpx.HTTPError as error:
                failure = f"the model server did not answer ({type(error).__name__}: {error})"
                continue
            if response.status_code == 200:
                return response.content
            failure = f"the model answered HTTP {response.status_code}: {_model_message(response.content, numbers)}"
            if response.status_code < 500:
                break  # a client error is the data's fault: retrying gives the same answer
        raise SentiflowError(f"{where}: {failure}")


def mini_batches(path: Path, max_bytes: int, source_uri: str) -> Iterator[tuple[list[int], bytes]]:
    """(line numbers, body) for MultiRecord mini-batches: as many whole non-blank lines as fit in ``max_bytes``."""
    numbers: list[int] = []
    parts: list[bytes] = []
    size = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # not a record
            if not line.endswith(b"\n"):
                line += b"\n"
            if len(line) > max_bytes:
                raise SentiflowError(
                    f"batch transform input {source_uri}, line {number}: the record has {len(line)} bytes, more "
                    f"than MaxPayloadInMB ({max_bytes} bytes); raise SENTIFLOW_TRANSFORM_MAX_PAYLOAD_MB"
                )
            if size + len(line) > max_bytes:
                yield numbers, b"".join(parts)
                numbers, parts, size = [], [], 0
            numbers.append(number)
            parts.append(line)
            size += len(line)
    if parts:
        yield numbers, b"".join(parts)


def _model_message(body: bytes, numbers: list[int]) -> str:
    """The model's one-line message; a "line K" in it (K counts the mini-batch's records) also names the file line."""
    text = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
        message = str(payload.get("message") or text) if isinstance(payload, dict) else text
    except ValueError:
        message = text
    message = " ".join(message.split())[:500] or "(empty body)"
    found = _LINE_IN_MESSAGE.search(message)
    if found and 1 <= int(found.group(1)) <= len(numbers):
        message += f" (line {numbers[int(found.group(1)) - 1]} of the file)"
    return message
