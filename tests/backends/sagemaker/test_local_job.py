"""The local twin of a SageMaker training job: /opt/ml laid out from the request, the toolkit's environment, metric
regexes, process reaping and the one-multi-instance-job guard (unit); a real toolkit run stopped at its
MaxRuntimeInSeconds (e2e)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.base import TrainingSpec
from backends.sagemaker import local_job, training
from backends.sagemaker.local_job import (
    JOB_MARKER,
    MetricParser,
    _Relay,
    distributed_slot,
    host_names,
    job_lock,
    job_processes,
    prepare_host,
    reap,
    run_local_job,
    toolkit_entry,
    toolkit_environment,
)
from backends.sagemaker.training import build_source_tarball, metric_definitions, training_job_request
from core.config import Settings
from core.errors import SentiflowError
from tests.fixtures.synthetic import write_channels


def _request(settings: Settings, count: int = 1, **hyperparameters: object) -> dict:
    spec = TrainingSpec(
        job_name="job-1",
        hyperparameters={"epochs": 1, "hidden_dim": 8, "embedding_dim": 8, **hyperparameters},
        channels={"train": "s3://b/ch/train", "validation": "s3://b/ch/validation"},
        output_prefix="training/job-1",
    )
    return training_job_request(
        settings=settings.with_overrides(train_instance_count=count),
        spec=spec,
        job_name="job-1",
        region="us-east-1",
        role_arn="arn:aws:iam::000000000000:role/x",
        image_uri="local/toolkit",
        submit_uri="s3://b/code/sourcedir.tar.gz",
        output_uri="s3://b/training",
        checkpoint_uri="s3://b/training/checkpoints/job-1",
    )


@pytest.fixture
def channel_dirs(tmp_path: Path) -> dict[str, Path]:
    root = write_channels(tmp_path / "channels", per_class=40)
    return {name: root / name for name in ("train", "validation")}


def test_opt_ml_is_laid_out_from_the_request(settings: Settings, channel_dirs: dict[str, Path], tmp_path: Path) -> None:
    request = _request(settings, count=2)
    base, tarball = tmp_path / "job" / "algo-2", tmp_path / "sourcedir.tar.gz"
    hosts = host_names(2)
    assert hosts == ["127.0.0.1", "127.0.0.2"] and host_names(1) == ["algo-1"]
    (base / "checkpoints").mkdir(parents=True)
    (base / "checkpoints" / "checkpoint.pth").write_text("kept")
    (base / "model").mkdir()
    (base / "model" / "old.pth").write_text("stale")
    prepare_host(request, base, hosts, hosts[1], channel_dirs, tarball)

    config = base / "input" / "config"
    written = json.loads((config / "hyperparameters.json").read_text())
    assert written == {**request["HyperParameters"], "sagemaker_submit_directory": json.dumps(str(tarball))}
    assert written["sagemaker_torch_distributed_enabled"] == "true"
    resource = json.loads((config / "resourceconfig.json").read_text())
    assert resource["current_host"] == "127.0.0.2" and resource["hosts"] == hosts
    assert resource["network_interface_name"] == "lo" and resource["current_instance_type"] == "ml.m5.xlarge"
    data = json.loads((config / "inputdataconfig.json").read_text())
    assert data["train"] == {
        "TrainingInputMode": "File",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
        "ContentType": "text/csv",
    }
    assert json.loads((config / "checkpointconfig.json").read_text())["LocalPath"] == "/opt/ml/checkpoints"
    staged = base / "input" / "data" / "train" / "train.csv"
    assert staged.read_bytes() == (channel_dirs["train"] / "train.csv").read_bytes()
    assert os.stat(staged).st_ino == os.stat(channel_dirs["train"] / "train.csv").st_ino  # a hard link
    assert (base / "checkpoints" / "checkpoint.pth").read_text() == "kept"  # a rerun resumes
    assert list((base / "code").iterdir()) == [] and list((base / "model").iterdir()) == []


def test_the_job_sees_the_request_environment_and_no_secrets_of_ours(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret")
    monkeypatch.setenv("SENTIFLOW_NOTIFY_URL", "https://hooks.example/planted-secret")
    monkeypatch.setenv("SM_MODEL_DIR", "/elsewhere")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    base = tmp_path / "job" / "algo-1"
    env = toolkit_environment(_request(settings), base, tmp_path / "job")
    assert "planted-secret" not in json.dumps(env) and "SM_MODEL_DIR" not in env
    assert env["PIP_INDEX_URL"] == "http://127.0.0.1:9/simple"  # pip settings pass: the toolkit installs requirements
    assert env["PYTHONPATH"] == f"{base}/code"  # the request's /opt/ml/code, mapped
    assert env["SAGEMAKER_BASE_DIR"] == str(base) and env["TRAINING_JOB_NAME"] == "job-1"
    assert env["SAGEMAKER_TRAINING_MODULE"] == "sagemaker_pytorch_container.training:main"
    assert env["SM_STUDIO_LOCAL_MODE"] == "true" and env[JOB_MARKER] == str(tmp_path / "job")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_metric_definitions_are_applied_to_the_log() -> None:
    parser = MetricParser(metric_definitions())
    lines: list[str] = []
    relay = _Relay(lines.append, parser, several=True)
    for line in [
        "2026-01-01 sagemaker-training-toolkit INFO     Invoking user script",
        "",
        "Training Env:",
        '{"hyperparameters": {"epochs": 2}}',
        "SM_HOSTS=[...]",
        "Invoking script with the following command:",
        "torchrun --nnodes 2 model/train.py --epochs 2",
        "epoch=1 train_loss=0.6000 val_loss=0.5000 val_accuracy=0.7000 epoch_s=1.5",
        "epoch=2 train_loss=0.4000 val_loss=0.3500 val_accuracy=0.8500 epoch_s=1.4",
    ]:
        relay("algo-1", line)
    assert lines == [
        "[algo-1] 2026-01-01 sagemaker-training-toolkit INFO     Invoking user script",
        "[algo-1] Invoking script with the following command:",
        "[algo-1] torchrun --nnodes 2 model/train.py --epochs 2",
        "[algo-1] epoch=1 train_loss=0.6000 val_loss=0.5000 val_accuracy=0.7000 epoch_s=1.5",
        "[algo-1] epoch=2 train_loss=0.4000 val_loss=0.3500 val_accuracy=0.8500 epoch_s=1.4",
    ]
    assert parser.values["validation:accuracy"] == [0.7, 0.85] and parser.values["epoch"] == [1.0, 2.0]


def test_every_process_carrying_the_jobs_marker_is_reaped(tmp_path: Path) -> None:
    job = tmp_path / "job"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    marked = subprocess.Popen(sleeper, env={**os.environ, JOB_MARKER: str(job)}, start_new_session=True)
    other = subprocess.Popen(sleeper, env={**os.environ, JOB_MARKER: str(tmp_path / "other")})
    try:
        deadline = time.monotonic() + 10
        while not job_processes(job) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p.pid for p in job_processes(job)] == [marked.pid]
        assert reap(job) == 1
        marked.wait(timeout=10)  # (psutil reaped it already: its code reads 0 here)
        assert other.poll() is None
        assert job_processes(job) == []
    finally:
        for process in (marked, other):
            process.kill()
            process.wait()


def test_one_multi_instance_job_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "port.lock"
    monkeypatch.setattr(local_job, "_PORT_LOCK", lock)
    with distributed_slot(1):  # one instance: no port, no lock
        pass
    with open(lock, "w") as holder:
        holder.write("pid 1234, 2026-01-01 00:00:00")
        holder.flush()
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = pytest.raises(
            SentiflowError, match=r"another multi-instance local training job is running \(pid 1234"
        )
        with refused, distributed_slot(2):
            pass


def test_a_second_run_of_a_running_job_is_refused(
    settings: Settings, channel_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """It would reap the first run's processes and reuse its folders."""
    job = tmp_path / "job"
    with job_lock(job):
        refused = pytest.raises(SentiflowError, match=r"in use by a run of the same job \(pid \d+")
        with refused:
            run_local_job(_request(settings), channel_dirs, job, tmp_path / "src.tar.gz")
    assert sorted(p.name for p in job.iterdir()) == [".lock"]  # nothing of the job was touched


def test_a_missing_channel_or_toolkit_is_refused_before_anything_is_written(
    settings: Settings, channel_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tmp_path / "job"
    with pytest.raises(SentiflowError, match="no local folder for channel"):
        run_local_job(_request(settings), {"train": channel_dirs["train"]}, job, tmp_path / "src.tar.gz")
    channels = {**channel_dirs, "validation": tmp_path / "nowhere"}
    with pytest.raises(SentiflowError, match="channel.*validation"):
        run_local_job(_request(settings), channels, job, tmp_path / "src.tar.gz")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    with pytest.raises(SentiflowError, match="sagemaker-training==5.1.4"):
        toolkit_entry()
    with pytest.raises(SentiflowError, match="training toolkit is not installed"):
        run_local_job(_request(settings), channel_dirs, job, tmp_path / "src.tar.gz")
    assert not job.exists()


@pytest.mark.e2e  # runs the SageMaker training toolkit
@pytest.mark.timeout(300)
def test_max_runtime_stops_the_job_and_leaves_nothing_running(
    settings: Settings, channel_dirs: dict[str, Path], tmp_path: Path
) -> None:
    request = _request(settings, epochs=100_000, patience=100_000)
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 12}
    job = tmp_path / "job"
    tarball = build_source_tarball(tmp_path / "sourcedir.tar.gz")
    lines: list[str] = []
    outcome = run_local_job(request, channel_dirs, job, tarball, log=lines.append)
    assert outcome.status == "Stopped" and outcome.secondary_status == "MaxRuntimeExceeded"
    assert outcome.failure_reason.startswith("MaxRuntimeExceeded") and not outcome.interrupted
    assert 12 <= outcome.seconds < 60
    assert job_processes(job) == []
    assert any("sagemaker-training-toolkit" in line for line in lines)
    assert (job / "logs" / "algo-1.log").read_text().count("sagemaker-training-toolkit") >= 3


@pytest.mark.e2e  # runs the SageMaker training toolkit
@pytest.mark.timeout(300)
def test_an_interrupt_stops_every_process_of_the_job(
    settings: Settings, channel_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Ctrl-C or a cancelled flow run while the script trains: nothing of the job keeps running."""
    job = tmp_path / "job"
    tarball = build_source_tarball(tmp_path / "sourcedir.tar.gz")
    seen: list[int] = []

    def interrupt_once_training(line: str) -> None:
        if line.startswith("training "):  # "training nb-lstm on …": the script is in its training loop
            seen.extend(p.pid for p in job_processes(job))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local_job(_request(settings, epochs=100_000, patience=100_000), channel_dirs, job, tarball,
                      log=interrupt_once_training)  # fmt: skip
    assert len(seen) >= 2  # the toolkit and the script were running
    assert job_processes(job) == []


@pytest.mark.e2e  # runs the SageMaker training toolkit and a one-epoch training
@pytest.mark.timeout(300)
def test_an_isolated_vendored_job_installs_from_its_wheels_and_vendors_them_into_the_model(
    settings: Settings, channel_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SENTIFLOW_AWS_NETWORK_ISOLATION's request and bundle through the real toolkit, with no package index: the
    toolkit pip-installs the bundle's requirements (--no-index, hashes), the script trains, and the model it writes
    carries code/wheels/ with a requirements.txt that installs only from them."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens: no index reachable
    request = _request(settings.with_overrides(aws_network_isolation=True))
    assert request["EnableNetworkIsolation"] is True
    code = tmp_path / "code-channel"
    tarball = build_source_tarball(code / "sourcedir.tar.gz", vendored=True)
    lines: list[str] = []
    outcome = run_local_job(request, {**channel_dirs, "code": code}, tmp_path / "job", tarball, log=lines.append)
    assert outcome.status == "Completed", outcome.failure_reason
    log = "\n".join(lines)
    assert "Installing dependencies from requirements.txt" in log, log[:3000]
    # pip found the bundle's wheels where the container would (relative to the requirements file, with no index);
    # this venv already has the pinned versions, so it installs nothing (tests/model/test_requirements.py installs
    # the same wheels into a fresh venv)
    assert re.search(r"Looking in links: .*/code/model/wheels", log) and "beautifulsoup4==4" in log, log[:3000]
    shipped = outcome.model_dir / "code"
    bundled = sorted(path.name for path in training.MODEL_WHEELS_DIR.glob("*.whl"))
    assert sorted(path.name for path in (shipped / "wheels").iterdir()) == bundled
    assert (shipped / "requirements.txt").read_text().splitlines()[1:3] == ["--no-index", "--find-links wheels"]
