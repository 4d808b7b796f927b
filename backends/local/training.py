"""Local training: ``model/train.py`` as a subprocess under exactly SageMaker's script-mode contract.

A job runs in ``<home>/jobs/<job_name>/``, a folder laid out like ``/opt/ml``::

    input/data/<channel>/   copies of the channel folders from the artifact store
    model/                  SM_MODEL_DIR  → packed into model.tar.gz
    output/                 SM_OUTPUT_DATA_DIR (output/data), model.tar.gz, train.log
    checkpoints/            kept between runs of the same job name: a rerun resumes from the last epoch
    job.json                name, hyperparameters, metrics, duration, artifact URI

Hyperparameters become ``--name value`` flags as SageMaker passes them; the script's lines stream to ``log``.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backends.base import ArtifactStore, LogLine, TrainingResult, TrainingSpec
from core.config import Settings
from core.errors import ConfigError, SentiflowError
from core.io import atomic_write_json, local_path, read_json
from model.artifact import pack_model_dir
from model.train import EPOCH_LINE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = PROJECT_ROOT / "model" / "train.py"
TAIL_LINES = 20


def hyperparameter_flags(hyperparameters: dict[str, Any]) -> list[str]:
    """``{"hidden_dim": 128, "shuffle": True}`` gives ``--hidden-dim 128 --shuffle true``."""
    flags: list[str] = []
    for name, value in sorted(hyperparameters.items()):
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags += [f"--{name.replace('_', '-')}", text]
    return flags


def _channel_dir(uri: str) -> Path:
    """The local folder behind a channel URI (``file://`` or a plain path)."""
    path = local_path(uri)
    if path is None:
        raise ConfigError(f"channel URI {uri!r} is not local (file://); the local backend trains on local channels")
    if not path.is_dir():
        raise SentiflowError(f"channel folder {path} (from {uri}) does not exist; rerun `sentiflow data prepare`")
    return path


class LocalTrainer:
    """``backends.base.Trainer`` running the SageMaker training script in a local ``/opt/ml``-like folder."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    def job_dir(self, job_name: str) -> Path:
        return self.settings.home / "jobs" / job_name

    def train(self, spec: TrainingSpec, log: LogLine) -> TrainingResult:
        started = time.perf_counter()
        job = self.job_dir(spec.job_name)
        self._stage(job, spec.channels)
        log(f"training job {spec.job_name} in {job}")
        self._run(job, spec, log)

        metrics = read_json(job / "model" / "metrics.json")
        tar_path = pack_model_dir(job / "model", job / "output" / "model.tar.gz")
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

    def _stage(self, job: Path, channels: dict[str, str]) -> None:
        """Fresh input/, model/ and output/ folders; checkpoints/ stays so a rerun resumes."""
        sources = {name: _channel_dir(uri) for name, uri in channels.items()}
        for name in ("input", "model", "output"):
            shutil.rmtree(job / name, ignore_errors=True)
        for name, source in sources.items():
            shutil.copytree(source, job / "input" / "data" / name)
        for name in ("model", "output/data", "checkpoints"):
            (job / name).mkdir(parents=True, exist_ok=True)

    def _environment(self, job: Path, spec: TrainingSpec) -> dict[str, str]:
        env = {
            **os.environ,
            "SM_MODEL_DIR": str(job / "model"),
            "SM_OUTPUT_DATA_DIR": str(job / "output" / "data"),
            "SM_CHECKPOINT_DIR": str(job / "checkpoints"),
            "SM_NUM_GPUS": "0",
            "SM_HOSTS": '["algo-1"]',
            "SM_CURRENT_HOST": "algo-1",
            "SM_CHANNELS": str(sorted(spec.channels)).replace("'", '"'),
            "TRAINING_JOB_NAME": spec.job_name,
            "PYTHONUNBUFFERED": "1",
        }
        for name in spec.channels:
            env[f"SM_CHANNEL_{name.upper()}"] = str(job / "input" / "data" / name)
        return env

    def _run(self, job: Path, spec: TrainingSpec, log: LogLine) -> None:
        command = [sys.executable, str(TRAIN_SCRIPT), *hyperparameter_flags(spec.hyperparameters)]
        epochs = spec.hyperparameters.get("epochs", "?")
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        log_path = job / "output" / "train.log"
        with open(log_path, "w", encoding="utf-8") as log_file:
            process = subprocess.Popen(
                command,
                cwd=job,
                env=self._environment(job, spec),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            assert process.stdout is not None
            try:
                for raw in process.stdout:
                    line = raw.rstrip("\n")
                    log_file.write(raw)
                    tail.append(line)
                    match = EPOCH_LINE.match(line)
                    log(f"epoch {match['epoch']}/{epochs}: {line}" if match else line)
                code = process.wait()
            except BaseException:
                process.kill()
                process.wait()
                raise
        if code != 0:
            lines = "\n".join(tail)
            raise SentiflowError(
                f"training job {spec.job_name} failed (exit code {code}); full log {log_path}; last lines:\n{lines}"
            )
