"""SageMaker training job for ``model/train.py`` (script mode in AWS's PyTorch training container).

Why boto3 and the v2 script-mode contract instead of the v3 SDK's ``ModelTrainer``: the PyTorch training
container's own entrypoint (sagemaker-training-toolkit) natively understands ``sagemaker_program`` /
``sagemaker_submit_directory``, so a plain ``CreateTrainingJob`` with our ``sourcedir.tar.gz`` is the whole
story — every field (checkpoints, managed spot, metric definitions, tags, environment) is explicit and
reviewable, the request is easy to assert in tests, and no 1.6 s SDK import, IAM role simulation, STS call or
telemetry is needed. ``ModelTrainer`` would replace the container entrypoint with its own bash drivers
uploaded as extra channels.

The source bundle holds ``model/`` (self-contained: the training output copies it into ``code/`` for inference),
plus ``requirements.txt`` (nltk, beautifulsoup4) that the toolkit installs before running ``model/train.py``.
"""

from __future__ import annotations

import json
import re
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
from core.errors import ConfigError, SentiflowError
from core.io import sha256_file
from model.artifact import code_sources, requirements_txt, write_reproducible_tar

if TYPE_CHECKING:
    from core.config import Settings

ENTRY_POINT = "model/train.py"
CODE_DIR = "/opt/ml/code"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
VOLUME_SIZE_GB = 10
TERMINAL = {"Completed", "Failed", "Stopped"}
_NAME_OK = re.compile(r"[^a-zA-Z0-9-]+")


def metric_definitions() -> list[dict[str, str]]:
    """The training script's own log-line regexes (``model.train.METRIC_DEFINITIONS``)."""
    from model.train import METRIC_DEFINITIONS

    return list(METRIC_DEFINITIONS)


def supports_distributed() -> bool:
    """Whether model/train.py declares torch DDP support (``SUPPORTS_DDP = True``)."""
    import model.train

    return bool(getattr(model.train, "SUPPORTS_DDP", False))


def sagemaker_name(name: str, limit: int = 63) -> str:
    """A valid SageMaker resource name: ``[a-zA-Z0-9-]``, starts alphanumeric, at most ``limit`` chars."""
    clean = _NAME_OK.sub("-", name).strip("-")
    if not clean:
        raise SentiflowError(f"cannot make a SageMaker name from {name!r}")
    return clean[:limit].rstrip("-")


def build_source_tarball(dest: Path) -> Path:
    """Write ``sourcedir.tar.gz`` (the ``model`` package and requirements.txt), byte-reproducible, to ``dest``."""
    files: list[tuple[str, Path | bytes]] = [(f"model/{path.name}", path) for path in code_sources()]
    if ENTRY_POINT not in {name for name, _ in files}:
        raise SentiflowError(f"training entry point {ENTRY_POINT} not found; reinstall sentiflow from its source tree")
    files.append(("requirements.txt", requirements_txt().encode()))
    return write_reproducible_tar(dest, files)


def encode_hyperparameters(values: dict[str, Any]) -> dict[str, str]:
    """JSON-encode every value, as the SageMaker SDK does; the training toolkit passes ``--key value``."""
    return {str(key): json.dumps(value) for key, value in values.items()}


def training_job_request(
    *,
    settings: Settings,
    spec: TrainingSpec,
    job_name: str,
    region: str,
    role_arn: str,
    image_uri: str,
    submit_uri: str,
    output_uri: str,
    checkpoint_uri: str,
) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request (a pure function: the unit tests assert it field by field)."""
    count = settings.aws_train_instance_count
    hyperparameters = dict(spec.hyperparameters)
    hyperparameters.update(
        sagemaker_program=ENTRY_POINT,
        sagemaker_submit_directory=submit_uri,
        sagemaker_region=region,
        sagemaker_container_log_level=20,
        sagemaker_job_name=job_name,
    )
    if count > 1:
        hyperparameters["sagemaker_torch_distributed_enabled"] = True
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": settings.aws_max_runtime_s}
    if settings.aws_use_spot:  # spot capacity may take as long again to come
        stopping["MaxWaitTimeInSeconds"] = 2 * settings.aws_max_runtime_s
    channels = []
    for name in ("train", "validation"):
        if name not in spec.channels:
            raise SentiflowError(f"training spec {spec.job_name!r} has no {name!r} channel; run the data stages first")
        channels.append(
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": spec.channels[name].rstrip("/") + "/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "text/csv",
                "InputMode": "File",
            }
        )
    tags = {"project": "sentiflow", "sentiflow:managed": "true", "sentiflow:stage": "train", **spec.tags}
    return {
        "TrainingJobName": job_name,
        "HyperParameters": encode_hyperparameters(hyperparameters),
        "AlgorithmSpecification": {
            "TrainingImage": image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
            "EnableSageMakerMetricsTimeSeries": True,
        },
        "RoleArn": role_arn,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": output_uri},
        "ResourceConfig": {
            "InstanceType": settings.aws_train_instance_type,
            "InstanceCount": count,
            "VolumeSizeInGB": VOLUME_SIZE_GB,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": bool(settings.aws_use_spot),
        "CheckpointConfig": {"S3Uri": checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH},
        # model/train.py puts its parent folder on sys.path itself; PYTHONPATH helps any other tool.
        "Environment": {"PYTHONPATH": CODE_DIR, "PYTHONUNBUFFERED": "1"},
        "Tags": [{"Key": str(k), "Value": str(v)} for k, v in tags.items()],
    }


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
        if self.settings.aws_train_instance_count > 1 and not supports_distributed():
            raise ConfigError(
                f"SENTIFLOW_AWS_TRAIN_INSTANCE_COUNT={self.settings.aws_train_instance_count}, but "
                "model/train.py trains on one machine (no torch DDP support); set it to 1 and pick a "
                "larger SENTIFLOW_AWS_TRAIN_INSTANCE_TYPE instead"
            )
        return self.settings.aws_role_arn

    def stage_source(self) -> str:
        """Upload ``sourcedir.tar.gz`` under a content-addressed key (skipped when already there); its URI."""
        with tempfile.TemporaryDirectory(prefix="sentiflow-src-") as tmp:
            tarball = build_source_tarball(Path(tmp) / "sourcedir.tar.gz")
            digest = sha256_file(tarball)[:16]
            uri, _ = self.store.put_file(tarball, f"code/{digest}/sourcedir.tar.gz")
        return uri

    def train(self, spec: TrainingSpec, log: LogLine) -> TrainingResult:
        role_arn = self._check()
        region = self.clients.region
        job_name = sagemaker_name(spec.job_name)
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
            log(f"training job {job_name} created on {self.settings.aws_train_instance_type} ({image})")
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
