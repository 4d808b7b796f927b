"""The evaluation report: metrics of the model beside the TF-IDF baseline, the lift, plots and the markdown.

Side by side (:func:`side_by_side`): the new model, the TF-IDF baseline, and any ``compared`` entries the caller
measured (the reference network, the deployed model: ``{"name", "accuracy", "f1", "roc_auc",
"behaviour_pass_rate", "source"}``), with accuracy, F1, ROC-AUC and the behavioural pass rate; the calibration
of the model and the baseline as a reliability diagram (``reliability.png``) and their expected calibration
error.

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
    labels: np.ndarray,
    scores: np.ndarray,
    baseline: BaselineResult | None = None,
    behaviour: dict[str, Any] | None = None,
    compared: list[dict[str, Any]] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """``{"model": metrics, "baseline": metrics, "lift": model − baseline, "behaviour": suite, "calibration",
    "compared": [...], ...context}``."""
    from evaluation.plots import reliability_bins

    report: dict[str, Any] = {"model": classification_metrics(labels, scores), **context}
    bins, ece = reliability_bins(labels, scores)
    report["calibration"] = {"model": {"ece": ece, "bins": bins}}
    if behaviour is not None:
        report["behaviour"] = behaviour
    report["compared"] = list(compared or [])
    if baseline is not None:
        report["baseline"] = {
            **baseline.metrics,
            "name": "tfidf-1-2gram-logreg",
            "features": baseline.features,
        }
        report["calibration"]["baseline"] = {"ece": reliability_bins(labels, baseline.scores)[1]}
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


def side_by_side(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model: the new model, the TF-IDF baseline, then the ``compared`` entries (reference network,
    deployed model), each with accuracy, F1, ROC-AUC and the behavioural pass rate ("-" where not measured)."""
    behaviour = report.get("behaviour")
    rows = [
        {
            "model": report.get("model_name", "new model"),
            "accuracy": _fmt(report["model"]["accuracy"]),
            "f1": _fmt(report["model"]["f1"]),
            "roc_auc": _fmt(report["model"]["roc_auc"]),
            "behaviour pass rate": _fmt(behaviour["pass_rate"] if behaviour else None),
            "source": "this run",
        }
    ]
    if "baseline" in report:
        base = report["baseline"]
        rows.append(
            {
                "model": "TF-IDF baseline (same tokens)",
                "accuracy": _fmt(base["accuracy"]),
                "f1": _fmt(base["f1"]),
                "roc_auc": _fmt(base["roc_auc"]),
                "behaviour pass rate": "-",
                "source": "this run",
            }
        )
    for entry in report.get("compared", []):
        rows.append(
            {
                "model": entry["name"],
                **{key: _fmt(entry.get(key)) for key in ("accuracy", "f1", "roc_auc")},
                "behaviour pass rate": _fmt(entry.get("behaviour_pass_rate")),
                "source": entry.get("source", "-"),
            }
        )
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report_plots(
    labels: np.ndarray, scores: np.ndarray, report: dict, baseline: BaselineResult | None
) -> dict[str, bytes]:
    """``{"roc.png": …, "confusion.png": …, "reliability.png": …}``."""
    from evaluation.plots import confusion_png, reliability_png, roc_png

    curves = {"model": scores} if baseline is None else {"model": scores, "TF-IDF + LR": baseline.scores}
    return {
        "roc.png": roc_png(labels, curves),
        "confusion.png": confusion_png(report["model"]["confusion_matrix"], "model confusion matrix"),
        "reliability.png": reliability_png(labels, curves),
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
        *_markdown_table("Side by side", side_by_side(report)),
    ]
    if "behaviour" in report:
        checks = [
            {
                "check": c["name"],
                "type": c["kind"],
                "passed": f"{c['passed']}/{c['total']}",
                "pass rate": _fmt(c["pass_rate"]),
            }
            for c in report["behaviour"]["checks"]
        ]
        lines += _markdown_table(f"Behavioural checks (pass rate {report['behaviour']['pass_rate']:.4f})", checks)
    lines += [f"![{name}]({data_uri(png)})" for name, png in images.items()]
    return "\n".join(lines) + "\n"


def _markdown_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    header = list(rows[0])
    return [
        f"## {title}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows),
        "",
    ]


def write_report(
    labels: np.ndarray,
    scores: np.ndarray,
    run_dir: Path,
    baseline: BaselineResult | None = None,
    behaviour: dict[str, Any] | None = None,
    compared: list[dict[str, Any]] | None = None,
    **context: Any,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Build the report, write ``evaluation.json`` and the PNGs into ``run_dir``; returns (report, images)."""
    report = build_report(np.asarray(labels), np.asarray(scores), baseline, behaviour, compared, **context)
    images = report_plots(np.asarray(labels), np.asarray(scores), report, baseline)
    run_dir = Path(run_dir)
    for name, png in images.items():
        atomic_write_bytes(run_dir / name, png)
    atomic_write_json(run_dir / EVALUATION_FILE, report)
    return report, images
