"""The serving-parity stage through a real endpoint: raw reviews sent as the Lambda sends them, one per request,
to ``backend.endpoints.invoke``; answers compared with the batch transform's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.errors import SentiflowError
from tasks.parity import check_endpoint, endpoint_answers
from tests.fixtures.tiny_model import TinyModel, shuffled_copy


class RecordingEndpoints:
    """Answers like an endpoint; records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes, str, str]] = []

    def invoke(self, name: str, body: bytes, content_type: str, accept: str = "application/json") -> bytes:
        self.requests.append((name, body, content_type, accept))
        review = json.loads(body)["review"]
        if review == "bad":
            raise SentiflowError("endpoint ep answered HTTP 400: empty review")
        return json.dumps({"label": "positive", "score": 0.75, "known_words": 1}).encode()


def test_reviews_go_one_per_request_as_the_lambda_sends_them() -> None:
    endpoints = RecordingEndpoints()
    answers = endpoint_answers(endpoints, "ep", ["good", "bad", "fine"])
    assert [a.get("label") for a in answers] == ["positive", None, "positive"]
    assert "empty review" in answers[1]["error"]
    assert sorted(json.loads(r[1])["review"] for r in endpoints.requests) == ["bad", "fine", "good"]
    assert {(r[0], r[2], r[3]) for r in endpoints.requests} == {("ep", "application/json", "application/json")}


def _dataset(store: Any, tiny: TinyModel, tmp_path: Path) -> str:
    frame = pd.DataFrame(
        {
            "split": "test",
            "label": tiny.test_labels,
            "id": range(len(tiny.test_labels)),
            "rating": 0,
            "review": tiny.test_reviews,
        }
    )
    frame.to_parquet(tmp_path / "reviews.parquet", index=False)
    return store.put_file(tmp_path / "reviews.parquet", "datasets/tiny/reviews.parquet")[0]


@pytest.mark.e2e
def test_parity_through_a_deployed_endpoint(settings, tiny: TinyModel, local, tmp_path: Path) -> None:
    from backends.local.transform import LocalBatchTransformer

    np_rows = tiny.test_rows
    (tmp_path / "features.csv").write_text("\n".join(",".join(map(str, row)) for row in np_rows) + "\n")
    features, _ = local.store.put_file(tmp_path / "features.csv", "channels/tiny/test/test_features.csv")
    model_uri, _ = local.store.put_file(tiny.tar_path, "training/tiny/model.tar.gz")
    output_uri = LocalBatchTransformer(settings, local.store).transform(model_uri, features, "out/tiny", print)
    dataset_uri = _dataset(local.store, tiny, tmp_path)

    good = local.endpoints.deploy("parity-good", model_uri, 1, print)
    result = check_endpoint(local, good.name, dataset_uri, output_uri, sample=60, seed=42, max_reviews_per_class=None)
    assert result.passed and result.checked == 60 and result.max_abs_diff <= 1e-5

    broken_dir = shuffled_copy(tiny.model_dir, tmp_path / "broken")  # same network, other vocabulary: a skew
    broken = local.endpoints.deploy("parity-broken", str(broken_dir), 2, print)
    result = check_endpoint(local, broken.name, dataset_uri, output_uri, sample=60, seed=42, max_reviews_per_class=None)
    assert not result.passed and result.mismatched > 10
