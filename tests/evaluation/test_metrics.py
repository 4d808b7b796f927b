"""Classification metrics from labels and scores."""

from __future__ import annotations

import pytest

from core.errors import SentiflowError
from evaluation.metrics import classification_metrics


def test_metrics_on_known_inputs() -> None:
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    scores = [0.9, 0.8, 0.4, 0.3, 0.6, 0.1, 0.5, 0.49]  # tp=3 (0.9, 0.8, 0.5), fn=1, fp=1 (0.6), tn=3
    metrics = classification_metrics(labels, scores)
    assert metrics["confusion_matrix"] == [[3, 1], [1, 3]]
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["precision"] == pytest.approx(3 / 4)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(3 / 4)
    # pairs (pos, neg) ranked correctly: 16 pairs, 0.4 < 0.49 / 0.6 and 0.5 < 0.6 are wrong → 13/16
    assert metrics["roc_auc"] == pytest.approx(13 / 16)


def test_metrics_edge_cases() -> None:
    all_negative = classification_metrics([0, 0], [0.1, 0.2])
    assert all_negative["precision"] == 0.0 and all_negative["roc_auc"] is None and all_negative["accuracy"] == 1
    with pytest.raises(SentiflowError, match="2 labels and 3 scores"):
        classification_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(SentiflowError, match="0 or 1"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(SentiflowError, match=r"\[0, 1\]"):
        classification_metrics([0, 1], [0.1, 1.2])
