"""The one CreateTrainingJob request builder both backends use: fields, hyperparameters, instances, source bundle."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from backends.base import TrainingSpec
from backends.sagemaker import training
from backends.sagemaker.training import (
    build_source_tarball,
    encode_hyperparameters,
    job_hyperparameters,
    sagemaker_name,
    train_instance_count,
    training_job_request,
)
from core.config import Settings
from core.errors import ConfigError, SentiflowError
from model.artifact import requirements_txt

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"


def _spec(**hyperparameters: object) -> TrainingSpec:
    return TrainingSpec(
        job_name="sentiflow-train-run_42",
        hyperparameters={"epochs": 2, "hidden-dim": 32, "architecture": "bilstm-pool", **hyperparameters},
        channels={"train": "s3://b/p/channels/train", "validation": "s3://b/p/channels/validation"},
        output_prefix="runs/42/training",
        tags={"sentiflow:run-id": "42"},
    )


def _request(settings: Settings, spec: TrainingSpec | None = None) -> dict:
    return training_job_request(
        settings=settings,
        spec=spec or _spec(),
        job_name="sentiflow-train-run-42",
        region="us-east-1",
        role_arn="arn:aws:iam::123456789012:role/sm",
        image_uri=IMAGE,
        submit_uri="s3://b/p/code/abc/sourcedir.tar.gz",
        output_uri="s3://b/p/runs/42/training",
        checkpoint_uri="s3://b/p/runs/42/training/checkpoints/sentiflow-train-run-42",
    )


def test_the_request_field_by_field(settings: Settings) -> None:
    request = _request(settings)
    assert request["TrainingJobName"] == "sentiflow-train-run-42"
    assert request["HyperParameters"] == {
        "architecture": '"bilstm-pool"',
        "epochs": "2",
        "hidden_dim": "32",  # the canonical spelling: the toolkit passes --hidden_dim 32
        "sagemaker_program": '"model/train.py"',
        "sagemaker_submit_directory": '"s3://b/p/code/abc/sourcedir.tar.gz"',
        "sagemaker_region": '"us-east-1"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"sentiflow-train-run-42"',
    }
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 6 * 3600}
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels["train"]["S3Uri"] == "s3://b/p/channels/train/"
    assert {c["S3DataDistributionType"] for c in channels.values()} == {"FullyReplicated"}
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["project"] == "sentiflow" and tags["sentiflow:run-id"] == "42"


def test_metric_definitions_match_the_scripts_epoch_line(settings: Settings) -> None:
    line = "epoch=3 train_loss=0.312 val_loss=0.298 val_accuracy=0.881 epoch_s=41.2"
    definitions = _request(settings)["AlgorithmSpecification"]["MetricDefinitions"]
    found = {d["Name"]: re.search(d["Regex"], line).group(1) for d in definitions}
    assert found["validation:accuracy"] == "0.881" and found["train:loss"] == "0.312"


def test_spot_doubles_the_wait(settings: Settings) -> None:
    request = _request(settings.with_overrides(aws_use_spot=True))
    assert request["EnableManagedSpotTraining"] is True
    assert (
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] == 2 * request["StoppingCondition"]["MaxRuntimeInSeconds"]
    )


@pytest.mark.parametrize(
    "key",
    [
        "model_dir",
        "train",
        "validation",
        "checkpoint_dir",
        "output_data_dir",
        "sagemaker_program",
        "sagemaker_submit_directory",
        "sagemaker_mpi_num_of_processes_per_host",
    ],  # fmt: skip
)
def test_anything_but_the_training_configuration_is_refused(settings: Settings, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _request(settings, _spec(**{key: "/some/path"}))
    message = str(caught.value)
    assert "\n" not in message and f"'{key}' is not a hyperparameter" in message
    assert "allowed: architecture, epochs, batch_size, embedding_dim, hidden_dim, learning_rate" in message


def test_bad_values_are_refused_before_any_job(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="--epochs must be at least 1"):
        job_hyperparameters({"epochs": 0})
    with pytest.raises(ConfigError, match="'architecture' is unknown|--architecture 'gpt' is unknown"):
        _request(settings, _spec(architecture="gpt"))


def test_several_instances_switch_torchrun_on(settings: Settings) -> None:
    request = _request(settings.with_overrides(train_instance_count=3))
    assert request["ResourceConfig"]["InstanceCount"] == 3
    assert request["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    # the channels stay whole on every instance: the script shards rows (one CSV cannot be split by S3 key)
    assert {c["DataSource"]["S3DataSource"]["S3DataDistributionType"] for c in request["InputDataConfig"]} == {
        "FullyReplicated"
    }
    assert "sagemaker_torch_distributed_enabled" not in _request(settings)["HyperParameters"]


def test_the_older_instance_count_setting_is_an_alias(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SENTIFLOW_AWS_TRAIN_INSTANCE_COUNT", "2")
    assert train_instance_count(Settings(home=tmp_path)) == 2
    monkeypatch.setenv("SENTIFLOW_TRAIN_INSTANCE_COUNT", "2")
    assert train_instance_count(Settings(home=tmp_path)) == 2
    monkeypatch.setenv("SENTIFLOW_TRAIN_INSTANCE_COUNT", "3")
    with pytest.raises(ConfigError, match="disagree"):
        train_instance_count(Settings(home=tmp_path))
    monkeypatch.delenv("SENTIFLOW_AWS_TRAIN_INSTANCE_COUNT")
    assert train_instance_count(Settings(home=tmp_path)) == 3


def test_hyperparameters_are_json_strings() -> None:
    assert encode_hyperparameters({"epochs": 2, "architecture": "lstm-pool", "lr": 0.5}) == {
        "epochs": "2",
        "architecture": '"lstm-pool"',
        "lr": "0.5",
    }


def test_names_are_made_valid() -> None:
    assert sagemaker_name("sentiflow-train-run_42") == "sentiflow-train-run-42"
    assert len(sagemaker_name("x" * 100)) == 63


def test_the_source_bundle_is_the_model_package_and_its_requirements(tmp_path: Path) -> None:
    first = build_source_tarball(tmp_path / "a" / "sourcedir.tar.gz")
    second = build_source_tarball(tmp_path / "b" / "sourcedir.tar.gz")
    assert first.read_bytes() == second.read_bytes()  # byte-reproducible: content-addressed uploads
    with tarfile.open(first) as tar:
        names = tar.getnames()
        requirements = tar.extractfile("requirements.txt").read().decode()  # type: ignore[union-attr]
    assert training.ENTRY_POINT in names and "model/artifact.py" in names
    assert all(name.startswith("model/") for name in names if name != "requirements.txt")
    assert "model/requirements.lock.txt" in names and not any(name.startswith("model/wheels/") for name in names)
    assert requirements == requirements_txt()  # the model lock's pins, each with its wheel's hash
    assert "beautifulsoup4==" in requirements and "--hash=sha256:" in requirements and "nltk" not in requirements


def test_network_isolation_sends_the_bundle_as_a_channel_and_sets_the_flag(settings: Settings) -> None:
    plain = _request(settings)
    assert "EnableNetworkIsolation" not in plain and {c["ChannelName"] for c in plain["InputDataConfig"]} == {
        "train",
        "validation",
    }
    request = _request(settings.with_overrides(aws_network_isolation=True))
    assert request["EnableNetworkIsolation"] is True
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert channels["code"]["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": "s3://b/p/code/abc/sourcedir.tar.gz",
        "S3DataDistributionType": "FullyReplicated",
    }
    # the container cannot fetch from S3: the toolkit unpacks the channel's local copy
    assert request["HyperParameters"]["sagemaker_submit_directory"] == '"/opt/ml/input/data/code/sourcedir.tar.gz"'
    assert {
        k: v for k, v in request.items() if k not in ("EnableNetworkIsolation", "InputDataConfig", "HyperParameters")
    } == {k: v for k, v in plain.items() if k not in ("InputDataConfig", "HyperParameters")}


def test_a_vendored_bundle_installs_its_requirements_offline_from_the_bundle_folder(tmp_path: Path) -> None:
    """The training toolkit's step (``pip install -r requirements.txt`` in the unpacked bundle) with no network;
    the job's model then vendors the same wheels into code/wheels/ (model/train.py's write_inference_code)."""
    from model.artifact import write_inference_code
    from tests.model.test_requirements import offline_pip_install

    tarball = build_source_tarball(tmp_path / "sourcedir.tar.gz", vendored=True)
    code = tmp_path / "opt-ml-code"
    with tarfile.open(tarball) as tar:
        tar.extractall(code, filter="data")
    wheels = sorted(path.name for path in (code / "model" / "wheels").iterdir())
    assert wheels and all(name.endswith(".whl") for name in wheels)
    assert (code / "requirements.txt").read_text().splitlines()[1:3] == ["--no-index", "--find-links model/wheels"]
    done = offline_pip_install(Path("requirements.txt"), cwd=code, venv=tmp_path / "venv")
    assert done.returncode == 0 and "Successfully installed beautifulsoup4-" in done.stdout, done.stdout + done.stderr

    model_code = write_inference_code(tmp_path / "model", package_dir=code / "model")
    assert sorted(path.name for path in (model_code / "wheels").iterdir()) == wheels
    assert (model_code / "requirements.txt").read_text().splitlines()[1:3] == ["--no-index", "--find-links wheels"]


def test_a_vendored_bundle_refuses_a_tampered_wheel(tmp_path: Path) -> None:
    import shutil

    wheels = shutil.copytree(training.MODEL_WHEELS_DIR, tmp_path / "wheels")
    victim = sorted(wheels.glob("*.whl"))[0]
    victim.write_bytes(b"not a wheel")
    with pytest.raises(SentiflowError, match=rf"training source bundle: {victim} has sha256 .*make lock"):
        build_source_tarball(tmp_path / "sourcedir.tar.gz", vendored=True, wheels_dir=wheels)
