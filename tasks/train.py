"""The training stage: run the backend's trainer on the channels in the store, publish loss/accuracy plots.

A job's name is a hash of the channel URIs (content-addressed, see ``tasks.data.prepare``), the training code and
the hyperparameters: SageMaker needs a unique name, and a retried job of the same name resumes from its
checkpoints. Reruns are Prefect's cache — the stage is keyed on its inputs, its source and the ``model`` package
(``tasks.policies``) — so nothing here looks for earlier jobs. The logic lives in plain functions (testable
without Prefect); ``train_model`` is the thin Prefect task around them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from prefect import task

from backends.base import Trainer, TrainingResult, TrainingSpec
from core.config import Settings
from core.errors import ConfigError
from core.io import sha256_file
from tasks.policies import stage_cache, training_stage

# Settings that are training hyperparameters (SageMaker flag names with underscores).
SETTINGS_HYPERPARAMETERS = (
    "architecture",
    "epochs",
    "embedding_dim",
    "hidden_dim",
    "batch_size",
    "learning_rate",
    "patience",
    "seed",
)
JOB_PREFIX = "sentiflow-train-"


def training_hyperparameters(
    settings: Settings, overrides: dict[str, Any] | None = None, origin: str = "flag"
) -> dict[str, Any]:
    """The job's hyperparameters: training settings with ``overrides`` on top, validated before any work.

    ``origin`` names the overrides in errors (``"flag"``: ``--epochs``, ``"parameter"``: flow parameter)."""
    from model.train import TrainingError, parse_hyperparameters

    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    known = {key: overrides.pop(key) for key in list(overrides) if key in SETTINGS_HYPERPARAMETERS}
    merged = settings.with_overrides(origin, **known)
    hyperparameters = {key: getattr(merged, key) for key in SETTINGS_HYPERPARAMETERS} | overrides
    try:
        parse_hyperparameters([f"--{key.replace('_', '-')}={value}" for key, value in hyperparameters.items()])
    except TrainingError as error:
        raise ConfigError(f"training {error} (from settings and overrides {hyperparameters})") from error
    return hyperparameters


def training_code_hash(package_dir: Path | None = None) -> str:
    """sha256 over the ``model`` package: the code training runs and ships in ``code/`` (nothing else)."""
    from model.artifact import PACKAGE_DIR, code_sources

    digest = hashlib.sha256()
    for path in code_sources(package_dir or PACKAGE_DIR):
        digest.update(f"model/{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def job_name_for(channel_uris: dict[str, str], hyperparameters: dict[str, Any], code_hash: str) -> str:
    """Deterministic job name (≤ 63 chars, SageMaker-valid) for these channels, code and hyperparameters."""
    payload = json.dumps(
        {
            "channels": dict(sorted(channel_uris.items())),
            "code": code_hash,
            "hyperparameters": hyperparameters,
        },
        sort_keys=True,
        default=str,
    )
    return JOB_PREFIX + hashlib.sha256(payload.encode()).hexdigest()[:20]


def output_prefix_for(job_name: str) -> str:
    return f"training/{job_name}"


def train(trainer: Trainer, channel_uris: dict[str, str], hyperparameters: dict[str, Any], log: Any) -> TrainingResult:
    """Run one training job on ``channel_uris`` (store URIs of the train and validation channel folders)."""
    missing = {"train", "validation"} - set(channel_uris)
    if missing:
        raise ConfigError(f"training needs the channels {sorted(missing)}; got {sorted(channel_uris)}")
    job_name = job_name_for(channel_uris, hyperparameters, training_code_hash())
    spec = TrainingSpec(
        job_name=job_name,
        hyperparameters=hyperparameters,
        channels={name: channel_uris[name] for name in ("train", "validation")},
        output_prefix=output_prefix_for(job_name),
        tags={"project": "sentiflow"},
    )
    return trainer.train(spec, log)


# --- reporting -----------------------------------------------------------------------------------


def plot_history(history: list[dict[str, float]]) -> bytes:
    """PNG of train/validation loss and validation accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [entry["epoch"] for entry in history]
    figure = Figure(figsize=(9, 3.5), dpi=100)
    loss, accuracy = figure.subplots(1, 2)
    loss.plot(epochs, [e["train_loss"] for e in history], marker="o", label="train")
    loss.plot(epochs, [e["val_loss"] for e in history], marker="o", label="validation")
    loss.set(title="Loss", xlabel="epoch", ylabel="binary cross-entropy")
    loss.legend()
    accuracy.plot(epochs, [e["val_accuracy"] for e in history], marker="o", color="tab:green")
    accuracy.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    for axes in (loss, accuracy):
        axes.set_xticks(epochs)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def training_report(result: TrainingResult, png: bytes) -> str:
    """Markdown for the Prefect artifact: summary line and the plot as a data URI."""
    metrics = result.metrics
    image = base64.b64encode(png).decode("ascii")
    state = f"trained in {result.duration_s:.0f} s"
    return (
        f"### Training job `{result.job_name}`\n\n"
        f"{state}; best epoch {metrics['best_epoch']} of {metrics['epochs_run']}: "
        f"val_loss {metrics['val_loss']:.4f}, val_accuracy {metrics['val_accuracy']:.4f}.\n\n"
        f"Artifact: `{result.model_uri}`\n\n"
        f"![training curves](data:image/png;base64,{image})\n"
    )


def epoch_table(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [
        {key: round(float(entry[key]), 4) for key in ("epoch", "train_loss", "val_loss", "val_accuracy", "epoch_s")}
        for entry in history
    ]


@task(**training_stage("train-model"), **stage_cache("tasks.train", "model"))
def train_model(
    channel_uris: dict[str, str], hyperparameters: dict[str, Any], instance_count: int, backend: str
) -> TrainingResult:
    """Train the model on the backend and publish its curves.

    ``hyperparameters`` is the complete, resolved set (``training_hyperparameters``) and ``instance_count`` the
    number of training instances (DDP ranks), so the cache key holds everything that decides the model."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.logging import get_run_logger

    from backends.base import get_backend
    from core.config import get_settings

    logger = get_run_logger()
    settings = get_settings("parameter", backend=backend, train_instance_count=instance_count)
    resolved = training_hyperparameters(settings, hyperparameters, origin="parameter")
    result = train(get_backend(settings).trainer, channel_uris, resolved, logger.info)
    history = result.metrics["history"]
    create_markdown_artifact(
        key="training-curves",
        markdown=training_report(result, plot_history(history)),
        description=f"Loss and validation accuracy of {result.job_name}",
    )
    create_table_artifact(key="training-epochs", table=epoch_table(history), description=result.job_name)
    return result
