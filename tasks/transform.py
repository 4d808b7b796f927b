"""The batch-transform stage: the backend scores every row of the test channel; reading its output back.

The output is what a SageMaker Batch Transform job writes for ``text/csv``: ``<output prefix>/<input>.out`` with
one ``label,score`` line per input row, in order. ``load_transform_scores`` reads it for the evaluation and the
serving-parity stages.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task

from backends.base import ArtifactStore, get_backend
from core.config import Settings
from core.errors import SentiflowError
from model.inference import parse_csv_output
from tasks.policies import NETWORK_RETRIES, STAGE_OPTIONS

TRANSFORM_INPUT = "test_features.csv"


def load_transform_scores(
    store: ArtifactStore, output_uri: str, input_name: str = TRANSFORM_INPUT, scratch: Path | None = None
) -> tuple[list[str], np.ndarray]:
    """(labels, scores) of ``<output_uri>/<input_name>.out`` as written by the batch transform."""
    key = f"{store.key_from_uri(output_uri).rstrip('/')}/{input_name}.out"
    if not store.exists(key):
        message = f"batch transform output {store.uri(key)} does not exist; re-run the transform stage"
        raise SentiflowError(message)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        path = store.get_file(key, Path(tmp) / f"{input_name}.out")
        return parse_csv_output(path.read_text(encoding="utf-8"))


@task(name="batch-transform", **STAGE_OPTIONS, **NETWORK_RETRIES)
def batch_transform_task(settings: Settings, model_uri: str, input_uri: str, output_prefix: str) -> str:
    """Run the backend's batch transform over the test features; returns the output prefix URI."""
    logger = get_run_logger()
    return get_backend(settings).transformer.transform(model_uri, input_uri, output_prefix, logger.info)
