"""The evaluation report: metrics of the model beside the TF-IDF baseline, the lift, plots and the markdown.

``write_report`` builds the report and writes ``evaluation.json`` and the PNGs into a run folder; the
``evaluate`` stage (``tasks/evaluate.py``) publishes it as Prefect artifacts, and the human approval gate shows
its markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.io import atomic_write_bytes, atomic_write_json
from evaluation.baseline import BaselineResult
from evaluation.metrics import classification_metrics

EVALUATION_FILE = "evaluation.json"
_COMPARED = ("accuracy", "precision", "recall", "f1", "roc_auc")


def build_report(
    labels: np.ndarray, scores: np.ndarray, baseline: BaselineResult | None = None, **context: Any
) -> dict[str, Any]:
    """``{"model": metrics, "baseline": metrics, "lift": model − baseline, ...context}``."""
    report: dict[str, Any] = {"model": classification_metrics(labels, scores), **context}
    if baseline is not None:
        report["baseline"] = {
            **baseline.metrics,
            "name": "tfidf-1-2gram-logreg",
            "features": baseline.features,
        }
        report["lift"] = {
            name: report["model"][name] - baseline.metrics[name]
            for name in _COMPARED
            if report["model"][name] is not None and baseline.metrics[name] is not None
        }
    return report


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: model, baseline and lift (for the Prefect table artifact)."""
    rows = []
    for name in _COMPARED:
        row: dict[str, Any] = {"metric": name, "model": _fmt(report["model"][name])}
        if "baseline" in report:
            row["baseline"] = _fmt(report["baseline"][name])
            row["lift"] = _fmt(report.get("lift", {}).get(name))
        rows.append(row)
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report_plots(
    labels: np.ndarray, scores: np.ndarray, report: dict, baseline: BaselineResult | None
) -> dict[str, bytes]:
    """``{"roc.png": …, "confusion.png": …}``."""
    from evaluation.plots import confusion_png, roc_png

    curves = {"LSTM": scores} if baseline is None else {"LSTM": scores, "TF-IDF + LR": baseline.scores}
    return {
        "roc.png": roc_png(labels, curves),
        "confusion.png": confusion_png(report["model"]["confusion_matrix"], "LSTM confusion matrix"),
    }


def report_markdown(report: dict[str, Any], images: dict[str, bytes]) -> str:
    """The markdown artifact: metrics table and the plots inline (data URIs)."""
    from evaluation.plots import data_uri

    rows = table_rows(report)
    header = list(rows[0])
    lines = [
        "# Batch evaluation",
        "",
        f"{report['model']['n']:,} test reviews"
        + (f" · model `{report['model_uri']}`" if "model_uri" in report else ""),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows),
        "",
    ]
    lines += [f"![{name}]({data_uri(png)})" for name, png in images.items()]
    return "\n".join(lines) + "\n"


def write_report(
    labels: np.ndarray,
    scores: np.ndarray,
    run_dir: Path,
    baseline: BaselineResult | None = None,
    **context: Any,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Build the report, write ``evaluation.json`` and the PNGs into ``run_dir``; returns (report, images)."""
    report = build_report(np.asarray(labels), np.asarray(scores), baseline, **context)
    images = report_plots(np.asarray(labels), np.asarray(scores), report, baseline)
    run_dir = Path(run_dir)
    for name, png in images.items():
        atomic_write_bytes(run_dir / name, png)
    atomic_write_json(run_dir / EVALUATION_FILE, report)
    return report, images
