"""SageMaker training job for ``model/train.py`` (script mode in AWS's PyTorch training container).

The request comes from ``backends.sagemaker.training`` — the builder the local backend runs through the same
toolkit the container runs — so what the local twin proves (hyperparameters as the script receives them, the
source bundle, the distribution switch, a script error reaching FailureReason) holds for what is sent here.
This module stages the source bundle, sends the request with boto3, follows the job (status and CloudWatch
lines) and reads the model's metrics back.

``SENTIFLOW_TRAIN_INSTANCE_COUNT > 1`` trains with torch DDP across that many instances (torchrun, one rank each;
see docs/aws.md for what that costs and when it pays).
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.aws.clients import AwsClients, aws_errors, error_code
from backends.aws.images import pytorch_image_uri
from backends.aws.storage import S3ArtifactStore
from backends.base import LogLine, TrainingResult, TrainingSpec
from backends.sagemaker.training import (  # noqa: F401 - sagemaker_name is imported from here by the aws modules
    build_source_tarball,
    job_hyperparameters,
    sagemaker_name,
    train_instance_count,
    training_job_request,
)
from core.errors import ConfigError, SentiflowError
from core.io import sha256_file

if TYPE_CHECKING:
    from core.config import Settings

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = {"Completed", "Failed", "Stopped"}


class CloudWatchLogTail:
    """Follows every CloudWatch log stream of one training job and hands new lines to ``log``."""

    def __init__(self, logs_client: Any, job_name: str, group: str = LOG_GROUP) -> None:
        self.client = logs_client
        self.group = group
        self.prefix = f"{job_name}/"
        self.tokens: dict[str, str | None] = {}

    def poll(self, log: LogLine) -> int:
        """Emit the lines written since the last poll; returns how many. Missing group/streams: 0."""
        from botocore.exceptions import ClientError

        emitted = 0
        try:
            streams = self.client.describe_log_streams(logGroupName=self.group, logStreamNamePrefix=self.prefix)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return 0
            raise
        for stream in streams.get("logStreams", []):
            name = stream["logStreamName"]
            for _ in range(100):  # bounded: at most 100 pages per stream per poll
                kwargs: dict[str, Any] = {
                    "logGroupName": self.group,
                    "logStreamName": name,
                    "startFromHead": True,
                }
                if self.tokens.get(name):
                    kwargs["nextToken"] = self.tokens[name]
                page = self.client.get_log_events(**kwargs)
                for event in page.get("events", []):
                    log(event["message"].rstrip("\n"))
                    emitted += 1
                token = page.get("nextForwardToken")
                if not page.get("events") or token == self.tokens.get(name):
                    self.tokens[name] = token or self.tokens.get(name)
                    break
                self.tokens[name] = token
        return emitted


def read_model_metrics(store: S3ArtifactStore, model_uri: str) -> dict[str, Any] | None:
    """``metrics.json`` from a ``model.tar.gz`` in the store (None when absent)."""
    with tempfile.TemporaryDirectory(prefix="sentiflow-model-") as tmp:
        local = store.get_file(store.key_from_uri(model_uri), Path(tmp) / "model.tar.gz")
        try:
            with tarfile.open(local, "r:gz") as tar:
                for member in tar:
                    if member.isfile() and member.name.lstrip("./") == "metrics.json":
                        handle = tar.extractfile(member)
                        return json.loads(handle.read()) if handle else None
        except (tarfile.TarError, OSError, EOFError, ValueError) as error:
            raise SentiflowError(f"{model_uri} is not a readable model.tar.gz: {error}") from error
    return None


class SageMakerTrainer:
    """``Trainer`` on SageMaker: stage code, create the job, follow it, return the model URI and metrics."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        store: S3ArtifactStore,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.store = store
        self.sleep = sleep

    def _check(self) -> str:
        if not self.settings.aws_role_arn:
            raise ConfigError(
                "SageMaker training needs an execution role: set SENTIFLOW_AWS_ROLE_ARN "
                "(policy: deployments/iam/sagemaker-execution-role.json, see docs/aws.md)"
            )
        return self.settings.aws_role_arn

    def stage_source(self) -> str:
        """Upload ``sourcedir.tar.gz`` under a content-addressed key (skipped when already there); its URI. Under
        network isolation the bundle carries the pinned wheels (the container cannot reach PyPI)."""
        vendored = self.settings.aws_network_isolation
        with tempfile.TemporaryDirectory(prefix="sentiflow-src-") as tmp:
            tarball = build_source_tarball(Path(tmp) / "sourcedir.tar.gz", vendored=vendored)
            digest = sha256_file(tarball)[:16]
            uri, _ = self.store.put_file(tarball, f"code/{digest}/sourcedir.tar.gz")
        return uri

    def train(self, spec: TrainingSpec, log: LogLine) -> TrainingResult:
        role_arn = self._check()
        job_hyperparameters(spec.hyperparameters)  # refused here, before anything is uploaded or created
        region = self.clients.region
        job_name = sagemaker_name(spec.job_name)
        count = train_instance_count(self.settings)
        image = pytorch_image_uri(self.settings, region, self.settings.aws_train_instance_type, "training")
        submit_uri = self.stage_source()
        request = training_job_request(
            settings=self.settings,
            spec=spec,
            job_name=job_name,
            region=region,
            role_arn=role_arn,
            image_uri=image,
            submit_uri=submit_uri,
            output_uri=self.store.uri(spec.output_prefix),
            checkpoint_uri=self.store.uri(f"{spec.output_prefix.rstrip('/')}/checkpoints/{job_name}"),
        )
        sagemaker = self.clients.client("sagemaker")
        from botocore.exceptions import ClientError

        try:
            with aws_errors(f"creating SageMaker training job {job_name}", "see docs/aws.md for the roles"):
                sagemaker.create_training_job(**request)
            instances = self.settings.aws_train_instance_type
            log(f"training job {job_name} created on {count} x {instances} ({image})")
        except ClientError as error:
            if error_code(error) != "ResourceInUse":
                raise
            log(f"training job {job_name} already exists; following it")
        started = time.monotonic()
        description = self.wait(job_name, log)
        model_uri = description["ModelArtifacts"]["S3ModelArtifacts"]
        metrics = read_model_metrics(self.store, model_uri) or {}
        metrics = dict(metrics)
        metrics["sagemaker"] = {
            "training_job_arn": description.get("TrainingJobArn"),
            "instance_count": count,
            "billable_seconds": description.get("BillableTimeInSeconds"),
            "training_seconds": description.get("TrainingTimeInSeconds"),
            "final_metrics": {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList", [])},
        }
        start, end = description.get("TrainingStartTime"), description.get("TrainingEndTime")
        duration = (end - start).total_seconds() if start and end else time.monotonic() - started
        return TrainingResult(
            job_name=job_name,
            model_uri=model_uri,
            metrics=metrics,
            hyperparameters=dict(spec.hyperparameters),
            duration_s=float(duration),
        )

    def wait(self, job_name: str, log: LogLine) -> dict[str, Any]:
        """Poll until the job ends, logging status changes and its CloudWatch lines; the final description.

        Interrupting the wait (Ctrl-C, flow cancellation) stops the job so it does not keep billing.
        """
        sagemaker = self.clients.client("sagemaker")
        tail = CloudWatchLogTail(self.clients.client("logs"), job_name)
        interval = self.settings.aws_poll_seconds
        last = ("", "")
        status = ""
        try:
            while True:
                description = sagemaker.describe_training_job(TrainingJobName=job_name)
                status = description["TrainingJobStatus"]
                state = (status, description.get("SecondaryStatus", ""))
                if state != last:
                    message = next(
                        (
                            t.get("StatusMessage", "")
                            for t in reversed(description.get("SecondaryStatusTransitions", []))
                            if t.get("Status") == state[1]
                        ),
                        "",
                    )
                    log(f"training job {job_name}: {status}/{state[1]}" + (f" - {message}" if message else ""))
                    last = state
                tail.poll(log)
                if status in TERMINAL:
                    break
                self.sleep(interval)
        except Exception:
            raise  # describe/log errors: the job itself is fine, Prefect may retry the wait
        except BaseException:  # KeyboardInterrupt, cancellation: do not leave an orphan job billing
            if status not in TERMINAL:
                self.stop(job_name, log)
            raise
        if status == "Failed":
            raise SentiflowError(
                f"SageMaker training job {job_name} failed: "
                f"{description.get('FailureReason', 'no reason given')}; "
                f"logs: CloudWatch {LOG_GROUP}/{job_name}"
            )
        if status == "Stopped":
            raise SentiflowError(f"SageMaker training job {job_name} was stopped before it finished")
        return description

    def stop(self, job_name: str, log: LogLine) -> None:
        """Ask SageMaker to stop the job (best effort: errors are logged, not raised)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.clients.client("sagemaker").stop_training_job(TrainingJobName=job_name)
            log(f"training job {job_name}: stop requested")
        except (ClientError, BotoCoreError) as error:
            log(f"training job {job_name}: could not stop it ({error}); stop it in the console")
