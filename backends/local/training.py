"""Local training: the CreateTrainingJob request the aws backend sends, run here through SageMaker's own toolkit.

``LocalTrainer.train`` builds the request with ``backends.sagemaker.training.training_job_request`` (the aws
backend's builder) and hands it to ``backends.sagemaker.local_job.run_local_job``, which lays out ``/opt/ml`` per
instance and runs the PyTorch training container's entry point (``sagemaker-training``'s ``train``) on it. A job
lives in ``<home>/jobs/<job_name>/``::

    request.json             the request (the same fields SageMaker would get)
    sourcedir.tar.gz         the source bundle: model/ + requirements.txt (sagemaker_submit_directory)
    logs/algo-N.log          each instance's output (the toolkit's and the script's)
    output/train.log         the lines passed on to the caller (the toolkit's environment dump left out)
    algo-N/                  that instance's /opt/ml; algo-N/checkpoints/ is kept, so a rerun resumes
    output/model.tar.gz      algo-1's model folder, packed (what SageMaker uploads to S3OutputPath)
    job.json                 name, hyperparameters, metrics, duration, artifact URI

``SENTIFLOW_TRAIN_INSTANCE_COUNT=N`` (``sentiflow train --ranks N``) runs N instances on this machine, as SageMaker
runs N: one toolkit each, torchrun across them, one torch DDP rank per instance.

Failures: the script's own one-line error (it writes ``output/failure``, SageMaker's FailureReason) becomes a
:class:`SentiflowError` (not retried); a job whose processes died without a word — killed, out of memory — raises
:class:`TrainingInterrupted`, which the stage's retry policy retries, and the rerun resumes from the checkpoint.
"""

from __future__ import annotations

import re
import time
from importlib import metadata
from pathlib import Path

from backends.base import ArtifactStore, LogLine, TrainingResult, TrainingSpec
from backends.sagemaker.local_job import LocalJobResult, run_local_job
from backends.sagemaker.training import (
    build_source_tarball,
    sagemaker_name,
    train_instance_count,
    training_job_request,
)
from core.config import Settings
from core.errors import ConfigError, SentiflowError
from core.io import atomic_write_json, local_path, read_json
from model.artifact import pack_model_dir
from model.train import EPOCH_LINE

INSTANCE_PREFIX = re.compile(r"^\[algo-\d+\] ")  # how the runner marks lines when there are several instances
LOCAL_ROLE_ARN = "arn:aws:iam::000000000000:role/sentiflow-local"  # the request needs one; nothing here assumes it


class TrainingInterrupted(RuntimeError):
    """The job's processes died without the script reporting an error (killed, out of memory): a rerun of the same
    job resumes from its last checkpoint, so the stage may retry it (it is not a SentiflowError)."""


def _channel_dir(uri: str) -> Path:
    """The local folder behind a channel URI (``file://`` or a plain path)."""
    path = local_path(uri)
    if path is None:
        raise ConfigError(f"channel URI {uri!r} is not local (file://); the local backend trains on local channels")
    if not path.is_dir():
        raise SentiflowError(f"channel folder {path} (from {uri}) does not exist; rerun `sentiflow data prepare`")
    return path


def local_image() -> str:
    """The ``TrainingImage`` of a local request: the toolkit in this environment stands in for the container."""
    try:
        version = metadata.version("sagemaker-training")
    except metadata.PackageNotFoundError:
        version = "missing"
    return f"local/sagemaker-training-toolkit:{version}"


def one_line(text: str, limit: int = 600) -> str:
    """``text`` on one line (whitespace collapsed), at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class LocalTrainer:
    """``backends.base.Trainer``: the SageMaker request, run on this machine by the training container's toolkit."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    def job_dir(self, job_name: str) -> Path:
        return self.settings.home / "jobs" / job_name

    def request(self, spec: TrainingSpec, job: Path) -> dict:
        """The request the aws backend would send for ``spec``, its locations pointing into ``job``."""
        name = sagemaker_name(spec.job_name)
        prefix = spec.output_prefix.rstrip("/")
        return training_job_request(
            settings=self.settings,
            spec=spec,
            job_name=name,
            region=self.settings.aws_region,
            role_arn=LOCAL_ROLE_ARN,
            image_uri=local_image(),
            submit_uri=str(job / "sourcedir.tar.gz"),
            output_uri=self.store.uri(prefix),
            checkpoint_uri=self.store.uri(f"{prefix}/checkpoints/{name}"),
        )

    def train(self, spec: TrainingSpec, log: LogLine) -> TrainingResult:
        started = time.perf_counter()
        job = self.job_dir(spec.job_name)
        channels = {name: _channel_dir(uri) for name, uri in spec.channels.items()}
        request = self.request(spec, job)  # hyperparameters and channels checked before anything is written
        count = train_instance_count(self.settings)
        job.mkdir(parents=True, exist_ok=True)
        tarball = build_source_tarball(job / "sourcedir.tar.gz")
        ranks = f" on {count} local instances (torch DDP)" if count > 1 else ""
        log(f"training job {request['TrainingJobName']} in {job}{ranks} (SageMaker training toolkit)")
        epochs = spec.hyperparameters.get("epochs", "?")

        (job / "output").mkdir(exist_ok=True)
        with open(job / "output" / "train.log", "w", encoding="utf-8") as console:

            def relay(line: str) -> None:
                console.write(line + "\n")
                match = EPOCH_LINE.match(INSTANCE_PREFIX.sub("", line))
                log(f"epoch {match['epoch']}/{epochs}: {line}" if match else line)

            outcome = run_local_job(request, channels, job, tarball, log=relay)
        self._raise_unless_completed(outcome)

        metrics = dict(read_json(outcome.model_dir / "metrics.json"))
        metrics["sagemaker"] = {
            "training_job_arn": f"arn:aws:sagemaker:local:000000000000:training-job/{outcome.job_name.lower()}",
            "instance_count": count,
            "billable_seconds": None,
            "training_seconds": round(outcome.seconds, 3),
            "final_metrics": outcome.final_metrics,
        }
        tar_path = pack_model_dir(outcome.model_dir, job / "output" / "model.tar.gz")
        model_uri, _ = self.store.put_file(tar_path, f"{spec.output_prefix}/model.tar.gz")
        result = TrainingResult(
            job_name=spec.job_name,
            model_uri=model_uri,
            metrics=metrics,
            hyperparameters=dict(spec.hyperparameters),
            duration_s=round(time.perf_counter() - started, 3),
        )
        record = {**result.to_dict(), "channels": spec.channels, "tags": spec.tags, "backend": "local"}
        atomic_write_json(job / "job.json", record)
        self.store.put_file(job / "job.json", f"{spec.output_prefix}/job.json")
        log(f"model artifact: {model_uri}")
        return result

    @staticmethod
    def _raise_unless_completed(outcome: LocalJobResult) -> None:
        if outcome.status == "Completed":
            return
        where = f"log: {outcome.log_path}"
        reason = one_line(outcome.failure_reason or "no reason recorded")
        if outcome.status == "Stopped":
            raise SentiflowError(
                f"training job {outcome.job_name} was stopped: {reason}; rerun to resume from its last checkpoint, "
                f"or raise SENTIFLOW_AWS_MAX_RUNTIME_S; {where}"
            )
        if outcome.interrupted:
            raise TrainingInterrupted(
                f"training job {outcome.job_name} was interrupted: {reason}; a rerun resumes from its last "
                f"checkpoint; {where}"
            )
        raise SentiflowError(f"training job {outcome.job_name} failed: {reason}; {where}")
