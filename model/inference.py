"""The SageMaker PyTorch serving functions — the one inference path.

This file ships inside ``model.tar.gz`` as ``code/model/inference.py`` (``code/inference.py`` re-exports
the four functions), and the local server, the local batch transform and the serving-parity check call the
very same functions. It imports only the standard library, numpy and ``model.*`` (which the artifact carries).

Requests (``input_fn``):

* ``text/plain`` — one raw review.
* ``application/json`` — ``{"review": "…"}`` (one review), ``{"reviews": ["…", …]}`` or ``["…", …]`` (many).
* ``text/csv`` — already-encoded rows ``length,id_1,…`` one per line (SageMaker's built-in format; shorter
  rows are padded with 0, rows with more than ``max_len`` ids are refused).

Responses (``output_fn``): ``application/json`` (default) — one review gives an object
``{"label": "positive"|"negative", "score": P(positive)}``, several reviews (a JSON list,
``{"reviews": …}`` or CSV rows) give a JSON list of such objects in request order; ``text/csv`` gives
``label,score`` lines.

A request the client got wrong raises :class:`BadRequest`, which carries the HTTP status the server returns.
A review longer than ``max_len`` tokens is truncated (as in training), never refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    from model.artifact import load_artifact

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
