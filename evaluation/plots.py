"""PNG plots for the evaluation report (matplotlib Agg, no display needed)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np


def _png(figure) -> bytes:  # noqa: ANN001 - matplotlib figure
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def roc_png(labels: Sequence[int] | np.ndarray, curves: Mapping[str, np.ndarray]) -> bytes:
    """ROC curves, one per named score array, with their AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    for name, scores in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        axes.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    axes.legend(loc="lower right")
    return _png(figure)


def confusion_png(matrix: Sequence[Sequence[int]], title: str = "confusion matrix") -> bytes:
    """A 2×2 confusion matrix ``[[tn, fp], [fn, tp]]`` as a labelled heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(4, 3.6))
    axes.imshow(values, cmap="Blues")
    names = ["negative", "positive"]
    axes.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names, title=title)
    axes.set(xlabel="predicted", ylabel="actual")
    for (row, col), count in np.ndenumerate(values):
        color = "white" if count > values.max() / 2 else "black"
        axes.text(col, row, f"{count:,}", ha="center", va="center", color=color)
    return _png(figure)


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,…`` for embedding a PNG in markdown."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
