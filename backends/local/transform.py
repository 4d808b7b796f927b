"""Local batch transform: SageMaker Batch Transform semantics, run with the serving functions in-process.

Like a transform job with ``SplitType=Line``, ``BatchStrategy=MultiRecord``, ``ContentType=text/csv`` and
``Accept=text/csv``: every file under the input prefix is split by line, mini-batches go through
``input_fn → predict_fn → output_fn`` (the very functions the endpoint runs), and the answers land in
``<output prefix>/<input file name>.out`` — one ``label,score`` line per non-blank input line, in order.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.base import LogLine
from backends.local.storage import LocalArtifactStore
from core.config import Settings
from core.errors import SentiflowError

CSV = "text/csv"


class LocalBatchTransformer:
    """``backends.base.BatchTransformer`` for the local backend."""

    def __init__(self, settings: Settings, store: LocalArtifactStore, batch_size: int | None = None) -> None:
        self.settings = settings
        self.store = store
        self.batch_size = batch_size or settings.serve_max_reviews

    def transform(self, model_uri: str, input_uri: str, output_prefix: str, log: LogLine) -> str:
        """Score every line of every file under ``input_uri``; returns the URI of the output prefix."""
        from model.inference import model_fn

        input_keys = self._input_keys(input_uri)
        output_key = (self.store.key_from_uri(output_prefix) if "://" in output_prefix else output_prefix).strip("/")
        with tempfile.TemporaryDirectory(prefix="transform-") as scratch, _torch_threads(1):
            model = model_fn(str(self._unpacked_model(model_uri, Path(scratch))))
            base = self.store.key_from_uri(input_uri).strip("/")
            for key in input_keys:
                relative = Path(key).name if key == base else key[len(base) :].strip("/")
                local_in = self.store.get_file(key, Path(scratch) / "input" / relative)
                local_out = Path(scratch) / "output" / f"{relative}.out"
                started = time.perf_counter()
                count = self._transform_file(model, local_in, local_out, self.store.uri(key))
                uri, _ = self.store.put_file(local_out, f"{output_key}/{relative}.out")
                log(f"transform: {count} records of {relative} → {uri} in {time.perf_counter() - started:.1f} s")
        return self.store.uri(output_key)

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
        from model.artifact import ArtifactError, unpack_model

        key = self.store.key_from_uri(model_uri)
        tar_path = self.store.get_file(key, scratch / "model.tar.gz")
        try:
            return unpack_model(tar_path, scratch / "model")
        except ArtifactError as error:
            raise SentiflowError(f"model {model_uri} cannot be used for batch transform: {error}") from None

    def _transform_file(self, model: Any, source: Path, target: Path, source_uri: str) -> int:
        from model.inference import BadRequest, input_fn, output_fn, predict_fn

        target.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with open(target, "wb") as out:
            for first_line, lines in _batches(source, self.batch_size):
                try:
                    data = input_fn("".join(lines), CSV, max_reviews=len(lines))
                    out.write(output_fn(predict_fn(data, model), CSV))
                except BadRequest as error:
                    raise SentiflowError(
                        f"batch transform input {source_uri}, lines {first_line}–{first_line + len(lines) - 1}: {error}"
                    ) from None
                count += len(lines)
        return count


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch on ``count`` threads, then restore (many OpenMP threads oversubscribe a shared small
    machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _batches(path: Path, size: int) -> Iterator[tuple[int, list[str]]]:
    """(first line number, non-blank lines) chunks of at most ``size`` lines."""
    batch: list[str] = []
    first = 1
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if not batch:
                first = number
            batch.append(line if line.endswith("\n") else line + "\n")
            if len(batch) == size:
                yield first, batch
                batch = []
    if batch:
        yield first, batch
