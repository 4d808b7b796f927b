"""The four serving handlers on the tiny trained model, called directly and the way the toolkit calls them."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import model.inference as inference
from model.inference import (
    BadRequest,
    InferenceInput,
    Rejected,
    input_fn,
    label_for,
    model_fn,
    output_fn,
    parse_csv_output,
    predict_fn,
    response_content_type,
)
from tests.fixtures.tiny_model import MAX_LEN, VOCAB_SIZE, TinyModel

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _invoke(model: Any, body: bytes | str, content_type: str, accept: str | None = None) -> tuple[bytes, str]:
    return output_fn(predict_fn(input_fn(body, content_type), model), accept)


def _json(model: Any, body: bytes | str, content_type: str, accept: str | None = None) -> Any:
    payload, media = _invoke(model, body, content_type, accept)
    assert media == "application/json"
    return json.loads(payload)


def _csv_body(rows: np.ndarray) -> str:
    return "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"


class FakeContext:
    """What the handlers use of TorchServe's Context."""

    def __init__(self) -> None:
        self.status: tuple[int, str] | None = None

    def set_response_status(self, code: int, phrase: str) -> None:
        self.status = (code, phrase)


# --- answers ----------------------------------------------------------------------------------------------------


def test_text_plain_gives_one_object_matching_the_model(tiny: TinyModel, tiny_loaded: Any) -> None:
    review = tiny.test_reviews[1]
    result = _json(tiny_loaded, review.encode(), "text/plain; charset=utf-8")
    expected = float(tiny_loaded.predict_texts([review])[0])
    assert set(result) == {"label", "score", "known_words"}
    assert result["label"] == label_for(expected) and result["score"] == pytest.approx(expected, abs=1e-12)
    row = tiny_loaded.preprocessor.encode_texts([review])[0]
    assert result["known_words"] == int((row[1:] >= 2).sum()) > 0


def test_json_shapes_agree(tiny: TinyModel, tiny_loaded: Any) -> None:
    reviews = tiny.test_reviews[:5]
    single = _json(tiny_loaded, json.dumps({"review": reviews[0]}), "application/json")
    listed = _json(tiny_loaded, json.dumps(reviews), "application/json")
    wrapped = _json(tiny_loaded, json.dumps({"reviews": reviews}), "application/json")
    assert isinstance(single, dict) and listed == wrapped and len(listed) == 5
    assert listed[0]["label"] == single["label"] and listed[0]["score"] == pytest.approx(single["score"], abs=1e-6)


@pytest.mark.parametrize("review", ["xyzzy plugh", "<br /><br />", "zzzqqq xxyyzz", "12345"])
def test_a_review_without_known_words_is_answered_with_a_warning(tiny_loaded: Any, review: str) -> None:
    result = _json(tiny_loaded, json.dumps({"review": review}), "application/json")
    assert result["label"] in ("positive", "negative") and 0.0 <= result["score"] <= 1.0
    assert result["known_words"] == 0 and "guess" in result["warning"]


def test_encoded_csv_rows_score_like_raw_text(tiny: TinyModel, tiny_loaded: Any) -> None:
    payload, media = _invoke(tiny_loaded, _csv_body(tiny.test_rows[:20]), "text/csv", "text/csv")
    labels, scores = parse_csv_output(payload.decode())
    from_text = _json(tiny_loaded, json.dumps(tiny.test_reviews[:20]), "application/json")
    assert media == "text/csv"
    assert labels == [item["label"] for item in from_text]
    np.testing.assert_allclose(scores, [item["score"] for item in from_text], atol=1e-6)
    as_json = _json(tiny_loaded, _csv_body(tiny.test_rows[:20]), "text/csv")
    assert [item["known_words"] for item in as_json] == [item["known_words"] for item in from_text]


def test_short_csv_rows_are_padded_and_line_endings_ignored(tiny: TinyModel, tiny_loaded: Any) -> None:
    row = tiny.test_rows[2]
    length = int(row[0])
    short = ",".join(str(v) for v in row[: length + 1])
    full = ",".join(str(v) for v in row)
    assert _invoke(tiny_loaded, short, "text/csv") == _invoke(tiny_loaded, full + "\r\n\n", "text/csv")
    assert _invoke(tiny_loaded, f" {short.replace(',', ' , ')} ", "text/csv") == _invoke(tiny_loaded, full, "text/csv")


def test_review_longer_than_max_len_is_truncated(tiny: TinyModel, tiny_loaded: Any) -> None:
    long_review = tiny.test_reviews[0]
    assert len(long_review.split()) > MAX_LEN
    truncated = " ".join(["a", "great", "film"] + ["wonderful"] * 300)  # its words-neg-punct-2 tokens
    first = _json(tiny_loaded, long_review, "text/plain")
    assert first["score"] == _json(tiny_loaded, truncated, "text/plain")["score"]
    assert first["known_words"] <= MAX_LEN


def test_csv_accept_gives_label_score_lines(tiny: TinyModel, tiny_loaded: Any) -> None:
    payload, media = _invoke(tiny_loaded, json.dumps(tiny.test_reviews[:3]), "application/json", "text/csv")
    lines = payload.decode().splitlines()
    assert media == "text/csv" and len(lines) == 3
    for line in lines:
        label, score = line.split(",")
        assert label == label_for(float(score))


def test_the_whole_request_is_sorted_and_batched_as_one(
    tiny: TinyModel, tiny_loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No 256-row windows: a 600-row mini-batch reaches the model's length-sorted batching in one call."""
    rows = np.vstack([tiny.test_rows] * 3)  # 600 rows
    calls: list[int] = []
    original = type(tiny_loaded).predict_batches

    def recording(self: Any, lengths: np.ndarray, take: Any) -> np.ndarray:
        calls.append(len(lengths))
        return original(self, lengths, take)

    monkeypatch.setattr(type(tiny_loaded), "predict_batches", recording)
    scores = predict_fn(input_fn(_csv_body(rows), "text/csv"), tiny_loaded).scores
    texts = predict_fn(InferenceInput(texts=tiny.test_reviews * 2), tiny_loaded).scores
    assert calls == [600, 400]
    np.testing.assert_allclose(scores, tiny_loaded.predict_proba(rows), atol=1e-6)
    np.testing.assert_allclose(texts, tiny_loaded.predict_texts(tiny.test_reviews * 2), atol=1e-6)


# --- client errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"", "text/plain", 400, "empty"),
        (b"  \n\t ", "application/json", 400, "empty"),
        (b"\xff\xfe bad", "text/plain", 400, "not valid UTF-8 (byte 0)"),
        (b'{"review": "\xc3\x28"}', "application/json", 400, "not valid UTF-8"),
        (b'{"review": ', "application/json", 400, "not valid JSON"),
        (b'{"review": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "application/json", 400, "nests too deeply"),
        (b"[" * 100_000, "application/json", 400, "nests too deeply"),
        (b'{"text": "hi"}', "application/json", 400, "wrong shape"),
        (b'{"reviews": []}', "application/json", 400, "no reviews"),
        (b'["fine", 3]', "application/json", 400, "[1] is a int"),
        (b'{"review": "   "}', "application/json", 400, "review is empty"),
        (b"12,a,3", "text/csv", 400, "line 1 is not comma-separated integers"),
        (b"2,3,4\n\n12 3\n", "text/csv", 400, "line 3 is not comma-separated integers"),
        (b"1,,3", "text/csv", 400, "line 1 is not comma-separated integers"),
        (b"\n \n", "text/csv", 400, "empty"),
        (b"hello", "application/xml", 415, "'application/xml' is not supported"),
        (b"hello", None, 415, "request has no Content-Type"),
    ],
)
def test_bad_input_raises_bad_request(body: bytes, content_type: str | None, status: int, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        input_fn(body, content_type)
    assert caught.value.status == caught.value.status_code == status
    assert fragment in str(caught.value)
    assert json.loads(caught.value.message) == {
        "error": inference.ERROR_CODES[status][0],
        "message": str(caught.value),
        "status": status,
    }


def test_limits_come_from_the_model_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(["good"] * 5)
    assert len(input_fn(body, "application/json")) == 5
    monkeypatch.setenv("SENTIFLOW_SERVE_MAX_REVIEWS", "4")
    with pytest.raises(BadRequest) as caught:
        input_fn(body, "application/json")
    assert caught.value.status == 413 and "limit of 4" in str(caught.value)
    rows = "\n".join(["3,4,5,6"] * 50)  # CSV rows are limited by bytes, not by the review count
    assert len(input_fn(rows, "text/csv")) == 50
    monkeypatch.setenv("SENTIFLOW_SERVE_MAX_CSV_BYTES", str(len(rows) - 1))
    with pytest.raises(BadRequest) as caught:
        input_fn(rows, "text/csv")
    assert caught.value.status == 413 and f"{len(rows)} bytes" in str(caught.value)
    monkeypatch.setenv("SENTIFLOW_SERVE_MAX_REVIEWS", "not a number")
    assert inference.max_reviews_limit() == inference.DEFAULT_MAX_REVIEWS


def test_csv_rows_out_of_range_name_their_line(tiny: TinyModel, tiny_loaded: Any) -> None:
    good = _csv_body(np.vstack([tiny.test_rows] * 2)[:299])
    too_long = ",".join(["3"] * (MAX_LEN + 2))
    with pytest.raises(BadRequest, match=f"line 300 has {MAX_LEN + 1} ids, more than this model's max_len"):
        predict_fn(input_fn(good + too_long, "text/csv"), tiny_loaded)
    with pytest.raises(BadRequest, match="line 300 is out of range"):
        predict_fn(input_fn(good + f"2,5,{VOCAB_SIZE}", "text/csv"), tiny_loaded)
    with pytest.raises(BadRequest, match="line 1 is out of range"):
        predict_fn(input_fn(f"{MAX_LEN + 1},5", "text/csv"), tiny_loaded)
    with pytest.raises(BadRequest, match="line 1 is out of range"):
        predict_fn(input_fn("99999999999999999999999,5", "text/csv"), tiny_loaded)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("text/*", "text/csv"),
        ("text/csv", "text/csv"),
        ("text/html;q=1, text/csv;q=0.5", "text/csv"),
        ("application/json;q=0.2, text/csv", "text/csv"),
    ],
)
def test_accept_negotiation(accept: str | None, expected: str) -> None:
    assert response_content_type(accept) == expected


def test_unsupported_accept_is_406(tiny_loaded: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        output_fn(predict_fn(input_fn(b"fine", "text/plain"), tiny_loaded), "application/xml")
    assert caught.value.status == 406 and "application/xml" in str(caught.value)


# --- with the toolkit's context: errors are answered, not raised ------------------------------------------------


def test_with_a_context_a_client_error_is_one_json_line(tiny_loaded: Any) -> None:
    context = FakeContext()
    data = input_fn(b"<r/>", "application/xml", context)
    assert data == Rejected(415, data.message) and context.status == (415, "Unsupported Media Type")
    body, media = output_fn(predict_fn(data, tiny_loaded, context), "application/json", context)
    assert media == "application/json" and b"\n" not in body
    assert json.loads(body) == {"error": "unsupported_media_type", "message": data.message, "status": 415}

    context = FakeContext()
    prediction = predict_fn(input_fn(b"fine film", "text/plain", context), tiny_loaded, context)
    body, media = output_fn(prediction, "image/png", context)
    assert context.status == (406, "Not Acceptable") and json.loads(body)["status"] == 406


def test_with_a_context_an_unexpected_failure_is_a_500_line_and_a_log(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        @property
        def preprocessor(self) -> Any:
            raise RuntimeError("disk on fire")

    context = FakeContext()
    with caplog.at_level(logging.ERROR, logger="model.inference"):
        prediction = predict_fn(InferenceInput(texts=["fine"]), Broken(), context)
        body, media = output_fn(prediction, None, context)
    assert context.status == (500, "Internal Server Error") and media == "application/json"
    assert json.loads(body) == {
        "error": "internal_error",
        "message": "internal error in predict_fn: RuntimeError: disk on fire",
        "status": 500,
    }
    assert b"Traceback" not in body and "Traceback" in caplog.text


def test_bad_request_is_the_toolkits_error_type() -> None:
    from sagemaker_inference.errors import BaseInferenceToolkitError

    error = BadRequest("nope", status=413)
    assert isinstance(error, BaseInferenceToolkitError)
    assert (error.status_code, error.phrase, str(error)) == (413, "Payload Too Large", "nope")


def test_model_fn_under_the_toolkit_limits_threads_and_takes_raw_bodies(
    tiny: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from sagemaker_inference import content_types

    monkeypatch.setattr(content_types, "UTF8_TYPES", ["application/json", "text/csv"])
    monkeypatch.setenv("SENTIFLOW_SERVE_TORCH_THREADS", "1")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model_fn(str(tiny.model_dir), FakeContext())
        assert torch.get_num_threads() == 1 and content_types.UTF8_TYPES == []
    finally:
        torch.set_num_threads(previous)


# --- the toolkit's calling convention ----------------------------------------------------------------------------

PASSED = {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2}  # what the toolkit hands each handler


@pytest.mark.parametrize("name", sorted(PASSED))
def test_handler_signatures_are_the_toolkits(name: str) -> None:
    """transformer.py counts parameters: n → called without the context, n + 1 → the context comes last. Any other
    extra parameter (a default, a keyword-only one) would receive the Context — issue 10's 500 on every JSON call."""
    parameters = list(inspect.signature(getattr(inference, name)).parameters.values())
    assert [p.kind for p in parameters] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * (PASSED[name] + 1)
    assert parameters[-1].name == "context" and parameters[-1].default is None


def test_the_toolkit_passes_its_context_to_every_handler(tiny: TinyModel, tiny_loaded: Any) -> None:
    """The toolkit's own dispatch (Transformer._run_handler_function) with its own context object."""
    from sagemaker_inference.transformer import Transformer

    transformer = Transformer()
    context = FakeContext()
    transformer._context = context
    data = transformer._run_handler_function(input_fn, b"<r/>", "application/xml")
    prediction = transformer._run_handler_function(predict_fn, data, tiny_loaded)
    body, media = transformer._run_handler_function(output_fn, prediction, "application/json")
    assert context.status == (415, "Unsupported Media Type") and json.loads(body)["status"] == 415

    def drifted(input_data: Any, content_type: Any, context: Any = None, max_reviews: Any = None) -> Any:
        return input_fn(input_data, content_type, context)

    with pytest.raises(TypeError, match="takes 4 arguments but 2 were given"):
        transformer._run_handler_function(drifted, b"fine", "text/plain")


def test_the_handlers_import_without_the_toolkit() -> None:
    code = (
        "import sys; sys.modules['sagemaker_inference'] = None\n"  # any toolkit import raises ImportError
        "import model.inference as m\n"
        "assert m._toolkit_content_types is None\n"
        "try:\n    m.input_fn(b'x', 'image/png')\n"
        "except m.BadRequest as e:\n    print(e.status_code, e.status, e.phrase, str(e))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("415 415 Unsupported Media Type Content-Type 'image/png' is not supported")
