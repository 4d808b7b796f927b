"""The moto world's real players: model/train.py trains on S3, model.inference scores the test set.

This is what the e2e test relies on to assert real accuracy figures with ``--backend aws``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from backends.base import TrainingSpec, get_backend
from core.config import Settings
from tests.fixtures.moto_world import MotoWorld
from tests.fixtures.synthetic import synthetic_review

pytestmark = pytest.mark.e2e


def write_channels(root: Path, per_class: int = 60, vocab_size: int = 60, max_len: int = 80) -> Path:
    from model import preprocessing
    from model.preprocessing import PreprocessingConfig, Preprocessor

    rng = random.Random(3)

    def split(n: int) -> tuple[list[list[str]], np.ndarray]:
        labels = np.array([i % 2 for i in range(2 * n)])
        reviews = [synthetic_review(rng, bool(label)) for label in labels]
        return [preprocessing.review_to_words(r) for r in reviews], labels

    train_tokens, train_labels = split(per_class)
    test_tokens, test_labels = split(per_class // 2)
    words = preprocessing.build_vocabulary(train_tokens, vocab_size)
    config = PreprocessingConfig(vocab_size=vocab_size, max_len=max_len)
    train_rows = preprocessing.encode_many(train_tokens, words, max_len)
    test_rows = preprocessing.encode_many(test_tokens, words, max_len)
    for name in ("train", "validation", "test"):
        (root / name).mkdir(parents=True)
    Preprocessor(words, config).save(root / "train")

    def write(path: Path, rows: np.ndarray) -> None:
        np.savetxt(path, rows, fmt="%d", delimiter=",")

    cut = len(train_rows) * 4 // 5
    write(root / "train" / "train.csv", np.column_stack([train_labels[:cut], train_rows[:cut]]))
    write(root / "validation" / "validation.csv", np.column_stack([train_labels[cut:], train_rows[cut:]]))
    write(root / "test" / "test_features.csv", test_rows)
    write(root / "test" / "test_labels.csv", test_labels[:, None])
    return root


def test_train_deploy_transform_with_the_real_code(
    aws_settings: Settings, moto_world: MotoWorld, tmp_path: Path
) -> None:
    backend = get_backend(aws_settings)
    channels = write_channels(tmp_path / "channels")
    for path in sorted(p for p in channels.rglob("*") if p.is_file()):
        backend.store.put_file(path, f"runs/e2e/channels/{path.relative_to(channels).as_posix()}")
    spec = TrainingSpec(
        job_name="sentiflow-e2e-train",
        hyperparameters={"epochs": 3, "hidden-dim": 16, "embedding-dim": 16, "batch-size": 16},
        channels={c: backend.store.uri(f"runs/e2e/channels/{c}") for c in ("train", "validation")},
        output_prefix="runs/e2e/training",
        tags={"sentiflow:run-id": "e2e"},
    )
    lines: list[str] = []
    result = backend.trainer.train(spec, lines.append)
    assert any(line.startswith("epoch=1 ") for line in lines), lines[-5:]
    assert result.metrics["sagemaker"]["training_job_arn"].endswith("/sentiflow-e2e-train")

    out = backend.transformer.transform(
        result.model_uri, backend.store.uri("runs/e2e/channels/test"), "runs/e2e/transform", print
    )
    scored = moto_world.read_text(f"{out}/test_features.csv.out").splitlines()
    labels = (channels / "test" / "test_labels.csv").read_text().split()
    assert len(scored) == len(labels)
    predicted = [1 if line.split(",")[0] == "positive" else 0 for line in scored]
    accuracy = float(np.mean([p == int(t) for p, t in zip(predicted, labels, strict=True)]))
    assert accuracy >= 0.7, accuracy

    info = backend.endpoints.deploy("sentiflow-e2e", result.model_uri, 1, print)
    assert info.status == "InService" and info.model_uri == result.model_uri  # code/ already in the artifact


def test_the_uploaded_bundle_runs_and_a_script_error_is_the_failure_reason(
    aws_settings: Settings, moto_world: MotoWorld, tmp_path: Path
) -> None:
    """The player runs the request as sent through the SageMaker training toolkit, from the uploaded
    ``sourcedir.tar.gz``; the script's own one-line error is what DescribeTrainingJob reports as FailureReason."""
    from core.errors import SentiflowError

    backend = get_backend(aws_settings)
    channels = write_channels(tmp_path / "channels", per_class=20)
    (channels / "validation" / "validation.csv").write_text("1,2,3\n")
    for path in sorted(p for p in channels.rglob("*") if p.is_file()):
        backend.store.put_file(path, f"runs/bad/channels/{path.relative_to(channels).as_posix()}")
    spec = TrainingSpec(
        job_name="sentiflow-bad-train",
        hyperparameters={"epochs": 1, "hidden_dim": 8},
        channels={c: backend.store.uri(f"runs/bad/channels/{c}") for c in ("train", "validation")},
        output_prefix="runs/bad/training",
    )
    lines: list[str] = []
    with pytest.raises(SentiflowError) as caught:
        backend.trainer.train(spec, lines.append)
    reason = moto_world.client("sagemaker").describe_training_job(TrainingJobName="sentiflow-bad-train")[
        "FailureReason"
    ]
    assert reason.startswith("channel 'validation': ") and "has shape (1, 3)" in reason and "\n" not in reason
    assert f"failed: {reason}; logs: CloudWatch" in str(caught.value)
    assert any("Reporting training FAILURE" in line for line in lines)  # the toolkit's lines, via CloudWatch
    code = moto_world.work_dir / "sentiflow-bad-train" / "job" / "algo-1" / "code"
    assert (code / "model" / "train.py").is_file() and (code / "requirements.txt").is_file()  # the bundle, unpacked
