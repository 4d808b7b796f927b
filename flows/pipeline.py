"""The sentiflow pipeline: data → training → batch transform → evaluation → gate → deploy → parity → promote.
Flows only wire stages.

``data_flow`` runs the data half, ``train_flow`` data + training, ``pipeline`` everything. Every argument left
as ``None`` comes from the settings (``SENTIFLOW_*`` environment variables), so a deployment, the CLI and a test
all run the same code on either backend.

Stages pass each other artifact-store URIs (never machine-local paths), and each is cached by Prefect on the
inputs and code that decide its result (``tasks.policies``): a rerun with nothing changed is served from the
cache, stage by stage. :func:`run_stage` also checks, cheaply, that a cached result's artifacts are still in
the store; if one is gone, the stage runs again instead of handing a dangling URI on.

Two runs on one ``SENTIFLOW_HOME`` never interleave their writes: the build half (data, training, evaluation)
holds the run lock, the deploy half the endpoints lock (``tasks.deploy.endpoints_lock``); a second run waits
and says for whom.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow

from core.config import Settings, get_settings
from core.errors import SentiflowError
from flows.data import (
    data_request,
    data_summary,
    download_inputs,
    load_inputs,
    prepare_inputs,
    run_lock,
    stage_artifacts,
    validate_inputs,
)
from tasks.data.download import download_task
from tasks.data.load import load_task
from tasks.data.prepare import prepare_task
from tasks.data.validate import validate_task
from tasks.deploy import (
    delete_endpoint_task,
    deploy_endpoint_task,
    deployed_model_task,
    endpoints_lock,
    promote_endpoint_task,
    serving_endpoint_task,
)
from tasks.evaluate import evaluate_task
from tasks.gate import gate_task, register_model_task, reject_model_task
from tasks.parity import parity_task
from tasks.policies import timeout_message, training_timeout_s
from tasks.train import train_model, training_hyperparameters
from tasks.transform import batch_transform_task, output_file_uri

Reused = dict[str, bool]
"""Stage name → True when Prefect served it from its cache (finished work reused)."""


# --- running one stage -------------------------------------------------------------------------------------


def stage_result(task: Any, state: Any) -> Any:
    """The state's result; a stage that ran out of time fails the run naming the stage and its limit."""
    if state.name == "TimedOut":
        raise SentiflowError(timeout_message(task.name, task.timeout_seconds))
    return state.result()


def run_stage(
    task: Any,
    *args: Any,
    reused: Reused,
    store: Any = None,
    artifacts: Callable[[Any], list[str]] | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``task`` with ``args`` and ``kwargs``; record whether Prefect served it from its cache.

    A cached result whose artifacts (``artifacts(result)``: store URIs) are no longer all in ``store`` is not
    handed on: the stage runs again with ``refresh_cache`` and its new result replaces the cache entry.
    """
    state = task(*args, **kwargs, return_state=True)
    if state.name == "Cached" and artifacts is not None and store is not None:
        missing = [uri for uri in artifacts(state.result()) if not store.exists(store.key_from_uri(uri))]
        if missing:
            print(f"{task.name}: the cached result names {missing[0]}, which is gone from the store; running it again")
            state = task.with_options(refresh_cache=True)(*args, **kwargs, return_state=True)
    reused[task.name] = state.name == "Cached"
    return stage_result(task, state)


def _store(settings: Settings) -> Any:
    from backends.base import get_store

    return get_store(settings)


# --- the halves, as plain functions of a flow ----------------------------------------------------------------


def prepare_data(
    settings: Settings, source: str | None, sha256: str | None, max_reviews_per_class: int | None, reused: Reused
) -> dict[str, Any]:
    """Wire the data stages (inputs from ``flows.data``, shared with the up-to-date check); returns what later
    stages and the summary need."""
    store = _store(settings)
    request = data_request(settings, source, sha256, max_reviews_per_class)

    def stage(task: Any, inputs: dict[str, Any]) -> Any:
        return run_stage(
            task, **inputs, reused=reused, store=store, artifacts=lambda result: _data_artifacts(task.name, result)
        )

    archive = stage(download_task, download_inputs(settings, request))
    dataset = stage(load_task, load_inputs(settings, archive.uri, archive.sha256))
    validation = stage(validate_task, validate_inputs(settings, dataset.uri))
    channels = stage(prepare_task, prepare_inputs(settings, dataset.uri, request.max_reviews_per_class))
    return data_summary(
        archive.to_dict(), dataset.to_dict(), validation, channels.to_dict(), request.max_reviews_per_class
    )


def _data_artifacts(stage: str, result: Any) -> list[str]:
    return stage_artifacts(stage, result if isinstance(result, dict) else result.to_dict())


def train(settings: Settings, data: dict[str, Any], hyperparameters: dict[str, Any] | None, reused: Reused) -> Any:
    """The training stage on the data's channels (hyperparameters resolved first, so the cache key is complete)."""
    resolved = training_hyperparameters(settings, hyperparameters, origin="parameter")
    channels = data["channels"]["channels"]
    task = train_model.with_options(timeout_seconds=training_timeout_s(settings.aws_max_runtime_s))
    return run_stage(
        task,
        {"train": channels["train"], "validation": channels["validation"]},
        resolved,
        settings.train_instance_count,
        settings.backend,
        reused=reused,
        store=_store(settings),
        artifacts=lambda result: [result.model_uri],
    )


def evaluate_model(
    settings: Settings,
    data: dict[str, Any],
    model_uri: str,
    name: str,
    reused: Reused,
    deployed: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Batch transform over the test channel, then the metrics beside the baseline and the ``deployed`` model (the
    registry's live one, unless it is this model); (transform URI, report)."""
    compared = None
    if deployed and deployed["model_uri"] != model_uri:  # only what the report shows: a rerun stays cached
        compared = {key: deployed.get(key) for key in ("version", "model_uri", "accuracy", "metrics_uri")}
    store, channels = _store(settings), data["channels"]["channels"]
    transformed = run_stage(
        batch_transform_task,
        model_uri,
        f"{channels['test']}/test_features.csv",
        f"evaluations/{name}/transform",
        settings.backend,
        reused=reused,
        store=store,
        artifacts=lambda uri: [output_file_uri(uri)],
    )
    evaluation = run_stage(
        evaluate_task,
        f"{channels['train']}/train.npz",
        f"{channels['test']}/test.npz",
        transformed,
        model_uri,
        f"evaluations/{name}",
        settings.backend,
        compared,
        reused=reused,
        store=store,
        artifacts=lambda report: [report["uri"]],
    )
    return transformed, evaluation


def deploy_checked(
    settings: Settings,
    data: dict[str, Any],
    model_uri: str,
    accuracy: float,
    transformed: str,
    reused: Reused,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Deploy a candidate endpoint, check serving parity through it, promote it only if parity passed (else it is
    deleted and the old endpoint keeps serving). When the API already serves this model, nothing is deployed.

    Returns (promotion, parity); parity is None when nothing was deployed."""
    backend = settings.backend
    with endpoints_lock(settings, print):
        already = stage_result(serving_endpoint_task, serving_endpoint_task(model_uri, backend, return_state=True))
        reused["deploy-endpoint"] = already is not None
        if already is not None:
            return already.to_dict(), None
        candidate = stage_result(
            deploy_endpoint_task, deploy_endpoint_task(model_uri, accuracy, backend, return_state=True)
        )
        state = parity_task(
            candidate.name,
            data["dataset"]["uri"],
            transformed,
            settings.parity_sample,
            settings.seed,
            data["max_reviews_per_class"],
            backend,
            return_state=True,
        )
        if not state.is_completed():
            delete_endpoint_task(candidate.name, "the parity check did not finish", backend)
            stage_result(parity_task, state)  # raises the parity stage's own error
        parity = state.result()
        promotion = promote_endpoint_task(candidate, parity["passed"], backend)
        return promotion.to_dict(), parity


def model_tags(data: dict[str, Any], training: Any) -> dict[str, str]:
    """The registry tags of a trained model: the flow run, the dataset's hash, the training job."""
    from prefect.runtime import flow_run

    tags = {"run-id": str(flow_run.id or ""), "dataset-sha256": data["dataset"]["sha256"]}
    tags["training-job"] = training.job_name
    return {key: value for key, value in tags.items() if value}


# --- the flows ------------------------------------------------------------------------------------------------


def _settings(**overrides: Any) -> Settings:
    return get_settings("parameter", **overrides)


@flow(name="sentiflow-data", log_prints=True)
def data_flow(
    source: str | None = None,
    sha256: str | None = None,
    backend: str | None = None,
    max_reviews_per_class: int | None = None,
    vocab_size: int | None = None,
    max_len: int | None = None,
) -> dict[str, Any]:
    """Download, validate and preprocess the IMDB dataset into training channels in the artifact store."""
    settings = _settings(backend=backend, vocab_size=vocab_size, max_len=max_len)
    reused: Reused = {}
    with run_lock(settings):
        data = prepare_data(settings, source, sha256, max_reviews_per_class, reused)
    return {**data, "reused": reused}


@flow(name="sentiflow-train", log_prints=True)
def train_flow(
    source: str | None = None,
    sha256: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    backend: str | None = None,
    max_reviews_per_class: int | None = None,
    vocab_size: int | None = None,
    max_len: int | None = None,
) -> dict[str, Any]:
    """The data stages, then training; returns the data summary and the training job."""
    settings = _settings(backend=backend, vocab_size=vocab_size, max_len=max_len)
    reused: Reused = {}
    with run_lock(settings):
        data = prepare_data(settings, source, sha256, max_reviews_per_class, reused)
        training = train(settings, data, hyperparameters, reused)
    return {"data": data, "training": training.to_dict(), "reused": reused}


@flow(name="sentiflow-pipeline", log_prints=True)
def pipeline(
    source: str | None = None,
    sha256: str | None = None,
    backend: str | None = None,
    epochs: int | None = None,
    vocab_size: int | None = None,
    max_len: int | None = None,
    min_accuracy: float | None = None,
    max_regression: float | None = None,
    parity_sample: int | None = None,
    teardown_after: bool = False,
    require_approval: bool = False,
    max_reviews_per_class: int | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and evaluate; if the model passes the quality gate, deploy it to a candidate endpoint, check serving
    parity through that endpoint, and only then point the API at it."""
    settings = _settings(
        backend=backend,
        epochs=epochs,
        vocab_size=vocab_size,
        max_len=max_len,
        min_accuracy=min_accuracy,
        max_regression=max_regression,
        parity_sample=parity_sample,
    )
    reused: Reused = {}
    with run_lock(settings):
        data = prepare_data(settings, source, sha256, max_reviews_per_class, reused)
        training = train(settings, data, hyperparameters, reused)
        deployed = deployed_model_task(settings.backend)  # the registry's live model, before this one is registered
        transformed, evaluation = evaluate_model(
            settings, data, training.model_uri, training.job_name, reused, deployed
        )
    accuracy = evaluation["model"]["accuracy"]
    registered = register_model_task(
        training.model_uri, evaluation.get("uri"), accuracy, model_tags(data, training), settings.backend
    )
    decision = gate_task(
        accuracy,
        deployed["accuracy"] if deployed else None,
        settings.min_accuracy,
        settings.max_regression,
        (evaluation.get("behaviour") or {}).get("pass_rate"),
        settings.min_behaviour_pass_rate,
    )
    summary: dict[str, Any] = {
        "backend": settings.backend,
        "data": data,
        "training": training.to_dict(),
        "evaluation": evaluation,
        "gate": decision,
        "model": registered,
        "deployed_model": deployed,
        "parity": None,
        "promoted": False,
        "reused": reused,
    }
    if not decision["promote"]:
        print(f"not promoted: {decision['reason']}")
        reject_model_task(registered["version"], f"quality gate: {decision['reason']}", settings.backend)
        return summary
    if require_approval:
        from evaluation.report import report_markdown
        from flows.approval import review_model

        markdown = report_markdown(evaluation, {})
        if not review_model(registered["version"], markdown, settings.backend, timeout_s=24 * 3600):
            summary["gate"] = {"promote": False, "reason": "rejected by the reviewer"}
            print("not promoted: rejected by the reviewer")
            return summary
    promotion, parity = deploy_checked(settings, data, training.model_uri, accuracy, transformed, reused)
    summary.update(promoted=True, promotion=promotion, parity=parity)
    if teardown_after:
        with endpoints_lock(settings, print):
            deletion = delete_endpoint_task(promotion["endpoint"]["name"], "teardown-after", settings.backend)
        summary["teardown"] = deletion.to_dict()
    return summary
