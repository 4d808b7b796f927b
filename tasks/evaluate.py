"""The evaluation stage: metrics of the batch-transform output against the test labels, beside the TF-IDF
baseline trained on the same tokens, written as ``evaluation.json`` + plots and published as Prefect artifacts.

The report itself is built by ``evaluation.report``; this module reads the stage inputs and publishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task

from backends.base import get_store
from core.config import Settings
from core.errors import SentiflowError
from evaluation.baseline import rows_to_tokens, tfidf_baseline
from evaluation.report import EVALUATION_FILE, report_markdown, table_rows, write_report
from tasks.policies import LOCAL_RETRIES, STAGE_OPTIONS
from tasks.transform import load_transform_scores


def read_int_csv(path: Path) -> np.ndarray:
    """A headerless integer CSV (a channel file) as a 2-D int64 array."""
    import pandas as pd

    try:
        return pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    except (OSError, ValueError) as error:
        message = f"channel file {path} is unreadable ({error}); re-run data preparation"
        raise SentiflowError(message) from None


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
    report, images = write_report(
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
