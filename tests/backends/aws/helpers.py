"""Small fakes for the aws backend unit tests (the e2e test uses the real players in moto_world)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from tests.fixtures.moto_world import MotoWorld, TrainingFailed

METRICS = {"val_accuracy": 0.88, "val_loss": 0.3, "history": [{"epoch": 1, "val_accuracy": 0.88}]}
LOG_LINES = ["epoch=1 train_loss=0.4000 val_loss=0.3000 val_accuracy=0.8800 epoch_s=1.0"]


def fake_model_dir(folder: Path, with_code: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.pth", "model_info.json", "word_dict.json", "preprocessing.json"):
        (folder / name).write_text("{}")
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    if with_code:
        (folder / "code").mkdir(exist_ok=True)
        (folder / "code" / "inference.py").write_text("# entry\n")
        (folder / "code" / "requirements.txt").write_text("nltk\n")
    return folder


def fake_model_tar(with_code: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        names = ["model.pth", "model_info.json", "word_dict.json", "preprocessing.json", "metrics.json"]
        if with_code:
            names += ["code/inference.py", "code/requirements.txt"]
        for name in names:
            data = json.dumps(METRICS).encode() if name == "metrics.json" else b"{}"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fake_training(world: MotoWorld, job: dict[str, Any], folder: Path) -> tuple[Path, list[str]]:
    world.seen_training = job  # type: ignore[attr-defined]
    return fake_model_dir(folder / "model"), list(LOG_LINES)


def failing_training(world: MotoWorld, job: dict[str, Any], folder: Path) -> tuple[Path, list[str]]:
    raise TrainingFailed("AlgorithmError: ExitCode 2: error: bad hyperparameters", ["error: bad hyperparameters"])


def fake_transform(world: MotoWorld, job: dict[str, Any], model: dict[str, Any]) -> None:
    world.seen_transform = (job, model)  # type: ignore[attr-defined]
    source = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    rows = world.read_text(source).splitlines()
    out = "".join("positive,0.9\n" for _ in rows)
    world.put_bytes(
        f"{job['TransformOutput']['S3OutputPath'].rstrip('/')}/{source.rsplit('/', 1)[-1]}.out", out.encode()
    )
