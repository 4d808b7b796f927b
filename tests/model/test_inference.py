"""The four serving functions on the tiny trained model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from model.inference import (
    BadRequest,
    InferenceInput,
    input_fn,
    label_for,
    output_fn,
    parse_csv_output,
    predict_fn,
    response_content_type,
)
from tests.fixtures.tiny_model import MAX_LEN, TinyModel


def _invoke(model: Any, body: bytes | str, content_type: str, accept: str | None = None) -> Any:
    return output_fn(predict_fn(input_fn(body, content_type), model), accept)


def test_text_plain_gives_one_object_matching_the_model(tiny: TinyModel, tiny_loaded: Any) -> None:
    review = tiny.test_reviews[1]
    result = json.loads(_invoke(tiny_loaded, review.encode(), "text/plain; charset=utf-8"))
    expected = float(tiny_loaded.predict_texts([review])[0])
    assert result == {"label": label_for(expected), "score": pytest.approx(expected, abs=1e-12)}


def test_json_shapes_agree(tiny: TinyModel, tiny_loaded: Any) -> None:
    reviews = tiny.test_reviews[:5]
    single = json.loads(_invoke(tiny_loaded, json.dumps({"review": reviews[0]}), "application/json"))
    listed = json.loads(_invoke(tiny_loaded, json.dumps(reviews), "application/json"))
    wrapped = json.loads(_invoke(tiny_loaded, json.dumps({"reviews": reviews}), "application/json"))
    assert isinstance(single, dict)
    assert listed == wrapped
    assert len(listed) == 5 and listed[0] == single
    assert {item["label"] for item in listed} <= {"positive", "negative"}


def test_encoded_csv_rows_score_like_raw_text(tiny: TinyModel, tiny_loaded: Any) -> None:
    rows = tiny.test_rows[:20]
    body = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    labels, scores = parse_csv_output(_invoke(tiny_loaded, body, "text/csv", "text/csv").decode())
    from_text = json.loads(_invoke(tiny_loaded, json.dumps(tiny.test_reviews[:20]), "application/json"))
    assert labels == [item["label"] for item in from_text]
    np.testing.assert_allclose(scores, [item["score"] for item in from_text], atol=1e-6)


def test_short_csv_rows_are_padded(tiny: TinyModel, tiny_loaded: Any) -> None:
    row = tiny.test_rows[2]
    length = int(row[0])
    short = ",".join(str(v) for v in row[: length + 1])
    full = ",".join(str(v) for v in row)
    assert _invoke(tiny_loaded, short, "text/csv") == _invoke(tiny_loaded, full, "text/csv")


def test_review_longer_than_max_len_is_truncated(tiny: TinyModel, tiny_loaded: Any) -> None:
    long_review = tiny.test_reviews[0]
    assert len(long_review.split()) > MAX_LEN
    truncated = " ".join(["great", "film"] + ["wonderful"] * 300)
    first = json.loads(_invoke(tiny_loaded, long_review, "text/plain"))
    assert first["score"] == json.loads(_invoke(tiny_loaded, truncated, "text/plain"))["score"]


def test_csv_accept_gives_label_score_lines(tiny: TinyModel, tiny_loaded: Any) -> None:
    out = _invoke(tiny_loaded, json.dumps(tiny.test_reviews[:3]), "application/json", "text/csv").decode()
    lines = out.splitlines()
    assert len(lines) == 3
    for line in lines:
        label, score = line.split(",")
        assert label == label_for(float(score))


def test_predictions_are_batched_and_ordered(tiny: TinyModel, tiny_loaded: Any, monkeypatch) -> None:
    import model.inference as inference

    monkeypatch.setattr(inference, "PREDICT_BATCH_SIZE", 7)
    data = InferenceInput(texts=tiny.test_reviews[:30])
    batched = predict_fn(data, tiny_loaded).scores
    np.testing.assert_allclose(batched, tiny_loaded.predict_texts(tiny.test_reviews[:30]), atol=1e-6)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"", "text/plain", 400, "empty"),
        (b"  \n\t ", "application/json", 400, "empty"),
        (b"\xff\xfe bad", "text/plain", 400, "not valid UTF-8"),
        (b'{"review": ', "application/json", 400, "not valid JSON"),
        (b'{"text": "hi"}', "application/json", 400, "wrong shape"),
        (b'{"reviews": []}', "application/json", 400, "no reviews"),
        (b'["fine", 3]', "application/json", 400, "[1] is a int"),
        (b'{"review": "   "}', "application/json", 400, "review is empty"),
        (b"12,a,3", "text/csv", 400, "line 1 is not comma-separated integers"),
        (b"hello", "application/xml", 415, "not supported"),
        (b"hello", None, 415, "not supported"),
    ],
)
def test_bad_input_raises_bad_request(body: bytes, content_type: str | None, status: int, fragment: str) -> None:
    with pytest.raises(BadRequest, match=None) as caught:
        input_fn(body, content_type)
    assert caught.value.status == status
    assert fragment in str(caught.value)


def test_too_many_reviews_is_413(monkeypatch) -> None:
    body = json.dumps(["good"] * 5)
    with pytest.raises(BadRequest) as caught:
        input_fn(body, "application/json", max_reviews=4)
    assert caught.value.status == 413 and "limit of 4" in str(caught.value)
    monkeypatch.setenv("SENTIFLOW_SERVE_MAX_REVIEWS", "3")
    with pytest.raises(BadRequest):
        input_fn(body, "application/json")
    assert len(input_fn(body, "application/json", max_reviews=5)) == 5


def test_csv_rows_out_of_range_are_400(tiny: TinyModel, tiny_loaded: Any) -> None:
    too_long = ",".join(["3"] * (MAX_LEN + 2))
    with pytest.raises(BadRequest, match="more than this model's max_len"):
        predict_fn(input_fn(too_long, "text/csv"), tiny_loaded)
    with pytest.raises(BadRequest, match="out of range"):
        predict_fn(input_fn("2,5,99999", "text/csv"), tiny_loaded)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/html;q=1, text/csv;q=0.5", "text/csv"),
        ("application/json;q=0.2, text/csv", "text/csv"),
    ],
)
def test_accept_negotiation(accept: str | None, expected: str) -> None:
    assert response_content_type(accept) == expected


def test_unsupported_accept_is_406() -> None:
    with pytest.raises(BadRequest) as caught:
        response_content_type("application/xml")
    assert caught.value.status == 406 and "application/xml" in str(caught.value)
