"""Evaluate a model on the current test set without deploying anything (the manual ``evaluate`` deployment)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from core.config import get_settings
from core.errors import SentiflowError
from flows.pipeline import Reused, evaluate_model, prepare_data, run_lock
from tasks.deploy import deployed_model_task


@flow(name="sentiflow-evaluate", log_prints=True)
def evaluate(
    model_uri: str | None = None,
    source: str | None = None,
    sha256: str | None = None,
    backend: str | None = None,
    max_reviews_per_class: int | None = None,
) -> dict[str, Any]:
    """Batch-evaluate ``model_uri`` (default: the model currently promoted) beside the baseline; publishes
    ``evaluation.json`` and the report artifacts. Serving parity needs an endpoint: the pipeline checks it."""
    settings = get_settings("parameter", backend=backend)
    if model_uri is None:
        deployed = deployed_model_task(settings.backend)
        if deployed is None:
            raise SentiflowError("no model has been promoted yet; pass model_uri (a model.tar.gz URI) to evaluate")
        model_uri = deployed["model_uri"]
    reused: Reused = {}
    name = model_uri.rstrip("/").split("/")[-2] if model_uri.endswith("model.tar.gz") else "adhoc"
    with run_lock(settings):
        data = prepare_data(settings, source, sha256, max_reviews_per_class, reused)
        _, evaluation = evaluate_model(settings, data, model_uri, name, reused)
    model, baseline = evaluation["model"], evaluation["baseline"]
    print(f"{model_uri}: accuracy {model['accuracy']:.4f} (TF-IDF baseline {baseline['accuracy']:.4f})")
    return {"model_uri": model_uri, "evaluation": evaluation, "reused": reused}
