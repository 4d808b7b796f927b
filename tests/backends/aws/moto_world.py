"""A moto account that behaves enough like AWS for sentiflow's aws backend (unit tests and the e2e).

moto records SageMaker jobs but runs nothing: jobs are ``Completed`` at once, no ``model.tar.gz`` or transform
output is written, and ``UpdateEndpoint``/``StopTrainingJob`` are not implemented. ``MotoWorld`` fills that in
*inside the in-process moto server* (``ThreadedMotoServer`` shares this process), so the code under test sees
ordinary AWS responses:

* ``setup()``: the artifact bucket and the SageMaker and Lambda roles (policies from deployments/iam).
* ``play_sagemaker()``: a ``CreateTrainingJob`` goes ``InProgress`` and a background thread runs the
  *local* ``model/train.py`` on the job's S3 channels with the job's hyperparameters (SageMaker's ``SM_*``
  environment), streams its stdout into CloudWatch Logs ``/aws/sagemaker/TrainingJobs``, packs the model
  folder into ``model.tar.gz`` at the job's ``ModelArtifacts`` path and marks the job ``Completed`` (or
  ``Failed`` with the script's error). A ``CreateTransformJob`` likewise runs ``serve.inference`` (the
  functions the PyTorch container calls) over each input file in MultiRecord batches and writes
  ``<file>.out``. ``UpdateEndpoint`` switches the endpoint to the new config (or, with
  ``fail_next_update``, rolls back with a FailureReason); ``StopTrainingJob`` marks the job ``Stopped``.
* ``seed_invocations`` / ``seed_endpoint_results``: CloudWatch ``Invocations`` datapoints and
  sagemaker-runtime responses.

Players can be replaced (``training_player=``, ``transform_player=``) to keep unit tests free of torch work.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[3]
IAM_DIR = PROJECT_ROOT / "deployments" / "iam"
ACCOUNT = "123456789012"
REGION = "us-east-1"

TrainingPlayer = Callable[["MotoWorld", dict[str, Any], Path], tuple[Path, list[str]]]
TransformPlayer = Callable[["MotoWorld", dict[str, Any], dict[str, Any]], None]


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def _utcnow() -> datetime:
    """Naive UTC, like moto's own timestamps."""
    return datetime.now(UTC).replace(tzinfo=None)


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class MotoWorld:
    """See the module docstring. ``monkeypatch`` undoes every patch of moto at the end of the test."""

    def __init__(
        self,
        endpoint_url: str,
        monkeypatch: pytest.MonkeyPatch,
        work_dir: Path,
        bucket: str = "sentiflow-test-artifacts",
        prefix: str = "sentiflow",
    ) -> None:
        self.endpoint_url = endpoint_url
        self.monkeypatch = monkeypatch
        self.work_dir = Path(work_dir)
        self.bucket = bucket
        self.prefix = prefix
        self.role_arn = ""
        self.lambda_role_arn = ""
        self.training_player: TrainingPlayer = run_local_training
        self.transform_player: TransformPlayer = run_local_transform
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.fail_next_update: str | None = None
        self.update_requests: list[dict[str, Any]] = []
        self.stop_requests: list[str] = []

    # --- clients and setup ----------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION)

    def setup(self) -> None:
        """Create the bucket and both roles (with the repo's least-privilege policies attached inline)."""
        self.client("s3").create_bucket(Bucket=self.bucket)
        iam = self.client("iam")
        roles = {
            "sentiflow-sagemaker-execution": ("sagemaker.amazonaws.com", "sagemaker-execution-role.json"),
            "sentiflow-lambda-predict": ("lambda.amazonaws.com", "lambda-predict-role.json"),
        }
        arns = {}
        for name, (service, policy_file) in roles.items():
            arns[name] = iam.create_role(RoleName=name, AssumeRolePolicyDocument=_trust(service))["Role"]["Arn"]
            if (IAM_DIR / policy_file).is_file():
                iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=(IAM_DIR / policy_file).read_text())
        self.role_arn = arns["sentiflow-sagemaker-execution"]
        self.lambda_role_arn = arns["sentiflow-lambda-predict"]

    def settings_overrides(self) -> dict[str, Any]:
        """The ``Settings`` fields that make the aws backend use this world."""
        return {
            "aws_region": REGION,
            "aws_bucket": self.bucket,
            "aws_prefix": self.prefix,
            "aws_role_arn": self.role_arn,
            "aws_lambda_role_arn": self.lambda_role_arn,
        }

    # --- moto internals ---------------------------------------------------------------------------------
    @staticmethod
    def sagemaker_backend() -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION]

    def play_sagemaker(self) -> None:
        """Patch the in-process moto server so jobs run locally and UpdateEndpoint/StopTrainingJob exist."""
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        world = self
        original_training = SageMakerModelBackend.create_training_job
        original_transform = SageMakerModelBackend.create_transform_job

        def create_training_job(backend: Any, *args: Any, **kwargs: Any) -> Any:
            job = original_training(backend, *args, **kwargs)
            job.training_job_status, job.secondary_status = "InProgress", "Starting"
            job.training_end_time = None
            del job.model_artifacts  # AWS reports them only once the job completed
            world._spawn(world._train, job)
            return job

        def create_transform_job(backend: Any, *args: Any, **kwargs: Any) -> Any:
            job = original_transform(backend, *args, **kwargs)
            job.transform_job_status = "InProgress"
            world._spawn(world._transform, job)
            return job

        def update_endpoint(response: Any) -> str:
            name = response._get_param("EndpointName")
            config_name = response._get_param("EndpointConfigName")
            world.update_requests.append(dict(response._get_params()))
            backend = response.sagemaker_backend
            endpoint = backend.endpoints[name]
            if world.fail_next_update:
                endpoint.failure_reason, world.fail_next_update = world.fail_next_update, None
            else:
                config = backend.endpoint_configs[config_name]
                endpoint.endpoint_config_name = config_name
                endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
                endpoint.failure_reason = None
            endpoint.last_modified_time = _utcnow()
            return json.dumps({"EndpointArn": endpoint.arn})

        def stop_training_job(response: Any) -> str:
            name = response._get_param("TrainingJobName")
            world.stop_requests.append(name)
            job = response.sagemaker_backend.training_jobs[name]
            job.training_job_status, job.secondary_status = "Stopped", "Stopped"
            return "{}"

        self.monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_training_job)
        self.monkeypatch.setattr(SageMakerModelBackend, "create_transform_job", create_transform_job)
        self.monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)
        self.monkeypatch.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)

    def _spawn(self, target: Callable[[Any], None], job: Any) -> None:
        def run() -> None:
            try:
                target(job)
            except BaseException as error:  # surfaced by join()
                self.errors.append(error)

        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, timeout: float = 600) -> None:
        """Wait for the played jobs; re-raise the first error a player hit."""
        for thread in self.threads:
            thread.join(timeout)
        if self.errors:
            raise self.errors[0]

    # --- training ---------------------------------------------------------------------------------------
    def download_prefix(self, uri: str, dest: Path) -> Path:
        """Download every object under an S3 prefix (SageMaker File mode: relative names kept)."""
        s3 = self.client("s3")
        bucket, prefix = split_s3(uri)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :].lstrip("/") or Path(item["Key"]).name
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))
        return dest

    def _train(self, job: Any) -> None:
        folder = self.work_dir / job.training_job_name
        job.secondary_status = "Training"
        try:
            model_dir, lines = self.training_player(self, _job_description(job), folder)
        except TrainingFailed as failure:
            self.put_log_lines(job.training_job_name, failure.lines)
            job.failure_reason = f"AlgorithmError: {failure}"
            job.training_job_status, job.secondary_status = "Failed", "Failed"
            return
        self.put_log_lines(job.training_job_name, lines)
        tar_path = folder / "model.tar.gz"
        pack_dir(model_dir, tar_path)
        output = job.output_data_config["S3OutputPath"].rstrip("/")
        artifacts = f"{output}/{job.training_job_name}/output/model.tar.gz"
        bucket, key = split_s3(artifacts)
        self.client("s3").upload_file(str(tar_path), bucket, key)
        job.model_artifacts = {"S3ModelArtifacts": artifacts}
        job.training_end_time = _utcnow()
        job.training_job_status, job.secondary_status = "Completed", "Completed"

    def put_log_lines(self, job_name: str, lines: list[str]) -> None:
        """Write lines into ``/aws/sagemaker/TrainingJobs`` stream ``<job>/algo-1-…`` as SageMaker does."""
        if not lines:
            return
        logs = self.client("logs")
        group, stream = "/aws/sagemaker/TrainingJobs", f"{job_name}/algo-1-{int(time.time())}"
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    # --- transform --------------------------------------------------------------------------------------
    def _transform(self, job: Any) -> None:
        model = self.client("sagemaker").describe_model(ModelName=job.model_name)
        try:
            self.transform_player(self, _transform_description(job), model)
        except Exception as error:
            job.failure_reason = f"ClientError: {error}"
            job.transform_job_status = "Failed"
            return
        job.transform_job_status = "Completed"

    # --- runtime and metrics ------------------------------------------------------------------------------
    def seed_endpoint_results(self, bodies: list[str | bytes], content_type: str = "application/json") -> None:
        """Queue sagemaker-runtime responses (FIFO, one per distinct request)."""
        results = [{"Body": b.decode() if isinstance(b, bytes) else b, "ContentType": content_type} for b in bodies]
        payload = json.dumps({"account_id": ACCOUNT, "region": REGION, "results": results}).encode()
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/static/sagemaker/endpoint-results",
            data=payload,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10)

    def seed_invocations(
        self, endpoint: str, count: float, variant: str = "AllTraffic", at: datetime | None = None
    ) -> None:
        """Put an ``AWS/SageMaker`` ``Invocations`` datapoint for the variant (at ``at``, default now)."""
        self.client("cloudwatch").put_metric_data(
            Namespace="AWS/SageMaker",
            MetricData=[
                {
                    "MetricName": "Invocations",
                    "Dimensions": [
                        {"Name": "EndpointName", "Value": endpoint},
                        {"Name": "VariantName", "Value": variant},
                    ],
                    "Timestamp": at or datetime.now(UTC),
                    "Value": count,
                    "Unit": "None",
                }
            ],
        )

    def read_text(self, uri: str) -> str:
        bucket, key = split_s3(uri)
        return self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()

    def put_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        self.client("s3").put_object(Bucket=bucket, Key=key, Body=data)


class TrainingFailed(Exception):
    """Raised by a training player: the job becomes Failed with this message as FailureReason."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or []


def _job_description(job: Any) -> dict[str, Any]:
    return {
        "TrainingJobName": job.training_job_name,
        "HyperParameters": dict(job.hyper_parameters or {}),
        "InputDataConfig": list(job.input_data_config or []),
        "OutputDataConfig": dict(job.output_data_config),
    }


def _transform_description(job: Any) -> dict[str, Any]:
    return {
        "TransformJobName": job.transform_job_name,
        "TransformInput": job.transform_input,
        "TransformOutput": job.transform_output,
        "BatchStrategy": job.batch_strategy,
        "MaxPayloadInMB": job.max_payload_in_mb,
        "Environment": job.environment or {},
    }


def pack_dir(folder: Path, tar_path: Path) -> Path:
    """Pack a model folder the way SageMaker does (files at the archive root)."""
    with tarfile.open(tar_path, "w:gz") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            tar.add(path, arcname=path.relative_to(folder).as_posix())
    return tar_path


def decode_hyperparameters(values: dict[str, str]) -> list[str]:
    """SageMaker's ``--key value`` arguments from JSON-encoded hyperparameters (``sagemaker_*`` dropped)."""
    args: list[str] = []
    for key, raw in values.items():
        if key.startswith("sagemaker_"):
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if isinstance(value, bool):
            value = str(value).lower()
        args += [f"--{key}", str(value)]
    return args


def run_local_training(world: MotoWorld, job: dict[str, Any], folder: Path) -> tuple[Path, list[str]]:
    """Run the project's ``model/train.py`` as the PyTorch container would; (model dir, stdout lines)."""
    env_channels = {}
    for channel in job["InputDataConfig"]:
        name = channel["ChannelName"]
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        env_channels[f"SM_CHANNEL_{name.upper()}"] = str(world.download_prefix(uri, folder / "input" / name))
    model_dir = folder / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(PROJECT_ROOT),
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(folder / "output"),
        "SM_CHECKPOINT_DIR": str(folder / "checkpoints"),
        "SM_NUM_GPUS": "0",
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "TRAINING_JOB_NAME": job["TrainingJobName"],
        **env_channels,
    }
    command = [
        sys.executable,
        str(PROJECT_ROOT / "model" / "train.py"),
        *decode_hyperparameters(job["HyperParameters"]),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=folder.parent)
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    if done.returncode != 0:
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no output")
        raise TrainingFailed(f"ExitCode {done.returncode}: {last}", lines)
    return model_dir, lines


def run_local_transform(world: MotoWorld, job: dict[str, Any], model: dict[str, Any]) -> None:
    """Score each input file with ``serve.inference`` in MultiRecord batches; write ``<file>.out`` (Line)."""
    from model.artifact import unpack_model
    from serve import inference

    folder = world.work_dir / job["TransformJobName"]
    bucket, key = split_s3(model["PrimaryContainer"]["ModelDataUrl"])
    folder.mkdir(parents=True, exist_ok=True)
    world.client("s3").download_file(bucket, key, str(folder / "model.tar.gz"))
    loaded = inference.model_fn(str(unpack_model(folder / "model.tar.gz", folder / "model")))
    inputs = world.download_prefix(job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"], folder / "in")
    limit = int(job["Environment"].get("SENTIFLOW_SERVE_MAX_REVIEWS", "256"))
    batch_bytes = int(job.get("MaxPayloadInMB") or 6) * 1024 * 1024
    out_prefix = job["TransformOutput"]["S3OutputPath"].rstrip("/")
    for path in sorted(p for p in inputs.rglob("*") if p.is_file()):
        output = io.BytesIO()
        batch: list[str] = []
        size = 0
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        for index, line in enumerate(lines):
            batch.append(line)
            size += len(line) + 1
            if size >= batch_bytes * 0.9 or len(batch) >= limit or index == len(lines) - 1:
                data = inference.input_fn("\n".join(batch) + "\n", "text/csv", max_reviews=limit)
                output.write(inference.output_fn(inference.predict_fn(data, loaded), "text/csv"))
                batch, size = [], 0
        out_bucket, out_key = split_s3(f"{out_prefix}/{path.relative_to(inputs).as_posix()}.out")
        world.client("s3").put_object(Bucket=out_bucket, Key=out_key, Body=output.getvalue())
