"""The SageMaker PyTorch serving handlers — the one inference path, shipped with the model.

This module ships inside ``model.tar.gz`` as ``code/model/inference.py``; ``code/inference.py`` (the
``SAGEMAKER_PROGRAM``) re-exports the four handlers. In the PyTorch inference container TorchServe's worker runs
``sagemaker_pytorch_serving_container.handler_service.HandlerService``, whose ``Transformer`` calls
``model_fn → input_fn → predict_fn → output_fn``; the local endpoint (``serve/endpoint.py``) and the local batch
transform call them through that very handler service, in process (``serve/toolkit.py``). Imports: the standard
library, numpy and ``model.*`` (torch through ``model.artifact``); the toolkit is optional (absent in a plain
``pip install``: the handlers still import and raise :class:`BadRequest`, which keeps the toolkit error's
attributes).

The toolkit's contract (sagemaker-inference 1.10.1, sagemaker-pytorch-inference 2.0.25), which the signatures
follow exactly:

* It counts each handler's parameters (``inspect.signature``) and, when there is one more than it hands in, passes
  TorchServe's ``Context`` as that last argument: ``model_fn(model_dir, context)``, ``input_fn(input_data,
  content_type, context)``, ``predict_fn(data, model, context)``, ``output_fn(prediction, accept, context)``. Any
  other extra parameter — a default, a keyword-only one — would receive the Context (issue 10's bug), so there is
  none. ``context=None`` is for direct callers only.
* A handler's exception becomes the HTTP status of a toolkit error (else 500) with the message plus a traceback as
  the body and no Content-Type. A client error must be one JSON line instead, so with a context the handlers
  *answer* errors: they set the status on the context (``context.set_response_status``) and ``output_fn`` returns
  the JSON line ``{"error", "message", "status"}`` with ``application/json``. Unexpected failures answer a one-line
  500 and log the traceback (TorchServe's model log), never send it. Without a context the handlers raise
  :class:`BadRequest`.
* ``output_fn`` returns ``(body, media_type)``, which the toolkit makes the response Content-Type (a bare body would
  get the request's raw Accept header echoed, e.g. ``text/*``).
* The toolkit decodes ``application/json`` and ``text/csv`` bodies as UTF-8 itself, before ``input_fn``, and
  answers 500 when that fails. ``model_fn`` (given a context) asks it to hand those bodies over raw, so invalid
  UTF-8 is a 400 from ``input_fn``.

Requests (``input_fn``):

* ``text/plain`` — one raw review.
* ``application/json`` — ``{"review": "…"}`` (one review; what the Lambda sends), ``{"reviews": ["…", …]}`` or
  ``["…", …]`` (many). At most ``$SENTIFLOW_SERVE_MAX_REVIEWS`` reviews (default 256).
* ``text/csv`` — already-encoded rows ``length,id_1,…`` one per line, as the data stage writes them and Batch
  Transform sends them (``SplitType=Line``, ``BatchStrategy=MultiRecord``: a mini-batch of whole lines, thousands of
  rows). Limited by size, not by count: at most ``$SENTIFLOW_SERVE_MAX_CSV_BYTES`` bytes (default 6 MiB, Batch
  Transform's ``MaxPayloadInMB=6``). Shorter rows are padded with 0; rows with more than ``max_len`` ids are refused.

Responses (``output_fn``): ``application/json`` (default) — per review ``{"label": "positive"|"negative", "score":
P(positive), "known_words": n}``, plus ``"warning"`` when ``n == 0`` (the model knew none of the review's words — it
was only stopwords, markup or words outside the vocabulary —, so the score is a guess); one object for ``{"review"}``
and ``text/plain``, else a list in request order. ``text/csv`` gives ``label,score`` lines, one per input row (Batch
Transform's ``AssembleWith=Line``).

Every request runs through the model's length-sorted, token-budget batching as a whole (``SentimentModel``), so a
transform mini-batch is sorted across all its rows. Each TorchServe worker is one process with one model; its torch
runs on ``$SENTIFLOW_SERVE_TORCH_THREADS`` threads (default 1, set in ``model_fn``): the container starts one worker
per CPU, and each worker's OpenMP pool would otherwise also take every CPU — measured under contention, one review
took 276–631 ms with the default pools against 6 ms with one thread per worker (issue 10).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # the SageMaker inference toolkit: in the PyTorch inference container and in the local twin
    from sagemaker_inference import content_types as _toolkit_content_types
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:  # a plain install: the handlers still import, and BadRequest keeps the same attributes
    _toolkit_content_types = None

    class _ToolkitError(Exception):  # type: ignore[no-redef]
        """Stand-in for ``sagemaker_inference.errors.BaseInferenceToolkitError`` (same constructor)."""

        def __init__(self, status_code: int, message: str, phrase: str) -> None:
            self.status_code = status_code
            self.message = message
            self.phrase = phrase
            super().__init__(status_code, message, phrase)


log = logging.getLogger(__name__)

MAX_REVIEWS_ENV = "SENTIFLOW_SERVE_MAX_REVIEWS"
DEFAULT_MAX_REVIEWS = 256
MAX_CSV_BYTES_ENV = "SENTIFLOW_SERVE_MAX_CSV_BYTES"
DEFAULT_MAX_CSV_BYTES = 6 * 1024 * 1024  # Batch Transform's MaxPayloadInMB=6: the largest mini-batch it sends
TORCH_THREADS_ENV = "SENTIFLOW_SERVE_TORCH_THREADS"
DEFAULT_TORCH_THREADS = 1
POSITIVE_THRESHOLD = 0.5
KNOWN_WORD_ID = 2  # ids 0 (padding) and 1 (infrequent word) carry no word the model learned
UNKNOWN_WORDS_WARNING = (
    "the model knows none of this review's words (only stopwords, markup or words outside its vocabulary), "
    "so the score is a guess"
)

JSON = "application/json"
CSV = "text/csv"
TEXT = "text/plain"
SUPPORTED_CONTENT_TYPES = (TEXT, JSON, CSV)
SUPPORTED_ACCEPTS = (JSON, CSV)

ERROR_CODES = {
    400: ("bad_request", "Bad Request"),
    406: ("not_acceptable", "Not Acceptable"),
    413: ("payload_too_large", "Payload Too Large"),
    415: ("unsupported_media_type", "Unsupported Media Type"),
    500: ("internal_error", "Internal Server Error"),
}


def error_body(status: int, message: str) -> bytes:
    """sentiflow's one-line JSON error ``{"error", "message", "status"}`` (no newline inside or after)."""
    code = ERROR_CODES.get(status, ("error", ""))[0]
    return json.dumps({"error": code, "message": message, "status": status}).encode("utf-8")


class BadRequest(_ToolkitError):
    """A request the client must fix; ``status`` is the HTTP status to answer with (4xx).

    A subclass of the toolkit's ``BaseInferenceToolkitError`` (``status_code``, ``message`` = the JSON line,
    ``phrase``), so raised through the toolkit it still keeps its status. ``str(error)`` is the plain message.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        self.detail = message
        super().__init__(status, error_body(status, message).decode("utf-8"), ERROR_CODES.get(status, ("", ""))[1])

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class CsvRows:
    """Encoded ``text/csv`` rows, flat: row ``i`` is ``values[starts[i] : starts[i] + widths[i]]`` (``length, ids…``)
    from line ``lines[i]`` of the body. One array for a whole transform mini-batch, not one per row."""

    values: np.ndarray
    starts: np.ndarray
    widths: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class InferenceInput:
    """What ``input_fn`` decoded: raw reviews, or encoded CSV rows."""

    texts: list[str] | None = None
    rows: CsvRows | None = None
    single: bool = False

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.rows) if self.rows is not None else 0


@dataclass(frozen=True)
class Prediction:
    """``predict_fn``'s output, in request order: P(positive) and the number of known words per review."""

    scores: np.ndarray
    known_words: np.ndarray
    single: bool = False


@dataclass(frozen=True)
class Rejected:
    """A request answered with an error instead of a prediction: passed along input_fn → predict_fn → output_fn
    when the toolkit's context carries the status."""

    status: int
    message: str


# --- limits and negotiation ------------------------------------------------------------------------------------


def label_for(score: float) -> str:
    """The label a score maps to (the one threshold of serving, batch transform and evaluation)."""
    return "positive" if score >= POSITIVE_THRESHOLD else "negative"


def media_type(header: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` → ``"application/json"``."""
    return (header or "").split(";", 1)[0].strip().lower()


def _positive_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        return default
    return value if value > 0 else default


def max_reviews_limit() -> int:
    """The most raw reviews one request may carry: ``$SENTIFLOW_SERVE_MAX_REVIEWS`` (the model environment), else
    256. Read per request; in a worker the environment is fixed for its life anyway."""
    return _positive_env(MAX_REVIEWS_ENV, DEFAULT_MAX_REVIEWS)


def max_csv_bytes() -> int:
    """The largest ``text/csv`` body: ``$SENTIFLOW_SERVE_MAX_CSV_BYTES``, else 6 MiB (a Batch Transform mini-batch
    with ``MaxPayloadInMB=6`` always fits)."""
    return _positive_env(MAX_CSV_BYTES_ENV, DEFAULT_MAX_CSV_BYTES)


def torch_threads() -> int:
    """Torch threads per serving worker: ``$SENTIFLOW_SERVE_TORCH_THREADS``, else 1."""
    return _positive_env(TORCH_THREADS_ENV, DEFAULT_TORCH_THREADS)


def response_content_type(accept: str | None) -> str:
    """The concrete media type ``output_fn`` answers with for an ``Accept`` header (406 when none fits).

    No header, ``*/*`` and ``application/*`` give JSON, ``text/*`` gives CSV; q-values rank the choices."""
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


# --- decoding -----------------------------------------------------------------------------------------------


def _decode(body: bytes | bytearray | str) -> str:
    if isinstance(body, str):
        text = body
    else:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadRequest(f"request body is not valid UTF-8 (byte {error.start}); send UTF-8 text") from None
    if not text.strip():
        raise BadRequest('request body is empty; send a review (text/plain) or JSON {"review": "..."}')
    return text.lstrip("\ufeff")


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise BadRequest(
            f"request carries {count} reviews, more than the limit of {limit}; split it into smaller requests",
            status=413,
        )


def _reviews_from_json(text: str) -> tuple[list[str], bool]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequest(
            f"request body is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
            'send {"review": "..."}'
        ) from None
    except RecursionError:  # e.g. 10,000 nested brackets: the decoder's recursion limit, not a server fault
        raise BadRequest('JSON body nests too deeply; send {"review": "..."} or {"reviews": ["...", ...]}') from None
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


_NOT_CSV_DIGITS = str.maketrans("", "", "0123456789,\r\n")


def _csv_row(number: int, line: str) -> np.ndarray:
    """One line ``length,id_1,...`` parsed with ``int`` per value (spaces and signs allowed), or a 400 naming it."""
    try:
        return np.asarray([int(value) for value in line.split(",")], dtype=np.int64)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"text/csv line {number} is not comma-separated integers 'length,id_1,...'; "
            "send encoded rows, or raw text as text/plain or application/json"
        ) from None


def _rows_from_csv(text: str) -> CsvRows:
    """All rows of a ``text/csv`` body. A body of only digits, commas and line breaks (what the data stage writes)
    is parsed by numpy in one call; any other, or one numpy does not read cleanly, line by line."""
    numbered = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise BadRequest("text/csv body holds no rows; send 'length,id_1,...' lines")
    lines = np.fromiter((number for number, _ in numbered), dtype=np.int64, count=len(numbered))
    widths = np.fromiter((line.count(",") + 1 for _, line in numbered), dtype=np.int64, count=len(numbered))
    values = None
    if not text.translate(_NOT_CSV_DIGITS):
        with contextlib.suppress(ValueError), warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (instead of failing) on data it cannot read to the end
            values = np.fromstring(",".join(line for _, line in numbered), dtype=np.int64, sep=",")
        if values is not None and len(values) != int(widths.sum()):
            values = None  # an empty field (",,", a trailing comma): the slow path names the line
    if values is None:
        parts = [_csv_row(number, line) for number, line in numbered]
        values = np.concatenate(parts)
        widths = np.fromiter((len(part) for part in parts), dtype=np.int64, count=len(parts))
    starts = np.zeros(len(widths), dtype=np.int64)
    np.cumsum(widths[:-1], out=starts[1:])
    return CsvRows(values=values, starts=starts, widths=widths, lines=lines)


# --- answering errors -------------------------------------------------------------------------------------------


def _answer(error: BadRequest, context: Any) -> Rejected:
    """With the toolkit's context: record the error status for the response and carry the error along to
    ``output_fn``. Without one (a direct caller): raise it."""
    if context is None:
        raise error
    context.set_response_status(error.status, ERROR_CODES.get(error.status, ("", ""))[1])
    return Rejected(error.status, error.detail)


def _internal(where: str, error: Exception, context: Any) -> Rejected:
    """An unexpected failure: the traceback goes to the log (TorchServe's model log), the client gets one JSON line
    with status 500 — never a traceback."""
    if context is None:
        raise error
    log.exception("%s failed", where)
    context.set_response_status(500, ERROR_CODES[500][1])
    return Rejected(500, f"internal error in {where}: {type(error).__name__}: {error}")


def _take_raw_bodies() -> None:
    """Ask the toolkit not to decode ``application/json`` / ``text/csv`` bodies before ``input_fn``.

    ``Transformer.transform`` (sagemaker_inference/transformer.py) does ``if content_type in
    content_types.UTF8_TYPES: input_data = input_data.decode("utf-8")`` outside every handler, so invalid UTF-8 would
    be a 500 with a traceback; with the list emptied ``input_fn`` gets the raw bytes and answers 400. It reads the
    module attribute per request, and the worker serves only this model (the PyTorch default ``input_fn``, the only
    other reader, is replaced by ours)."""
    if _toolkit_content_types is not None and getattr(_toolkit_content_types, "UTF8_TYPES", None):
        _toolkit_content_types.UTF8_TYPES = []


# --- the four SageMaker handlers --------------------------------------------------------------------------------


def model_fn(model_dir: str, context: Any = None) -> Any:
    """Load the model artifact (network + preprocessing state) from an unpacked ``model.tar.gz``.

    Under the toolkit (a context is given) it also sets this worker's torch threads (see the module docstring) and
    takes over UTF-8 decoding from the toolkit."""
    from model.artifact import load_artifact

    if context is not None:
        import torch

        torch.set_num_threads(torch_threads())
        _take_raw_bodies()
    return load_artifact(model_dir)


def input_fn(input_data: bytes | bytearray | str, content_type: str | None, context: Any = None) -> Any:
    """Decode a request body into raw reviews or encoded rows (the formats: module docstring).

    Returns :class:`InferenceInput`, or — with a context — :class:`Rejected` for a bad request."""
    try:
        kind = media_type(content_type)
        if kind not in SUPPORTED_CONTENT_TYPES:
            sent = f"Content-Type {content_type!r} is not supported" if kind else "request has no Content-Type"
            raise BadRequest(f"{sent}; send one of {', '.join(SUPPORTED_CONTENT_TYPES)}", status=415)
        if kind == CSV and len(input_data) > (limit := max_csv_bytes()):
            raise BadRequest(
                f"text/csv body has {len(input_data)} bytes, more than the limit of {limit}; "
                "send smaller mini-batches (MaxPayloadInMB)",
                status=413,
            )
        text = _decode(input_data)
        if kind == TEXT:
            return InferenceInput(texts=[text], single=True)
        if kind == JSON:
            reviews, single = _reviews_from_json(text)
            _check_count(len(reviews), max_reviews_limit())
            return InferenceInput(texts=reviews, single=single)
        return InferenceInput(rows=_rows_from_csv(text))
    except BadRequest as error:
        return _answer(error, context)
    except Exception as error:  # noqa: BLE001 - answered as one JSON line; the traceback goes to the log
        return _internal("input_fn", error, context)


def _checked_rows(rows: CsvRows, max_len: int, vocab_size: int) -> np.ndarray:
    """Validate encoded rows against the model (a 400 naming the first bad line); each row's number of known words."""
    too_wide = np.nonzero(rows.widths > max_len + 1)[0]
    if len(too_wide):
        first = too_wide[0]
        raise BadRequest(
            f"text/csv line {rows.lines[first]} has {rows.widths[first] - 1} ids, more than this model's max_len "
            f"{max_len}; send 'length,id_1,...' rows encoded for this model"
        )
    row_of = np.repeat(np.arange(len(rows), dtype=np.int64), rows.widths)
    position = np.arange(len(rows.values), dtype=np.int64) - rows.starts[row_of]  # 0 = the length field
    lengths = rows.values[rows.starts]
    bad = np.where(
        position == 0, (rows.values < 0) | (rows.values > max_len), (rows.values < 0) | (rows.values >= vocab_size)
    )
    if bad.any():
        line = rows.lines[row_of[np.argmax(bad)]]
        raise BadRequest(
            f"text/csv line {line} is out of range (length 0..{max_len}, ids 0..{vocab_size - 1}); "
            "send rows encoded for this model"
        )
    counted = (position >= 1) & (position <= lengths[row_of]) & (rows.values >= KNOWN_WORD_ID)
    return np.bincount(row_of[counted], minlength=len(rows))


def _batch_of(rows: CsvRows, index: np.ndarray, width: int) -> np.ndarray:
    """Rows ``index`` as one zero-padded ``(len(index), width)`` matrix."""
    widths, starts = rows.widths[index], rows.starts[index]
    batch = np.zeros((len(index), width), dtype=np.int64)
    row = np.repeat(np.arange(len(index)), widths)
    column = np.arange(int(widths.sum())) - np.repeat(np.cumsum(widths) - widths, widths)
    batch[row, column] = rows.values[np.repeat(starts, widths) + column]
    return batch


def predict_fn(data: Any, model: Any, context: Any = None) -> Any:
    """P(positive) and known words for every review, the whole request through the model's length-sorted
    token-budget batching. A :class:`Rejected` input passes through unchanged."""
    if isinstance(data, Rejected):
        return data
    try:
        if data.texts is not None:
            encoded = model.preprocessor.encode_texts(data.texts)
            known = np.count_nonzero(encoded[:, 1:] >= KNOWN_WORD_ID, axis=1)
            scores = model.predict_proba(encoded)
        else:
            config, rows = model.preprocessor.config, data.rows
            known = _checked_rows(rows, config.max_len, config.vocab_size)
            lengths = rows.values[rows.starts]
            scores = model.predict_batches(lengths, lambda index: _batch_of(rows, index, config.max_len + 1))
        return Prediction(scores=np.asarray(scores, dtype=np.float64), known_words=known, single=data.single)
    except BadRequest as error:
        return _answer(error, context)
    except Exception as error:  # noqa: BLE001
        return _internal("predict_fn", error, context)


def _answer_item(score: float, known: int) -> dict[str, Any]:
    item: dict[str, Any] = {"label": label_for(score), "score": score, "known_words": known}
    if known == 0:
        item["warning"] = UNKNOWN_WORDS_WARNING
    return item


def output_fn(prediction: Any, accept: str | None, context: Any = None) -> tuple[bytes, str]:
    """Encode predictions as JSON (default) or ``label,score`` CSV lines, per the ``Accept`` header.

    Returns ``(body, media_type)``: the toolkit makes ``media_type`` the response Content-Type."""
    if isinstance(prediction, Rejected):
        return error_body(prediction.status, prediction.message), JSON
    try:
        kind = response_content_type(accept)
        scores = prediction.scores.tolist()
        if kind == CSV:
            return "".join(f"{label_for(score)},{score!r}\n" for score in scores).encode("utf-8"), CSV
        items = [
            _answer_item(score, known) for score, known in zip(scores, prediction.known_words.tolist(), strict=True)
        ]
        payload: Any = items[0] if prediction.single and len(items) == 1 else items
        return json.dumps(payload).encode("utf-8"), JSON
    except BadRequest as error:
        rejected = _answer(error, context)
    except Exception as error:  # noqa: BLE001
        rejected = _internal("output_fn", error, context)
    return error_body(rejected.status, rejected.message), JSON


# The toolkit counts each handler's parameters with ``inspect.signature`` on every request (Transformer.
# _run_handler_function), about a quarter of its dispatch cost; ``inspect.signature`` returns a function's
# ``__signature__`` when it has one, so the (identical) signatures are computed once here.
for _handler in (model_fn, input_fn, predict_fn, output_fn):
    _handler.__signature__ = inspect.signature(_handler)  # type: ignore[attr-defined]
del _handler


# --- for direct callers -------------------------------------------------------------------------------------------


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
