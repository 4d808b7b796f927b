"""SageMakerTrainer against moto: the CreateTrainingJob request, waiting, log streaming, failure and stop."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from backends.aws import training
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
    assert (hp["epochs"], hp["hidden-dim"], hp["architecture"]) == ("2", "32", '"bilstm-pool"')
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


def test_request_metric_definitions_spot_and_model_contract(aws_settings: Settings) -> None:
    settings = aws_settings.with_overrides(aws_use_spot=True)
    store = S3ArtifactStore(AwsClients(settings), "b", "p")
    request = training.training_job_request(
        settings=settings,
        spec=spec(store),
        job_name="j",
        region="us-east-1",
        role_arn="arn:role",
        image_uri=IMAGE,
        submit_uri="s3://b/src.tar.gz",
        output_uri="s3://b/out",
        checkpoint_uri="s3://b/ck",
    )
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    import re

    line = "epoch=3 train_loss=0.312 val_loss=0.298 val_accuracy=0.881 epoch_s=41.2"
    found = {
        d["Name"]: re.search(d["Regex"], line).group(1) for d in request["AlgorithmSpecification"]["MetricDefinitions"]
    }
    assert found["validation:accuracy"] == "0.881" and found["train:loss"] == "0.312"


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
    trainer, store = make_trainer(aws_settings.with_overrides(aws_train_instance_count=2))
    with pytest.raises(ConfigError, match="SENTIFLOW_AWS_TRAIN_INSTANCE_COUNT=2"):
        trainer.train(spec(store), print)
    settings = aws_settings.model_copy(update={"aws_role_arn": None})
    trainer, store = make_trainer(settings)
    with pytest.raises(ConfigError, match="SENTIFLOW_AWS_ROLE_ARN"):
        trainer.train(spec(store), print)
    trainer, store = make_trainer(aws_settings.with_overrides(aws_framework_version="99.0"))
    with pytest.raises(ConfigError, match="no AWS PyTorch training image"):
        trainer.train(spec(store), print)
