"""SageMakerTrainer against moto: the CreateTrainingJob request, waiting, log streaming, failure and stop."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from backends.aws.clients import AwsClients
from backends.aws.storage import S3ArtifactStore
from backends.aws.training import SageMakerTrainer
from backends.base import TrainingSpec
from core.config import Settings
from core.errors import ConfigError, SentiflowError
from tests.backends.aws.helpers import LOG_LINES, METRICS, failing_training, fake_training
from tests.fixtures.moto_world import MotoWorld

pytestmark = pytest.mark.e2e  # the moto server

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
# The request builder itself (fields, metric regexes, spot, hyperparameter checks) is unit-tested in
# tests/backends/sagemaker/test_training.py; here: what reaches SageMaker (moto) and what comes back.


def make_trainer(settings: Settings) -> tuple[SageMakerTrainer, S3ArtifactStore]:
    clients = AwsClients(settings)
    store = S3ArtifactStore(clients, settings.aws_bucket or "", settings.aws_prefix)
    return SageMakerTrainer(settings, clients, store), store


def spec(store: S3ArtifactStore) -> TrainingSpec:
    return TrainingSpec(
        job_name="sentiflow-train-run_42",
        hyperparameters={
            "epochs": 2,
            "hidden-dim": 32,
            "architecture": "bilstm-pool",
            "learning-rate": 0.002,
        },
        channels={
            "train": store.uri("runs/42/channels/train"),
            "validation": store.uri("runs/42/channels/validation"),
        },
        output_prefix="runs/42/training",
        tags={"sentiflow:run-id": "42"},
    )


def test_training_job_request_and_result(aws_settings: Settings, moto_world: MotoWorld) -> None:
    moto_world.training_player = fake_training
    trainer, store = make_trainer(aws_settings)
    lines: list[str] = []
    result = trainer.train(spec(store), lines.append)

    job = moto_world.client("sagemaker").describe_training_job(TrainingJobName="sentiflow-train-run-42")
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["RoleArn"] == moto_world.role_arn
    hp = job["HyperParameters"]
    assert hp["sagemaker_program"] == '"model/train.py"'
    assert hp["sagemaker_region"] == '"us-east-1"'
    submit = json.loads(hp["sagemaker_submit_directory"])
    assert submit.startswith(f"s3://{moto_world.bucket}/sentiflow/code/") and submit.endswith("/sourcedir.tar.gz")
    assert (hp["epochs"], hp["hidden_dim"], hp["architecture"]) == ("2", "32", '"bilstm-pool"')
    assert hp["learning_rate"] == "0.002" and "hidden-dim" not in hp  # the spelling the toolkit passes on
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {
        "train": f"s3://{moto_world.bucket}/sentiflow/runs/42/channels/train/",
        "validation": f"s3://{moto_world.bucket}/sentiflow/runs/42/channels/validation/",
    }
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{moto_world.bucket}/sentiflow/runs/42/training"
    assert job["CheckpointConfig"]["S3Uri"].endswith("/runs/42/training/checkpoints/sentiflow-train-run-42")
    assert job["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10}
    assert job["EnableManagedSpotTraining"] is False
    tags = {
        t["Key"]: t["Value"]
        for t in moto_world.client("sagemaker").list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
    }
    assert tags["project"] == "sentiflow" and tags["sentiflow:stage"] == "train" and tags["sentiflow:run-id"] == "42"

    # the source bundle holds the model package (with the entry point) and the requirements, nothing else
    import io
    import tarfile

    bucket, key = submit[5:].split("/", 1)
    body = moto_world.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = tar.getnames()
    assert {"model/train.py", "model/artifact.py", "model/inference.py", "requirements.txt"} <= set(names)
    assert all(name.startswith("model/") for name in names if name != "requirements.txt")

    assert result.model_uri.endswith("/runs/42/training/sentiflow-train-run-42/output/model.tar.gz")
    assert result.metrics["val_accuracy"] == METRICS["val_accuracy"]
    assert result.metrics["history"] == METRICS["history"]
    assert result.hyperparameters == spec(store).hyperparameters
    assert LOG_LINES[0] in lines  # streamed from CloudWatch Logs
    assert any("InProgress" in line for line in lines) and any("Completed" in line for line in lines)


def test_several_instances_are_accepted_and_run_torchrun(aws_settings: Settings, moto_world: MotoWorld) -> None:
    """Issue 11: multi-instance training is no longer refused; the request carries the torchrun switch."""
    moto_world.training_player = fake_training
    trainer, store = make_trainer(aws_settings.with_overrides(train_instance_count=2))
    lines: list[str] = []
    result = trainer.train(spec(store), lines.append)
    job = moto_world.client("sagemaker").describe_training_job(TrainingJobName="sentiflow-train-run-42")
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert moto_world.seen_training["ResourceConfig"]["InstanceCount"] == 2  # type: ignore[attr-defined]
    assert result.metrics["sagemaker"]["instance_count"] == 2
    assert any("created on 2 x ml.m5.xlarge" in line for line in lines)


def test_a_location_hyperparameter_is_refused_before_anything_is_uploaded(
    aws_settings: Settings, moto_world: MotoWorld
) -> None:
    trainer, store = make_trainer(aws_settings)
    bad = TrainingSpec(**{**spec(store).__dict__, "hyperparameters": {"epochs": 1, "model_dir": "/some/path"}})
    with pytest.raises(ConfigError, match="'model_dir' is not a hyperparameter; allowed: architecture"):
        trainer.train(bad, print)
    assert moto_world.client("s3").list_objects_v2(Bucket=moto_world.bucket).get("KeyCount", 0) == 0
    assert moto_world.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_failed_job_raises_with_failure_reason(aws_settings: Settings, moto_world: MotoWorld) -> None:
    moto_world.training_player = failing_training
    trainer, store = make_trainer(aws_settings)
    lines: list[str] = []
    with pytest.raises(SentiflowError, match="failed: AlgorithmError: ExitCode 2: error: bad hyperparameters"):
        trainer.train(spec(store), lines.append)
    assert "error: bad hyperparameters" in lines


def test_interrupt_stops_the_job(aws_settings: Settings, moto_world: MotoWorld) -> None:
    release = threading.Event()

    def slow(world: MotoWorld, job: dict[str, Any], folder: Path) -> tuple[Path, list[str]]:
        release.wait(10)
        return fake_training(world, job, folder)

    moto_world.training_player = slow
    trainer, store = make_trainer(aws_settings)

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    trainer.sleep = interrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.train(spec(store), lambda line: None)
    release.set()
    assert moto_world.stop_requests == ["sentiflow-train-run-42"]


def test_config_errors(aws_settings: Settings, moto_world: MotoWorld) -> None:
    trainer, store = make_trainer(aws_settings.with_overrides(aws_train_instance_count=2, train_instance_count=3))
    with pytest.raises(ConfigError, match="SENTIFLOW_TRAIN_INSTANCE_COUNT=3 and SENTIFLOW_AWS_TRAIN_INSTANCE_COUNT=2"):
        trainer.train(spec(store), print)
    settings = aws_settings.model_copy(update={"aws_role_arn": None})
    trainer, store = make_trainer(settings)
    with pytest.raises(ConfigError, match="SENTIFLOW_AWS_ROLE_ARN"):
        trainer.train(spec(store), print)
    trainer, store = make_trainer(aws_settings.with_overrides(aws_framework_version="99.0"))
    with pytest.raises(ConfigError, match="no AWS PyTorch training image"):
        trainer.train(spec(store), print)


def test_network_isolation_reaches_sagemaker(aws_settings: Settings, moto_world: MotoWorld) -> None:
    """DescribeTrainingJob (moto records the field) shows EnableNetworkIsolation; the bundle is the ``code``
    channel and carries the pinned wheels, so the container needs no network to install them."""
    import io
    import tarfile

    moto_world.training_player = fake_training
    trainer, store = make_trainer(aws_settings.with_overrides(aws_network_isolation=True))
    trainer.train(spec(store), print)
    job = moto_world.client("sagemaker").describe_training_job(TrainingJobName="sentiflow-train-run-42")
    assert job["EnableNetworkIsolation"] is True
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    submit = json.loads(job["HyperParameters"]["sagemaker_submit_directory"])
    assert submit == "/opt/ml/input/data/code/sourcedir.tar.gz"
    bucket, key = channels["code"][5:].split("/", 1)
    body = moto_world.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = tar.getnames()
        requirements = tar.extractfile("requirements.txt").read().decode()  # type: ignore[union-attr]
    assert any(name.startswith("model/wheels/") and name.endswith(".whl") for name in names)
    assert "--no-index" in requirements.splitlines()
