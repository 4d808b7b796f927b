"""The serving-parity stage: raw test reviews through the serving path must reproduce the batch transform.

The comparison itself is ``evaluation.parity.parity_check``; this stage gathers its inputs (the transform
output, the raw reviews in test-channel order, the unpacked model) and logs the verdict. ``passed`` False stops
promotion.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from backends.base import get_store
from backends.models import unpacked_model_dir
from core.config import Settings
from evaluation.parity import parity_check
from tasks.data.prepare import subsample
from tasks.policies import LOCAL_RETRIES, STAGE_OPTIONS
from tasks.transform import load_transform_scores


def raw_test_reviews(dataset: str, settings: Settings, max_reviews_per_class: int | None = None) -> list[str]:
    """Raw test reviews in the order of the test channel rows (the data stage's subsample, test split)."""
    import pandas as pd

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
