"""The batch-transform stage: the backend scores every row of the test channel; reading its output back.

The output is what a SageMaker Batch Transform job writes for ``text/csv``: ``<output prefix>/<input>.out`` with
one ``label,score`` line per input row, in order. ``load_transform_scores`` reads it for the evaluation and the
serving-parity stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import task

from core.errors import SentiflowError
from tasks.policies import network_stage, stage_cache

if TYPE_CHECKING:
    import numpy as np

    from backends.base import ArtifactStore

TRANSFORM_INPUT = "test_features.csv"


def output_file_uri(output_uri: str, input_name: str = TRANSFORM_INPUT) -> str:
    """The ``.out`` file the transform writes for ``input_name`` under ``output_uri``."""
    return f"{output_uri.rstrip('/')}/{input_name}.out"


def load_transform_scores(
    store: ArtifactStore, output_uri: str, input_name: str = TRANSFORM_INPUT
) -> tuple[list[str], np.ndarray]:
    """(labels, scores) of ``<output_uri>/<input_name>.out`` as written by the batch transform."""
    from model.inference import parse_csv_output

    key = store.key_from_uri(output_file_uri(output_uri, input_name))
    if not store.exists(key):
        message = f"batch transform output {store.uri(key)} does not exist; re-run the transform stage"
        raise SentiflowError(message)
    with store.local_file(key) as path:
        return parse_csv_output(path.read_text(encoding="utf-8"))


@task(**network_stage("batch-transform"), **stage_cache("tasks.transform", "model"))
def batch_transform_task(model_uri: str, input_uri: str, output_prefix: str, backend: str) -> str:
    """Run the backend's batch transform over the test features; returns the output prefix URI."""
    from prefect.logging import get_run_logger

    from backends.base import get_backend
    from core.config import get_settings

    transformer = get_backend(get_settings("parameter", backend=backend)).transformer
    return transformer.transform(model_uri, input_uri, output_prefix, get_run_logger().info)
