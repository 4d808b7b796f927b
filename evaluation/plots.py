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


def reliability_bins(
    labels: Sequence[int] | np.ndarray, scores: np.ndarray, bins: int = 10
) -> tuple[list[dict[str, float]], float]:
    """Equal-width bins of P(positive): per bin its mean score, observed positive share and count; and the
    expected calibration error (count-weighted mean |observed − predicted|)."""
    y, s = np.asarray(labels, dtype=np.float64), np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    which = np.minimum((s * bins).astype(int), bins - 1)
    rows, error = [], 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        predicted, observed = float(s[mask].mean()), float(y[mask].mean())
        rows.append({"predicted": predicted, "observed": observed, "count": int(mask.sum())})
        error += mask.sum() * abs(observed - predicted)
    return rows, float(error / max(len(s), 1))


def reliability_png(labels: Sequence[int] | np.ndarray, curves: Mapping[str, np.ndarray], bins: int = 10) -> bytes:
    """Reliability diagram: observed positive share against mean P(positive) per bin, one line per model, with
    each model's expected calibration error in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfectly calibrated")
    for name, scores in curves.items():
        rows, ece = reliability_bins(labels, scores, bins)
        axes.plot(
            [r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o", label=f"{name} (ECE {ece:.3f})"
        )
    axes.set(xlabel="mean predicted P(positive)", ylabel="observed share positive", title="Reliability diagram")
    axes.set(xlim=(0, 1), ylim=(0, 1))
    axes.legend(loc="upper left")
    return _png(figure)
