"""The evaluation stage: metrics of the batch-transform output against the test labels, beside the TF-IDF
baseline trained on the same tokens, published to the store as ``evaluation.json`` + plots and as Prefect
artifacts.

The report itself is built by ``evaluation.report``; this module reads the stage inputs from the artifact store
and publishes. The behavioural suite (``evaluation.behaviour``) runs on the trained model itself (``model.tar.gz``
unpacked and loaded as an endpoint loads it) and is published as the ``behaviour`` table artifact; its pass rate
goes into the report (``report["behaviour"]["pass_rate"]``) for the quality gate's
``SENTIFLOW_MIN_BEHAVIOUR_PASS_RATE`` rule.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task

from core.errors import SentiflowError
from tasks.policies import local_stage, stage_cache

if TYPE_CHECKING:
    from backends.base import ArtifactStore
    from core.config import Settings
    from model.channels import Channel


def read_labelled_channel(path: Path) -> Channel:
    """A labelled channel file: ``<name>.npz`` (ragged reviews) or the fixed-width ``label,length,ids…`` CSV of older
    data preparation; SentiflowError naming the file and the fix."""
    from model.channels import ChannelError, load_channel, read_rows_csv

    try:
        channel = load_channel(path) if path.suffix == ".npz" else read_rows_csv(path, labelled=True)
    except (OSError, ValueError, ChannelError) as error:
        raise SentiflowError(f"channel file {path} is unreadable ({error}); re-run data preparation") from None
    if channel.labels is None:
        raise SentiflowError(f"channel file {path} has no labels; re-run data preparation")
    return channel


def read_store_channel(store: ArtifactStore, uri: str) -> Channel:
    """A labelled channel file in the store (its name keeps the suffix that says the format)."""
    with store.local_file(store.key_from_uri(uri)) as path:
        return read_labelled_channel(Path(path))


def model_behaviour(model_uri: str, settings: Settings) -> dict[str, Any]:
    """The behavioural suite on the model archive at ``model_uri`` (``BehaviourReport.to_dict()``), resolved the
    one way every model is (``backends.models``: archive caps checked, unpacked once into the models cache)."""
    from backends.models import resolve_model_dir
    from evaluation.behaviour import run_suite
    from model.artifact import load_artifact

    return run_suite(load_artifact(resolve_model_dir(model_uri, settings)).predict_texts).to_dict()


def deployed_comparison(store: ArtifactStore, deployed: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The deployed model's row for the side-by-side table, from its own evaluation report (the registry's
    accuracy alone when that report cannot be read); no row when nothing is deployed."""
    if not deployed:
        return []
    entry: dict[str, Any] = {
        "name": f"deployed model v{deployed['version']}",
        "accuracy": deployed.get("accuracy"),
        "source": "model registry",
    }
    uri = deployed.get("metrics_uri")
    try:
        if uri:
            with store.local_file(store.key_from_uri(uri)) as path:
                report = json.loads(Path(path).read_text(encoding="utf-8"))
            metrics = report.get("model", {})
            entry.update(
                accuracy=metrics.get("accuracy", entry["accuracy"]),
                f1=metrics.get("f1"),
                roc_auc=metrics.get("roc_auc"),
                behaviour_pass_rate=(report.get("behaviour") or {}).get("pass_rate"),
                source=f"its evaluation report ({uri})",
            )
    except (OSError, ValueError, SentiflowError):  # a report that is gone or unreadable: the registry's figure
        pass
    return [entry]


def evaluate(
    store: ArtifactStore,
    train_uri: str,
    test_uri: str,
    transform_output_uri: str,
    folder: Path,
    behaviour: dict[str, Any] | None = None,
    compared: list[dict[str, Any]] | None = None,
    **context: Any,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Build the report into ``folder``: the transform's scores vs the test labels, and the TF-IDF baseline
    trained on the same id tokens the network sees (whole reviews, up to the channels' ``max_len``)."""
    from evaluation.baseline import rows_to_tokens, tfidf_baseline
    from evaluation.report import write_report
    from tasks.transform import load_transform_scores

    train = read_store_channel(store, train_uri)
    test = read_store_channel(store, test_uri)
    _, scores = load_transform_scores(store, transform_output_uri)
    baseline = tfidf_baseline(rows_to_tokens(train), train.labels, rows_to_tokens(test), test.labels)
    return write_report(
        test.labels,
        scores,
        folder,
        baseline,
        behaviour,
        compared,
        transform_output_uri=transform_output_uri,
        **context,
    )


@task(**local_stage("evaluate"), **stage_cache("tasks.evaluate", "evaluation"))
def evaluate_task(
    train_uri: str,
    test_uri: str,
    transform_output_uri: str,
    model_uri: str,
    report_prefix: str,
    backend: str,
    deployed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics of the transform output vs the test labels, beside the TF-IDF baseline and the ``deployed`` model
    (``{"version", "model_uri", "accuracy", "metrics_uri"}`` from the registry, if one is live); the report (with
    its plots) goes to ``report_prefix/`` in the store, and to the run's artifacts. Returns the report (``uri``)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.logging import get_run_logger

    from backends.base import get_store
    from core.config import get_settings
    from evaluation.behaviour import BehaviourReport, CheckResult
    from evaluation.report import EVALUATION_FILE, report_markdown, side_by_side, table_rows

    settings = get_settings("parameter", backend=backend)
    store = get_store(settings)
    behaviour = model_behaviour(model_uri, settings)
    with tempfile.TemporaryDirectory(prefix="sentiflow-evaluate-") as scratch:
        compared = deployed_comparison(store, deployed)
        report, images = evaluate(
            store, train_uri, test_uri, transform_output_uri, Path(scratch), behaviour, compared, model_uri=model_uri
        )
        for path in sorted(Path(scratch).iterdir()):
            store.put_file(path, f"{report_prefix.strip('/')}/{path.name}")
    report["uri"] = store.uri(f"{report_prefix.strip('/')}/{EVALUATION_FILE}")
    model, base = report["model"], report["baseline"]
    get_run_logger().info(
        "model accuracy %.4f (F1 %.4f, AUC %.4f) vs TF-IDF baseline %.4f; behavioural pass rate %.4f → %s",
        model["accuracy"], model["f1"], model["roc_auc"], base["accuracy"], behaviour["pass_rate"], report["uri"],
    )  # fmt: skip
    create_table_artifact(table_rows(report), key="evaluation-metrics", description="Model vs TF-IDF baseline")
    create_table_artifact(side_by_side(report), key="evaluation-models", description="Models side by side")
    suite = BehaviourReport(
        [CheckResult(**{k: v for k, v in check.items() if k != "pass_rate"}) for check in behaviour["checks"]]
    )
    create_table_artifact(
        suite.table(), key="behaviour", description=f"Behavioural checks: pass rate {behaviour['pass_rate']:.4f}"
    )
    create_markdown_artifact(report_markdown(report, images), key="evaluation-report", description="Batch evaluation")
    return report
