from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from backends.base import Trainer, TrainingSpec
from backends.local.storage import LocalArtifactStore
from backends.local.training import LocalTrainer, hyperparameter_flags
from core.config import Settings
from core.errors import SentiflowError
from core.io import read_json
from model.artifact import load_artifact, unpack_model
from tests.fixtures.synthetic import write_channels

TINY = {"epochs": 1, "embedding_dim": 8, "hidden_dim": 8, "batch_size": 32, "seed": 3, "num_threads": 1}


@pytest.fixture
def store(settings: Settings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.store_dir)


@pytest.fixture
def channel_uris(store: LocalArtifactStore, tmp_path: Path) -> dict[str, str]:
    """Synthetic channels put into the store, as the data stages do."""
    source = write_channels(tmp_path / "made", per_class=100)
    for path in source.rglob("*.*"):
        store.put_file(path, f"channels/abc/{path.relative_to(source).as_posix()}")
    return {name: store.uri(f"channels/abc/{name}") for name in ("train", "validation")}


def _spec(channel_uris: dict[str, str], name: str = "job-1", **hyperparameters: object) -> TrainingSpec:
    return TrainingSpec(
        job_name=name,
        hyperparameters={**TINY, **hyperparameters},
        channels=channel_uris,
        output_prefix=f"training/{name}",
    )


def test_hyperparameters_become_sagemaker_style_flags() -> None:
    flags = hyperparameter_flags({"hidden_dim": 128, "architecture": "lstm-pool", "shuffle": True})
    assert flags == ["--architecture", "lstm-pool", "--hidden-dim", "128", "--shuffle", "true"]


@pytest.mark.e2e  # a training job in a child process
def test_local_training_job_produces_a_model_tarball_in_the_store(
    settings: Settings, store: LocalArtifactStore, channel_uris: dict[str, str], tmp_path: Path
) -> None:
    trainer = LocalTrainer(settings, store)
    assert isinstance(trainer, Trainer)
    lines: list[str] = []
    result = trainer.train(_spec(channel_uris), lines.append)

    assert result.model_uri == store.uri("training/job-1/model.tar.gz")
    assert any(line.startswith("epoch 1/1: epoch=1 train_loss=") for line in lines)
    assert [entry["epoch"] for entry in result.metrics["history"]] == [1]
    assert result.hyperparameters == TINY

    job = settings.home / "jobs" / "job-1"
    for folder in ("input/data/train", "input/data/validation", "model", "output", "checkpoints"):
        assert (job / folder).is_dir(), folder
    record = read_json(job / "job.json")
    assert record["job_name"] == "job-1" and record["model_uri"] == result.model_uri
    assert record["metrics"]["best_epoch"] == 1 and record["duration_s"] > 0
    assert store.exists("training/job-1/job.json")

    tar_path = store.path(store.key_from_uri(result.model_uri))
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
    assert {"model.pth", "model_info.json", "code/inference.py", "code/model/preprocessing.py"} <= names
    model = load_artifact(unpack_model(tar_path, tmp_path / "unpacked"))
    assert model.version == "job-1"
    assert model.predict_texts(["a wonderful film"]).shape == (1,)


@pytest.mark.e2e  # a training job in a child process
def test_a_failed_job_reports_the_end_of_its_log(
    settings: Settings, store: LocalArtifactStore, channel_uris: dict[str, str]
) -> None:
    with pytest.raises(SentiflowError, match=r"(?s)job-bad failed \(exit code 2\).*--epochs must be at least 1"):
        LocalTrainer(settings, store).train(_spec(channel_uris, "job-bad", epochs=0), lambda line: None)
    assert not store.exists("training/job-bad/model.tar.gz")


def test_a_missing_channel_is_refused_before_starting(settings: Settings, store: LocalArtifactStore) -> None:
    uris = {"train": store.uri("channels/none/train"), "validation": store.uri("channels/none/validation")}
    with pytest.raises(SentiflowError, match="does not exist"):
        LocalTrainer(settings, store).train(_spec(uris, "job-none"), lambda line: None)
    assert not (settings.home / "jobs" / "job-none").exists()
