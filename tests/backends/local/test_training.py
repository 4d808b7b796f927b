"""LocalTrainer: the aws backend's CreateTrainingJob request, run here through the SageMaker training toolkit."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pytest

from backends.base import Trainer, TrainingSpec
from backends.local.storage import LocalArtifactStore
from backends.local.training import LocalTrainer, TrainingInterrupted
from backends.sagemaker.local_job import job_processes
from backends.sagemaker.training import training_job_request
from core.config import Settings
from core.errors import ConfigError, SentiflowError
from core.io import read_json
from model.artifact import load_artifact, unpack_model
from tests.fixtures.synthetic import write_channels

# the one-loop architecture: its checkpoint.pth is what these tests kill and resume (nb-lstm's stage checkpoints:
# tests/model/test_stages.py)
TINY = {
    "architecture": "bilstm-pool",
    "epochs": 1,
    "embedding_dim": 8,
    "hidden_dim": 8,
    "batch_size": 32,
    "seed": 3,
    "num_threads": 1,
}


@pytest.fixture
def store(settings: Settings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.store_dir)


def _put_channels(store: LocalArtifactStore, source: Path, name: str = "abc") -> dict[str, str]:
    """Channels put into the store, as the data stages do."""
    for path in source.rglob("*.*"):
        store.put_file(path, f"channels/{name}/{path.relative_to(source).as_posix()}")
    return {channel: store.uri(f"channels/{name}/{channel}") for channel in ("train", "validation")}


@pytest.fixture
def channel_uris(store: LocalArtifactStore, tmp_path: Path) -> dict[str, str]:
    return _put_channels(store, write_channels(tmp_path / "made", per_class=100))


def _spec(channel_uris: dict[str, str], name: str = "job-1", **hyperparameters: object) -> TrainingSpec:
    return TrainingSpec(
        job_name=name,
        hyperparameters={**TINY, **hyperparameters},
        channels=channel_uris,
        output_prefix=f"training/{name}",
    )


def test_the_local_request_is_the_one_the_aws_backend_sends(
    settings: Settings, store: LocalArtifactStore, channel_uris: dict[str, str]
) -> None:
    trainer = LocalTrainer(settings.with_overrides(train_instance_count=2), store)
    spec = _spec(channel_uris, "job_1", hidden_dim=16)
    job = settings.home / "jobs" / "job_1"
    request = trainer.request(spec, job)
    assert request == training_job_request(
        settings=trainer.settings,
        spec=spec,
        job_name="job-1",
        region="us-east-1",
        role_arn=request["RoleArn"],
        image_uri=request["AlgorithmSpecification"]["TrainingImage"],
        submit_uri=str(job / "sourcedir.tar.gz"),
        output_uri=store.uri("training/job_1"),
        checkpoint_uri=store.uri("training/job_1/checkpoints/job-1"),
    )
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert request["HyperParameters"]["hidden_dim"] == "16"


def test_a_location_hyperparameter_is_refused_and_nothing_is_written_or_removed(
    settings: Settings, store: LocalArtifactStore, channel_uris: dict[str, str], tmp_path: Path
) -> None:
    """Issue 15: ``hyperparameters={"model_dir": "/some/path"}`` must never reach the script."""
    target = tmp_path / "some" / "path"
    (target / "code").mkdir(parents=True)
    (target / "code" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError) as caught:
        LocalTrainer(settings, store).train(_spec(channel_uris, "job-x", model_dir=str(target)), lambda line: None)
    assert "'model_dir' is not a hyperparameter; allowed: architecture, epochs" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert [p.relative_to(target).as_posix() for p in sorted(target.rglob("*"))] == ["code", "code/keep.txt"]
    assert not (settings.home / "jobs" / "job-x").exists()


def test_a_missing_channel_is_refused_before_starting(settings: Settings, store: LocalArtifactStore) -> None:
    uris = {"train": store.uri("channels/none/train"), "validation": store.uri("channels/none/validation")}
    with pytest.raises(SentiflowError, match="does not exist"):
        LocalTrainer(settings, store).train(_spec(uris, "job-none"), lambda line: None)
    assert not (settings.home / "jobs" / "job-none").exists()


@pytest.mark.e2e  # runs the SageMaker training toolkit
@pytest.mark.timeout(300)
def test_local_training_job_produces_a_model_tarball_in_the_store(
    settings: Settings, store: LocalArtifactStore, channel_uris: dict[str, str], tmp_path: Path
) -> None:
    trainer = LocalTrainer(settings, store)
    assert isinstance(trainer, Trainer)
    lines: list[str] = []
    result = trainer.train(_spec(channel_uris), lines.append)

    assert result.model_uri == store.uri("training/job-1/model.tar.gz")
    assert any(line.startswith("epoch 1/1: epoch=1 train_loss=") for line in lines)
    assert any("Reporting training SUCCESS" in line for line in lines)  # the toolkit's own line
    assert not any(line.startswith("SM_TRAINING_ENV=") for line in lines)  # its env dump stays in the log file
    assert [entry["epoch"] for entry in result.metrics["history"]] == [1]
    assert result.hyperparameters == TINY
    final = result.metrics["sagemaker"]["final_metrics"]  # the request's MetricDefinitions, applied to the log
    assert final["epoch"] == 1 and final["validation:accuracy"] == round(result.metrics["val_accuracy"], 4)

    job = settings.home / "jobs" / "job-1"
    for path in ("request.json", "sourcedir.tar.gz", "logs/algo-1.log", "algo-1/input/config/hyperparameters.json"):
        assert (job / path).is_file(), path
    for folder in ("algo-1/input/data/train", "algo-1/model", "algo-1/checkpoints", "algo-1/code/model"):
        assert (job / folder).is_dir(), folder
    assert (job / "algo-1" / "output" / "success").is_file()
    assert "--hidden_dim 8" in (job / "logs" / "algo-1.log").read_text()  # the toolkit's own command line
    record = read_json(job / "job.json")
    assert record["job_name"] == "job-1" and record["model_uri"] == result.model_uri
    assert record["metrics"]["best_epoch"] == 1 and record["duration_s"] > 0
    assert store.exists("training/job-1/job.json")

    tar_path = store.path(store.key_from_uri(result.model_uri))
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
    assert {"model.pth", "model_info.json", "metrics.json", "code/inference.py", "code/model/preprocessing.py"} <= names
    model = load_artifact(unpack_model(tar_path, tmp_path / "unpacked"))
    assert model.version == "job-1"
    assert model.predict_texts(["a wonderful film"]).shape == (1,)


@pytest.mark.e2e  # runs the SageMaker training toolkit
@pytest.mark.timeout(300)
def test_a_script_error_is_one_line_from_the_toolkits_failure_file(
    settings: Settings, store: LocalArtifactStore, tmp_path: Path
) -> None:
    source = write_channels(tmp_path / "made", per_class=20)
    (source / "validation" / "validation.csv").write_text("1,2,3\n")  # not 'label,length,ids…' of max_len
    uris = _put_channels(store, source, "broken")
    with pytest.raises(SentiflowError) as caught:
        LocalTrainer(settings, store).train(_spec(uris, "job-bad"), lambda line: None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("training job job-bad failed: channel 'validation': ")
    assert "has shape (1, 3)" in message and "ExecuteUserScriptError" not in message
    assert message.endswith("logs/algo-1.log")
    failure = settings.home / "jobs" / "job-bad" / "algo-1" / "output" / "failure"
    assert failure.read_text().startswith("channel 'validation': ")  # written by the script, kept by the toolkit
    assert not store.exists("training/job-bad/model.tar.gz")


@pytest.mark.e2e  # runs the SageMaker training toolkit, twice
@pytest.mark.timeout(600)
def test_kill_9_mid_epoch_then_the_rerun_resumes_from_the_last_checkpoint(
    settings: Settings, store: LocalArtifactStore, tmp_path: Path
) -> None:
    """Issue 10/13: kill -9 every process of the job during epoch 2; the rerun resumes after epoch 1 and finishes."""
    uris = _put_channels(store, write_channels(tmp_path / "made", per_class=300), "big")
    spec = _spec(uris, "job-kill", epochs=3, patience=5, hidden_dim=32, batch_size=16)
    trainer = LocalTrainer(settings, store)
    job = trainer.job_dir("job-kill")
    checkpoint = job / "algo-1" / "checkpoints" / "checkpoint.pth"
    killed: list[int] = []

    def kill_during_epoch_2(line: str) -> None:
        if killed or "epoch=1 " not in line:
            return
        deadline = time.monotonic() + 60  # the checkpoint is saved right after the epoch line
        while not checkpoint.is_file() and time.monotonic() < deadline:
            time.sleep(0.01)
        for process in job_processes(job):  # the toolkit, the script: everything of the job
            process.kill()
            killed.append(process.pid)

    with pytest.raises(TrainingInterrupted) as caught:
        trainer.train(spec, kill_during_epoch_2)
    assert len(killed) >= 2, killed
    assert not isinstance(caught.value, SentiflowError)  # so the stage's retry policy retries it
    assert "a rerun resumes from its last checkpoint" in str(caught.value)
    assert job_processes(job) == [] and checkpoint.is_file()
    assert not store.exists("training/job-kill/model.tar.gz")

    lines: list[str] = []
    result = trainer.train(spec, lines.append)
    assert any(f"resuming from checkpoint {checkpoint} after epoch 1" in line for line in lines), lines[-20:]
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 2/3", "epoch 3/3"]
    assert [entry["epoch"] for entry in result.metrics["history"]] == [1, 2, 3]
    assert store.exists("training/job-kill/model.tar.gz")


@pytest.mark.e2e  # runs two toolkits and torchrun on this machine
@pytest.mark.timeout(600)
def test_two_local_instances_train_with_ddp_like_sagemaker(
    settings: Settings, store: LocalArtifactStore, channel_uris: dict[str, str]
) -> None:
    settings = settings.with_overrides(train_instance_count=2)
    lines: list[str] = []
    result = LocalTrainer(settings, store).train(_spec(channel_uris, "job-ddp", epochs=2), lines.append)
    assert result.metrics["world_size"] == 2 and result.metrics["sagemaker"]["instance_count"] == 2
    assert [entry["epoch"] for entry in result.metrics["history"]] == [1, 2]
    assert any(line.startswith("epoch 2/2: [algo-1] epoch=2 ") for line in lines)
    assert any(line.startswith("[algo-2] ") and "--node_rank 1" in line for line in lines)
    job = settings.home / "jobs" / "job-ddp"
    assert (job / "algo-1" / "checkpoints" / "checkpoint.pth").is_file()  # rank 0 alone writes
    assert list((job / "algo-2" / "checkpoints").iterdir()) == [] and list((job / "algo-2" / "model").iterdir()) == []
    assert job_processes(job) == []
