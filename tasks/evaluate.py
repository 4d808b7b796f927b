"""Batch evaluation stage: transform the test channel, score it, compare with a baseline, gate, check parity.

Plain functions do the work (testable without Prefect); the ``*_task`` wrappers add caching, retries, logs and
Prefect artifacts. The flow wires them: ``batch_transform_task → evaluate_task → parity_task → gate_task``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task

from backends.base import ArtifactStore, get_backend, get_store
from sentiflow.config import Settings
from sentiflow.errors import SentiflowError
from sentiflow.io import atomic_write_bytes, atomic_write_json
from tasks.baseline import BaselineResult, rows_to_tokens, tfidf_baseline
from tasks.gate import gate
from tasks.metrics import classification_metrics
from tasks.parity import parity_check
from tasks.policies import LOCAL_RETRIES, NETWORK_RETRIES, NO_RETRIES, STAGE_OPTIONS

TRANSFORM_INPUT = "test_features.csv"
EVALUATION_FILE = "evaluation.json"
_COMPARED = ("accuracy", "precision", "recall", "f1", "roc_auc")


# --- reading stage outputs -------------------------------------------------------------------------


def read_int_csv(path: Path) -> np.ndarray:
    """A headerless integer CSV (a channel file) as a 2-D int64 array."""
    import pandas as pd

    try:
        return pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    except (OSError, ValueError) as error:
        message = f"channel file {path} is unreadable ({error}); re-run data preparation"
        raise SentiflowError(message) from None


def load_transform_scores(
    store: ArtifactStore, output_uri: str, input_name: str = TRANSFORM_INPUT, scratch: Path | None = None
) -> tuple[list[str], np.ndarray]:
    """(labels, scores) of ``<output_uri>/<input_name>.out`` as written by the batch transform."""
    import tempfile

    from serve.inference import parse_csv_output

    key = f"{store.key_from_uri(output_uri).rstrip('/')}/{input_name}.out"
    if not store.exists(key):
        message = f"batch transform output {store.uri(key)} does not exist; re-run the transform stage"
        raise SentiflowError(message)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        path = store.get_file(key, Path(tmp) / f"{input_name}.out")
        return parse_csv_output(path.read_text(encoding="utf-8"))


# --- the report ------------------------------------------------------------------------------------


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


def plots(labels: np.ndarray, scores: np.ndarray, report: dict, baseline: BaselineResult | None) -> dict[str, bytes]:
    """``{"roc.png": …, "confusion.png": …}``."""
    from tasks.plots import confusion_png, roc_png

    curves = {"LSTM": scores} if baseline is None else {"LSTM": scores, "TF-IDF + LR": baseline.scores}
    return {
        "roc.png": roc_png(labels, curves),
        "confusion.png": confusion_png(report["model"]["confusion_matrix"], "LSTM confusion matrix"),
    }


def report_markdown(report: dict[str, Any], images: dict[str, bytes]) -> str:
    """The markdown artifact: metrics table and the plots inline (data URIs)."""
    from tasks.plots import data_uri

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


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    run_dir: Path,
    baseline: BaselineResult | None = None,
    **context: Any,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Build the report, write ``evaluation.json`` and the PNGs into ``run_dir``; returns (report, images)."""
    report = build_report(np.asarray(labels), np.asarray(scores), baseline, **context)
    images = plots(np.asarray(labels), np.asarray(scores), report, baseline)
    run_dir = Path(run_dir)
    for name, png in images.items():
        atomic_write_bytes(run_dir / name, png)
    atomic_write_json(run_dir / EVALUATION_FILE, report)
    return report, images


# --- Prefect tasks -----------------------------------------------------------------------------------


@task(name="batch-transform", **STAGE_OPTIONS, **NETWORK_RETRIES)
def batch_transform_task(settings: Settings, model_uri: str, input_uri: str, output_prefix: str) -> str:
    """Run the backend's batch transform over the test features; returns the output prefix URI."""
    logger = get_run_logger()
    return get_backend(settings).transformer.transform(model_uri, input_uri, output_prefix, logger.info)


@task(name="evaluate", **STAGE_OPTIONS, **LOCAL_RETRIES)
def evaluate_task(
    settings: Settings,
    channels_root: str,
    transform_output_uri: str,
    run_dir: str,
    model_uri: str | None = None,
    store_key: str | None = None,
) -> dict[str, Any]:
    """Metrics of the transform output vs the test labels, beside the TF-IDF baseline; report + artifacts.

    ``channels_root`` is the local channel set (``train/train.csv``, ``test/test.csv``); the baseline is
    trained on the same id tokens the network sees. ``store_key``: where ``evaluation.json`` also goes in the
    artifact store.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    logger = get_run_logger()
    store = get_store(settings)
    train = read_int_csv(Path(channels_root) / "train" / "train.csv")
    test = read_int_csv(Path(channels_root) / "test" / "test.csv")
    _, scores = load_transform_scores(store, transform_output_uri)
    baseline = tfidf_baseline(rows_to_tokens(train[:, 1:]), train[:, 0], rows_to_tokens(test[:, 1:]), test[:, 0])
    report, images = evaluate(
        test[:, 0],
        scores,
        Path(run_dir),
        baseline,
        model_uri=model_uri,
        transform_output_uri=transform_output_uri,
    )
    if store_key is not None:
        report["uri"], _ = store.put_file(Path(run_dir) / EVALUATION_FILE, store_key)
    model, base = report["model"], report["baseline"]
    logger.info(
        "LSTM accuracy %.4f (F1 %.4f, AUC %.4f) vs TF-IDF baseline %.4f",
        model["accuracy"], model["f1"], model["roc_auc"], base["accuracy"],
    )  # fmt: skip
    create_table_artifact(table_rows(report), key="evaluation-metrics", description="LSTM vs TF-IDF baseline")
    create_markdown_artifact(report_markdown(report, images), key="evaluation-report", description="Batch evaluation")
    return report


def raw_test_reviews(dataset: str, settings: Settings, max_reviews_per_class: int | None = None) -> list[str]:
    """Raw test reviews in the order of the test channel rows (the data stage's subsample, test split)."""
    import pandas as pd

    from tasks.data.channels import subsample

    frame = subsample(pd.read_parquet(dataset), max_reviews_per_class, settings.seed)
    return frame.loc[frame["split"] == "test", "review"].tolist()


@task(name="serving-parity", **STAGE_OPTIONS, **LOCAL_RETRIES)
def parity_task(
    settings: Settings,
    model_uri: str,
    transform_output_uri: str,
    dataset: str,
    max_reviews_per_class: int | None = None,
    sample: int | None = None,
) -> dict[str, Any]:
    """Raw test reviews through the serving path vs the batch labels; ``passed`` False stops promotion."""
    import tempfile

    from serve.artifacts import unpacked_model_dir

    logger = get_run_logger()
    store = get_store(settings)
    labels, scores = load_transform_scores(store, transform_output_uri)
    reviews = raw_test_reviews(dataset, settings, max_reviews_per_class)
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = store.get_file(store.key_from_uri(model_uri), Path(tmp) / "model.tar.gz")
        model_dir = unpacked_model_dir(tar_path, settings.cache_dir)
    result = parity_check(
        model_dir, reviews, scores, settings.parity_sample if sample is None else sample, batch_labels=labels
    )
    (logger.info if result.passed else logger.error)(result.summary)
    return result.to_dict()


@task(name="quality-gate", **NO_RETRIES)
def gate_task(
    candidate_accuracy: float,
    deployed_accuracy: float | None,
    min_accuracy: float,
    max_regression: float,
    parity_passed: bool = True,
) -> dict[str, Any]:
    """The promotion decision as ``{"promote": bool, "reason": str}`` (parity failure always blocks)."""
    logger = get_run_logger()
    decision = gate(candidate_accuracy, deployed_accuracy, min_accuracy, max_regression)
    if not parity_passed:
        decision = type(decision)(False, "serving parity check failed: the endpoint would not match batch evaluation")
    logger.info("quality gate: %s — %s", "promote" if decision.promote else "not promoted", decision.reason)
    return decision.to_dict()
