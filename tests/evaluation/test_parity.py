"""The serving-parity comparison: serving answers for raw reviews vs the batch scores of the same rows.

Here the serving path runs the handler functions in process (what an endpoint runs); the pipeline's stage sends
the reviews through the deployed endpoint instead (tests/tasks/test_parity.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import SentiflowError
from evaluation.parity import compare, parity_check
from tests.fixtures.tiny_model import TinyModel, shuffled_copy


def in_process(model_dir: Path):  # noqa: ANN201 - a Serve callable
    """Each review as the Lambda sends it, through input_fn → predict_fn → output_fn in this process."""
    from model.inference import input_fn, model_fn, output_fn, predict_fn

    model = model_fn(str(model_dir))

    def serve(reviews: Sequence[str]) -> list[dict[str, Any]]:
        answers = []
        for review in reviews:
            out = output_fn(predict_fn(input_fn(json.dumps({"review": review}), "application/json"), model), None)
            answer = json.loads(out[0] if isinstance(out, tuple) else out)  # (body, media type) in the toolkit contract
            answers.append(answer[0] if isinstance(answer, list) else answer)
        return answers

    return serve


@pytest.fixture(scope="module")
def batch_scores(tiny: TinyModel) -> np.ndarray:
    from model.inference import model_fn

    return model_fn(str(tiny.model_dir)).predict_proba(tiny.test_rows)


def test_parity_passes_for_the_real_preprocessing(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    result = parity_check(tiny.test_reviews, batch_scores, 150, in_process(tiny.model_dir))
    assert result.passed and result.checked == 150 and result.mismatched == 0
    assert result.max_abs_diff <= 1e-5


def test_parity_is_complete_for_each_tokenizer_version(tiny: TinyModel, tiny_reference: TinyModel) -> None:
    """Every test review, for the default (words-neg-punct-2, nb-lstm) and the reference pair: the serving path
    follows the tokenizer version the artifact records."""
    from model.inference import model_fn

    for model in (tiny, tiny_reference):
        loaded = model_fn(str(model.model_dir))
        scores = loaded.predict_proba(model.test_rows)
        result = parity_check(model.test_reviews, scores, len(model.test_reviews), in_process(model.model_dir))
        assert result.passed and result.checked == 200 and result.mismatched == 0, loaded.preprocessor.version
    assert model_fn(str(tiny_reference.model_dir)).info["architecture"] == "reference"
    assert model_fn(str(tiny_reference.model_dir)).preprocessor.version == "reference-bs4-porter-1"
    assert tiny.test_tokens[0][:3] == ["a", "great", "film"] and tiny_reference.test_tokens[0][:2] == ["great", "film"]


def test_parity_catches_shuffled_word_dict(tiny: TinyModel, batch_scores: np.ndarray, tmp_path: Path) -> None:
    broken = shuffled_copy(tiny.model_dir, tmp_path / "broken")
    result = parity_check(tiny.test_reviews, batch_scores, 1000, in_process(broken))
    assert not result.passed and result.checked == 200
    assert result.mismatched > 100 and len(result.examples) == 10
    example = result.examples[0]
    assert {"index", "review", "batch_label", "batch_score", "serving"} <= set(example)
    assert "FAILED" in result.summary


def test_parity_flags_a_single_different_label(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    labels = ["positive" if s >= 0.5 else "negative" for s in batch_scores]
    labels[17] = "negative" if labels[17] == "positive" else "positive"
    result = parity_check(tiny.test_reviews, batch_scores, 200, in_process(tiny.model_dir), batch_labels=labels)
    assert result.mismatched == 1 and result.examples[0]["index"] == 17


def test_a_rejected_review_counts_as_a_mismatch() -> None:
    scores = np.array([0.9, 0.1])
    answers = [{"label": "positive", "score": 0.9}, {"error": "endpoint rejected the request"}]
    result = compare(["good", "bad"], ["positive", "negative"], scores, [0, 1], answers)
    assert not result.passed and result.mismatched == 1 and result.examples[0]["serving"]["error"]


def test_parity_refuses_misaligned_inputs(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    with pytest.raises(SentiflowError, match="same test rows in the same order"):
        parity_check(tiny.test_reviews[:-1], batch_scores, 10, in_process(tiny.model_dir))
