"""The serving-parity check: raw reviews through the serving path vs batch scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import SentiflowError
from evaluation.parity import parity_check
from tests.fixtures.tiny_model import TinyModel, shuffled_copy


@pytest.fixture(scope="module")
def batch_scores(tiny: TinyModel) -> np.ndarray:
    from model.inference import model_fn

    return model_fn(str(tiny.model_dir)).predict_proba(tiny.test_rows)


def test_parity_passes_for_the_real_preprocessing(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    result = parity_check(tiny.model_dir, tiny.test_reviews, batch_scores, sample=150)
    assert result.passed and result.checked == 150 and result.mismatched == 0
    assert result.max_abs_diff <= 1e-5


def test_parity_catches_shuffled_word_dict(tiny: TinyModel, batch_scores: np.ndarray, tmp_path: Path) -> None:
    broken = shuffled_copy(tiny.model_dir, tmp_path / "broken")
    result = parity_check(broken, tiny.test_reviews, batch_scores, sample=1000)
    assert not result.passed and result.checked == 200
    assert result.mismatched > 100 and len(result.examples) == 10
    example = result.examples[0]
    assert {"index", "review", "batch_label", "batch_score", "serving"} <= set(example)
    assert "FAILED" in result.summary


def test_parity_flags_a_single_different_label(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    labels = ["positive" if s >= 0.5 else "negative" for s in batch_scores]
    labels[17] = "negative" if labels[17] == "positive" else "positive"
    result = parity_check(tiny.model_dir, tiny.test_reviews, batch_scores, sample=200, batch_labels=labels)
    assert result.mismatched == 1 and result.examples[0]["index"] == 17


def test_parity_refuses_misaligned_inputs(tiny: TinyModel, batch_scores: np.ndarray) -> None:
    with pytest.raises(SentiflowError, match="same test rows in the same order"):
        parity_check(tiny.model_dir, tiny.test_reviews[:-1], batch_scores, sample=10)
