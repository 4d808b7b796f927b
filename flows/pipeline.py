"""The sentiflow pipeline: data → training → evaluation → gate → deploy → API. Flows only wire stages.

``data_flow`` runs the data half, ``train_flow`` data + training, ``pipeline`` everything. Every argument left
as ``None`` comes from the settings (``SENTIFLOW_*`` environment variables), so a deployment, the CLI and a test
all run the same code on either backend.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from core.config import Settings, get_settings
from tasks.data.download import download_task
from tasks.data.load import load_task
from tasks.data.prepare import prepare_task
from tasks.data.upload import upload_task
from tasks.data.validate import validate_task
from tasks.deploy import delete_endpoint_task, deploy_endpoint_task, deployed_model_task, promote_endpoint_task
from tasks.evaluate import evaluate_task
from tasks.gate import gate_task
from tasks.parity import parity_task
from tasks.train import train_model
from tasks.transform import batch_transform_task


def _run_dir(settings: Settings) -> str:
    name = flow_run.get_name() or "adhoc"
    path = settings.runs_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _stage(task: Any, *args: Any, cache_hits: dict[str, bool]) -> Any:
    """Run ``task``; record whether Prefect served it from its cache (a rerun of finished work)."""
    state = task(*args, return_state=True)
    cache_hits[task.name] = state.name == "Cached"
    return state.result()


def prepare_data(
    settings: Settings, source: str | None, sha256: str | None, max_reviews_per_class: int | None
) -> dict[str, Any]:
    """Wire the data stages; returns what later stages and the summary need."""
    hits: dict[str, bool] = {}
    archive = _stage(download_task, settings, source, sha256, cache_hits=hits)
    dataset = _stage(load_task, settings, archive, cache_hits=hits)
    validation = _stage(validate_task, settings, dataset, f"{_run_dir(settings)}/validation", cache_hits=hits)
    channels = _stage(prepare_task, settings, dataset, archive.sha256, max_reviews_per_class, cache_hits=hits)
    uploaded = _stage(upload_task, settings, channels, cache_hits=hits)
    return {
        "archive": archive.to_dict(),
        "dataset": dataset,
        "validation": validation,
        "channels": channels.to_dict(),
        "uploaded": uploaded.to_dict(),
        "cache_hits": hits,
    }


def evaluate_model(
    settings: Settings, data: dict[str, Any], model_uri: str, job_name: str, max_reviews_per_class: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Batch transform over the test channel, metrics beside the baseline, and the serving parity check."""
    test_features = f"{data['uploaded']['channels']['test']}/test_features.csv"
    transformed = batch_transform_task(settings, model_uri, test_features, f"evaluations/{job_name}/transform")
    evaluation = evaluate_task(
        settings,
        data["channels"]["root"],
        transformed,
        _run_dir(settings),
        model_uri=model_uri,
        store_key=f"evaluations/{job_name}/evaluation.json",
    )
    parity = parity_task(settings, model_uri, transformed, data["dataset"], max_reviews_per_class)
    return evaluation, parity


@flow(name="sentiflow-data", log_prints=True)
def data_flow(
    source: str | None = None,
    sha256: str | None = None,
    backend: str | None = None,
    max_reviews_per_class: int | None = None,
) -> dict[str, Any]:
    """Download, validate, preprocess and upload the IMDB dataset."""
    settings = get_settings(backend=backend)
    return prepare_data(settings, source, sha256, max_reviews_per_class)


@flow(name="sentiflow-train", log_prints=True)
def train_flow(
    source: str | None = None,
    sha256: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    backend: str | None = None,
    max_reviews_per_class: int | None = None,
) -> dict[str, Any]:
    """The data stages, then training; returns the data summary and the training job."""
    settings = get_settings(backend=backend)
    data = prepare_data(settings, source, sha256, max_reviews_per_class)
    training = train_model(settings, data["uploaded"]["channels"], hyperparameters)
    return {"data": data, "training": training.to_dict()}


@flow(name="sentiflow-pipeline", log_prints=True)
def pipeline(
    source: str | None = None,
    sha256: str | None = None,
    backend: str | None = None,
    epochs: int | None = None,
    min_accuracy: float | None = None,
    max_regression: float | None = None,
    parity_sample: int | None = None,
    teardown_after: bool = False,
    require_approval: bool = False,
    max_reviews_per_class: int | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and — if it passes the quality gate and the parity check — deploy the model behind the API."""
    settings = get_settings(
        backend=backend,
        epochs=epochs,
        min_accuracy=min_accuracy,
        max_regression=max_regression,
        parity_sample=parity_sample,
    )
    data = prepare_data(settings, source, sha256, max_reviews_per_class)
    training = train_model(settings, data["uploaded"]["channels"], hyperparameters)
    evaluation, parity = evaluate_model(settings, data, training.model_uri, training.job_name, max_reviews_per_class)
    deployed = deployed_model_task(settings)
    accuracy = evaluation["model"]["accuracy"]
    decision = gate_task(
        accuracy,
        deployed["accuracy"] if deployed else None,
        settings.min_accuracy,
        settings.max_regression,
        parity["passed"],
    )
    summary: dict[str, Any] = {
        "backend": settings.backend,
        "data": data,
        "training": training.to_dict(),
        "evaluation": evaluation,
        "parity": parity,
        "gate": decision,
        "promoted": False,
    }
    if not decision["promote"]:
        print(f"not promoted: {decision['reason']}")
        return summary
    if require_approval:
        from evaluation.report import report_markdown
        from flows.approval import request_approval

        if not request_approval(report_markdown(evaluation, {}), timeout_s=24 * 3600):
            summary["gate"] = {"promote": False, "reason": "rejected by the reviewer"}
            print("not promoted: rejected by the reviewer")
            return summary
    candidate = deploy_endpoint_task(settings, training.model_uri, accuracy)
    promotion = promote_endpoint_task(settings, candidate, parity["passed"])
    summary.update(promoted=True, promotion=promotion.to_dict())
    if teardown_after:
        summary["teardown"] = delete_endpoint_task(settings, promotion.endpoint.name, reason="teardown-after").to_dict()
    return summary
