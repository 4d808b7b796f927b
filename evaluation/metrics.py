"""Classification metrics from labels and P(positive) scores (the one threshold of ``model.inference``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import SentiflowError
from model.inference import POSITIVE_THRESHOLD


def _checked(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(y) == 0 or len(y) != len(s):
        raise SentiflowError(
            f"evaluation got {len(y)} labels and {len(s)} scores; both must be non-empty and of equal length "
            "(do the transform output and the test labels come from the same test channel?)"
        )
    if not np.isin(y, (0, 1)).all():
        raise SentiflowError("evaluation labels must be 0 or 1; check the test channel's label column")
    if not (np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()):
        raise SentiflowError("evaluation scores must be probabilities in [0, 1]; check the transform output")
    return y.astype(np.int64), s


def predicted_labels(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """0/1 predictions with the serving threshold."""
    return (np.asarray(scores, dtype=np.float64) >= POSITIVE_THRESHOLD).astype(np.int64)


def classification_metrics(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> dict:
    """Accuracy, precision, recall, F1 (positive class), ROC-AUC and the confusion matrix ``[[tn, fp], [fn,
    tp]]``."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    y, s = _checked(labels, scores)
    pred = predicted_labels(s)
    (tn, fp), (fn, tp) = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": int(len(y)),
        "accuracy": (tp + tn) / len(y),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else None,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
